/**
 * Child workflows on MemoryStore with TestClock: `Workflow.child` starts another workflow
 * idempotently (ID `<parent ID>/<step key>`, also across crashes of the parent), the parent waits
 * without holding a worker slot and is woken by the child's final commit, the child's outcome is
 * journaled (typed success, its declared error, or `ChildWorkflowFailed`), and cancelling or timing
 * out a parent cancels its unfinished children.
 */
import { assert, describe, it } from "@effect/vitest"
import {
  MemoryStore,
  Step,
  Workflow,
  WorkflowClient,
  WorkflowConfig,
  WorkflowError,
  WorkflowStore
} from "@memento/workflow"
import { Effect, Layer, Schema, TestClock } from "effect"
import type { CrashPoint } from "./utils.js"
import {
  awaitStatus,
  crashes,
  expireLease,
  failureOf,
  Recorder,
  resultOf,
  settings,
  successOf,
  testEnv,
  workerLayer
} from "./utils.js"

class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", { reason: Schema.String }) {}

const minute = 60_000
const hour = 60 * minute

/** For tests that move the clock by minutes: wake-ups come from store events and the workers' timers. */
const slow = { pollMs: 10 * minute, heartbeatMs: 10 * minute, leaseMs: 30 * minute, resultPollMs: 10 * minute }

/** The parent: reserves stock (compensated by a release), pays through a child run, ships. */
const makeWorkflows = (recorder: Recorder, options?: { readonly childSleeps?: boolean }) => {
  const Payment = Workflow.make({
    name: "child-payment",
    payload: Schema.Struct({ order: Schema.String, amount: Schema.Number }),
    success: Schema.Struct({ chargeId: Schema.String }),
    error: PaymentDeclined
  })
  const PaymentLive = Payment.implement(({ amount, order }) =>
    Effect.gen(function*() {
      if (options?.childSleeps === true) yield* Workflow.sleep("settle", "1 minute")
      const chargeId = yield* Step.run(
        "charge",
        {
          success: Schema.String,
          error: PaymentDeclined,
          retryOn: () => false,
          compensate: (chargeId) => recorder.record("refund", chargeId)
        },
        Effect.zipRight(
          recorder.record("charge", amount),
          amount > 100 ? Effect.fail(new PaymentDeclined({ reason: "over limit" })) : Effect.succeed(`ch-${order}`)
        )
      )
      if (amount === 13) return yield* Effect.die("unlucky amount") // a bug: the child is parked
      if (amount === 42) yield* Effect.orDie(Workflow.awaitSignal("confirm", Schema.Boolean)) // waits for an operator
      return { chargeId }
    })
  )
  const Order = Workflow.make({
    name: "child-order",
    payload: Schema.Number,
    success: Schema.String,
    error: Schema.Union(PaymentDeclined, WorkflowError.ChildWorkflowFailed, WorkflowError.SignalTimeout),
    idempotencyKey: (amount) => `order-${amount}`
  })
  const OrderLive = Order.implement((amount) =>
    Effect.gen(function*() {
      const id = yield* Workflow.workflowId
      yield* Step.run("reserve", {
        success: Schema.Void,
        compensate: () => recorder.record("release")
      }, recorder.record("reserve"))
      const { chargeId } = yield* Workflow.child(Payment, { order: id, amount }, { name: "payment" })
      yield* Step.run("ship", recorder.record("ship", chargeId))
      return chargeId
    })
  )
  return { Order, OrderLive, Payment, PaymentLive }
}

describe("Workflow.child", () => {
  it.effect("starts the child with a derived ID and parent, waits without a slot, and returns its typed result", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    // One worker, one slot: if the waiting parent held it, the child could never run.
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 20)
      assert.strictEqual(successOf(yield* resultOf(Order, id)), "ch-order-20")
      const parent = yield* client.inspect(id)
      assert.strictEqual(parent.run.status, "succeeded")
      assert.deepStrictEqual(parent.children.map((child) => [child.id, child.workflow, child.status, child.parentId]), [
        ["order-20/payment", "child-payment", "succeeded", "order-20"]
      ])
      const entry = parent.entries.find((e) => e.key === "payment")!
      assert.strictEqual(entry.kind, "child")
      assert.strictEqual(entry.status, "succeeded")
      assert.deepStrictEqual(JSON.parse(entry.output!), { chargeId: "ch-order-20" })
      assert.deepStrictEqual(JSON.parse(entry.meta!), { childId: "order-20/payment", workflow: "child-payment" })
      assert.deepStrictEqual(
        parent.attempts.filter((a) => a.key === "payment").map((a) => a.outcome),
        ["succeeded"]
      )
      const child = yield* client.get("order-20/payment")
      assert.strictEqual(child.payload, JSON.stringify({ order: "order-20", amount: 20 }))
      assert.deepStrictEqual(recorder.names(), ["reserve", "charge", "ship"])
    }).pipe(
      Effect.provide(
        testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive), concurrency: 1 })
      )
    )
  })

  it.effect("a signal under the engine's reserved @memento/ names is refused: it cannot fake a child's finish", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 42) // the child waits for an operator's "confirm"
      yield* awaitStatus(id, "waiting")
      const error = yield* Effect.flip(client.signal(id, "@memento/child-finished", "succeeded"))
      assert.strictEqual(error._tag, "InvalidPayload")
      assert.include(error.message, "reserved")
      const parent = yield* client.inspect(id)
      assert.strictEqual(parent.signals.length, 0)
      assert.strictEqual(parent.run.status, "waiting")
    }).pipe(
      Effect.provide(
        testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive), concurrency: 1 })
      )
    )
  })

  it.effect("the parent is `waiting` with no lease while the child runs on a worker the parent's worker does not know", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder, { childSleeps: true })
    const env = Layer.mergeAll(
      WorkflowClient.layer,
      workerLayer({ workflows: [Order], implementations: OrderLive, workerId: "orders", settings: slow }),
      workerLayer({ workflows: [Payment], implementations: PaymentLive, workerId: "payments", settings: slow })
    ).pipe(Layer.provideMerge(MemoryStore.layer), Layer.provideMerge(WorkflowConfig.layer({ ...settings, ...slow })))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 30)
      yield* awaitStatus("order-30/payment", "sleeping", { stepMs: 1_000 })
      const parent = yield* awaitStatus(id, "waiting")
      assert.isNull(parent.leaseOwner)
      assert.isNull(parent.runnableAt, "woken by the child, not by a timer")
      assert.strictEqual(successOf(yield* resultOf(Order, id, { stepMs: 5_000 })), "ch-order-30")
      assert.isAtMost((yield* client.get(id)).completedAt!, minute + 5_000, "woken when the child finished")
      assert.deepStrictEqual(recorder.counts("reserve", "charge", "ship"), { reserve: 1, charge: 1, ship: 1 })
    }).pipe(Effect.provide(env))
  })

  it.effect("a child failing with its declared error fails the parent's child step with it; the parent compensates", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 500)
      const error = failureOf(yield* resultOf(Order, id))
      assert.instanceOf(error, PaymentDeclined)
      assert.strictEqual((error as PaymentDeclined).reason, "over limit")
      const { entries, run } = yield* client.inspect(id)
      assert.strictEqual(run.status, "compensated")
      assert.strictEqual((yield* client.get("order-500/payment")).status, "failed")
      const entry = entries.find((e) => e.key === "payment")!
      assert.strictEqual(entry.status, "failed")
      assert.deepStrictEqual(JSON.parse(entry.error!), { _tag: "PaymentDeclined", reason: "over limit" })
      assert.deepStrictEqual(recorder.counts("reserve", "charge", "ship", "release"), {
        reserve: 1,
        charge: 1,
        ship: 0,
        release: 1
      })
    }).pipe(
      Effect.provide(testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive) }))
    )
  })

  it.effect("a parked child fails the parent's child step with ChildWorkflowFailed naming its status and reason", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 13)
      const error = failureOf(yield* resultOf(Order, id))
      assert.instanceOf(error, WorkflowError.ChildWorkflowFailed)
      const failed = error as WorkflowError.ChildWorkflowFailed
      assert.deepStrictEqual([failed.workflowId, failed.workflow, failed.status], [
        "order-13/payment",
        "child-payment",
        "needs_attention"
      ])
      assert.include(failed.reason, "unlucky amount")
      assert.strictEqual((yield* client.get("order-13/payment")).status, "needs_attention")
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      assert.deepStrictEqual(recorder.counts("charge", "release", "ship"), { charge: 1, release: 1, ship: 0 })
    }).pipe(
      Effect.provide(testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive) }))
    )
  })

  it.effect("cancelling a waiting parent cancels its unfinished child; both compensate", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 42) // the child waits for a "confirm" signal
      yield* awaitStatus("order-42/payment", "waiting")
      yield* awaitStatus(id, "waiting")
      yield* client.cancel(id)
      const error = failureOf(yield* resultOf(Order, id))
      assert.instanceOf(error, WorkflowError.WorkflowCancelled)
      const child = yield* awaitStatus("order-42/payment", "cancelled")
      assert.isTrue(child.cancelRequested)
      assert.strictEqual((yield* client.inspect(id)).entries.find((e) => e.key === "payment")?.status, "started")
      assert.deepStrictEqual(recorder.counts("reserve", "charge", "refund", "release", "ship"), {
        reserve: 1,
        charge: 1,
        refund: 1,
        release: 1,
        ship: 0
      })
    }).pipe(
      Effect.provide(testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive) }))
    )
  })

  it.effect("a child cancelled by an operator fails the parent's child step with ChildWorkflowFailed", () => {
    const recorder = new Recorder()
    const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, 42)
      yield* awaitStatus("order-42/payment", "waiting")
      yield* client.cancel("order-42/payment")
      const error = failureOf(yield* resultOf(Order, id))
      assert.instanceOf(error, WorkflowError.ChildWorkflowFailed)
      assert.strictEqual((error as WorkflowError.ChildWorkflowFailed).status, "cancelled")
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      assert.deepStrictEqual(recorder.counts("refund", "release"), { refund: 1, release: 1 })
    }).pipe(
      Effect.provide(testEnv({ workflows: [Order, Payment], implementations: Layer.merge(OrderLive, PaymentLive) }))
    )
  })

  it.effect("a parent that times out while waiting cancels its child", () => {
    const recorder = new Recorder()
    const { Payment, PaymentLive } = makeWorkflows(recorder)
    const Bounded = Workflow.make({ name: "child-bounded", payload: Schema.Void, timeout: "1 hour" })
    const BoundedLive = Bounded.implement(() =>
      Effect.asVoid(Workflow.child(Payment, { order: "bounded", amount: 42 })).pipe(Effect.orDie)
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Bounded, undefined, { id: "bounded-1" })
      const parent = yield* awaitStatus(id, "waiting")
      assert.strictEqual(parent.runnableAt, parent.createdAt + hour, "woken at its deadline")
      const error = failureOf(yield* resultOf(Bounded, id, { stepMs: minute, maxMs: 2 * hour }))
      assert.instanceOf(error, WorkflowError.WorkflowTimeout)
      yield* awaitStatus("bounded-1/child-payment", "cancelled", { stepMs: minute })
      assert.strictEqual(recorder.count("refund"), 1)
    }).pipe(
      Effect.provide(
        testEnv({
          workflows: [Bounded, Payment],
          implementations: Layer.merge(BoundedLive, PaymentLive),
          settings: slow
        })
      )
    )
  })

  for (const point of ["before-step", "after-effect"] satisfies ReadonlyArray<CrashPoint>) {
    it.effect(`a crash of the parent at ${point} of the child step starts the child once`, () => {
      const recorder = new Recorder()
      const { Order, OrderLive, Payment, PaymentLive } = makeWorkflows(recorder)
      const crash = crashes({ point, key: "payment" })
      return Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const store = yield* WorkflowStore.WorkflowStore
        const { id } = yield* client.start(Order, 50)
        yield* TestClock.adjust(0)
        yield* TestClock.adjust(0)
        assert.deepStrictEqual(crash.fired, [`${point} payment`])
        yield* expireLease
        assert.strictEqual(successOf(yield* resultOf(Order, id)), "ch-order-50")
        const parent = yield* client.inspect(id)
        // recovered once; when the child was created only by the recovery, the parent waited for it once more
        assert.strictEqual(parent.run.epoch, point === "before-step" ? 3 : 2)
        assert.deepStrictEqual(parent.children.map((child) => child.id), ["order-50/payment"])
        const { runs } = yield* store.list({ workflow: "child-payment" })
        assert.strictEqual(runs.length, 1)
        assert.strictEqual(runs[0].epoch, 1, "the child was executed once")
        assert.deepStrictEqual(recorder.counts("reserve", "charge", "ship"), { reserve: 1, charge: 1, ship: 1 })
      }).pipe(
        Effect.provide(
          testEnv({
            workflows: [Order, Payment],
            implementations: Layer.merge(OrderLive, PaymentLive),
            hooks: crash.hooks
          })
        )
      )
    })
  }

  it.effect("children started by concurrent branches all start in the parent's first execution", () => {
    const recorder = new Recorder()
    const { Payment, PaymentLive } = makeWorkflows(recorder, { childSleeps: true })
    const FanOut = Workflow.make({ name: "child-fan-out", payload: Schema.Void, success: Schema.Array(Schema.String) })
    const FanOutLive = FanOut.implement(() =>
      Effect.forEach(
        [1, 2, 3],
        (n) =>
          Effect.map(
            Workflow.child(Payment, { order: `part-${n}`, amount: n }, { name: `pay-${n}` }),
            (receipt) => receipt.chargeId
          ),
        { concurrency: "unbounded" }
      ).pipe(Effect.orDie)
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(FanOut, undefined, { id: "fan-out" })
      const parent = yield* awaitStatus(id, "waiting")
      assert.strictEqual(parent.epoch, 1)
      const children = (yield* client.inspect(id)).children
      // each child sleeps a minute: started one per wake-up, they would take three
      assert.deepStrictEqual(children.map((child) => [child.id, child.createdAt]), [
        ["fan-out/pay-1", 0],
        ["fan-out/pay-2", 0],
        ["fan-out/pay-3", 0]
      ])
      assert.deepStrictEqual(
        successOf(yield* resultOf(FanOut, id, { stepMs: 10_000, maxMs: hour })),
        ["ch-part-1", "ch-part-2", "ch-part-3"]
      )
      assert.isBelow((yield* client.get(id)).completedAt!, 2 * minute)
      assert.strictEqual(recorder.count("charge"), 3)
    }).pipe(
      Effect.provide(
        testEnv({
          workflows: [FanOut, Payment],
          implementations: Layer.merge(FanOutLive, PaymentLive),
          settings: slow
        })
      )
    )
  })

  it.effect("a replay returns the journaled child result without touching the child", () => {
    const recorder = new Recorder()
    const { Payment, PaymentLive } = makeWorkflows(recorder)
    const Later = Workflow.make({ name: "child-later", payload: Schema.Void, success: Schema.String })
    const LaterLive = Later.implement(() =>
      Effect.gen(function*() {
        const { chargeId } = yield* Workflow.child(Payment, { order: "later", amount: 5 }).pipe(Effect.orDie)
        yield* Workflow.sleep("pause", "1 hour") // the body replays from the top when the run wakes
        return chargeId
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Later, undefined, { id: "later-1" })
      yield* awaitStatus(id, "sleeping")
      const childId = "later-1/child-payment"
      assert.strictEqual((yield* client.get(childId)).status, "succeeded")
      // the child run is gone: a replay that started it again would recreate it
      yield* TestClock.adjust(1)
      assert.strictEqual(yield* client.purge({ olderThan: 0, statuses: ["succeeded"] }), 1)
      assert.strictEqual(successOf(yield* resultOf(Later, id, { stepMs: minute, maxMs: 2 * hour })), "ch-later")
      const missing = yield* Effect.flip(client.get(childId))
      assert.instanceOf(missing, WorkflowError.RunNotFound)
      assert.strictEqual(recorder.count("charge"), 1)
      // executions: start and wait for the child, take its result and sleep, replay after the sleep
      assert.strictEqual((yield* client.get(id)).epoch, 3)
    }).pipe(
      Effect.provide(
        testEnv({
          workflows: [Later, Payment],
          implementations: Layer.merge(LaterLive, PaymentLive),
          settings: slow
        })
      )
    )
  })
})
