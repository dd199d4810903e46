/**
 * Guarantee 1: start is idempotent by workflow ID. Guarantee 10 (in part): oversized payloads fail
 * before any write.
 */
import { assert, describe, it } from "@effect/vitest"
import {
  MemoryStore,
  Metrics,
  Step,
  Workflow,
  WorkflowClient,
  WorkflowConfig,
  WorkflowError,
  WorkflowStore
} from "@memento/workflow"
import { Context, Effect, Fiber, Layer, Metric, Option, Schema } from "effect"
import {
  advanceUntil,
  failureOf,
  Recorder,
  resultOf,
  settings,
  settle,
  successOf,
  testEnv,
  workerLayer
} from "./utils.js"

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })

const setup = (overrides?: Partial<WorkflowConfig.Settings>) => {
  const recorder = new Recorder()
  const Checkout = Workflow.make({
    name: "checkout",
    payload: Order,
    success: Schema.String,
    idempotencyKey: (order) => order.orderId
  })
  const Refund = Workflow.make({ name: "refund", payload: Order, success: Schema.String })
  const implementations = Layer.mergeAll(
    Checkout.implement((order) =>
      Effect.gen(function*() {
        yield* recorder.record("checkout-body", order)
        return yield* Step.run(
          "charge",
          { success: Schema.String },
          Effect.as(recorder.record("charge", order), `charged ${order.amount}`)
        )
      })
    ),
    Refund.implement((order) => Effect.as(recorder.record("refund-body", order), "refunded"))
  )
  const env = testEnv({ workflows: [Checkout, Refund], implementations, settings: overrides })
  return { recorder, Checkout, Refund, env, implementations }
}

/** Runs `effect` while the test clock advances until it completes. */
const completing = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    yield* advanceUntil(Effect.map(Fiber.poll(fiber), Option.isSome), { what: "the effect to complete" })
    return yield* Fiber.join(fiber)
  })

describe("start (guarantee 1)", () => {
  it.scoped("50 concurrent starts of one workflow ID create one run and run the body once", () => {
    const { Checkout, env, recorder } = setup()
    return Effect.gen(function*() {
      const store = yield* WorkflowStore.WorkflowStore
      // Several clients (as in several processes) share one store.
      const clients = yield* Effect.all(Array.from({ length: 5 }, () => WorkflowClient.make))
      const order = { orderId: "order-1", amount: 42 }
      const handles = yield* Effect.all(
        Array.from({ length: 50 }, (_, i) => clients[i % clients.length].start(Checkout, order)),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(handles.length, 50)
      assert.strictEqual(handles.filter((handle) => handle.created).length, 1)
      assert.deepStrictEqual(new Set(handles.map((handle) => handle.id)), new Set(["order-1"]))

      const exit = yield* resultOf(Checkout, "order-1")
      assert.strictEqual(successOf(exit), "charged 42")
      yield* settle
      assert.strictEqual(recorder.count("checkout-body"), 1)
      assert.strictEqual(recorder.count("charge"), 1)
      const page = yield* store.list({})
      assert.strictEqual(page.runs.length, 1)
      assert.strictEqual(page.runs[0].status, "succeeded")
      assert.strictEqual(page.runs[0].epoch, 1)
    }).pipe(Effect.provide(env))
  })

  it.effect("starting an existing ID with an equal payload returns the existing run", () => {
    const { Checkout, env, recorder } = setup()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const order = { orderId: "order-2", amount: 7 }
      const first = yield* client.start(Checkout, order)
      assert.deepStrictEqual(first, { id: "order-2", workflow: "checkout", created: true })
      successOf(yield* resultOf(Checkout, first.id))
      const again = yield* client.start(Checkout, { amount: 7, orderId: "order-2" })
      assert.deepStrictEqual(again, { id: "order-2", workflow: "checkout", created: false })
      yield* settle
      assert.strictEqual(recorder.count("checkout-body"), 1)
      assert.strictEqual((yield* client.list()).runs.length, 1)
    }).pipe(Effect.provide(env))
  })

  it.effect("the same ID with a different payload fails with WorkflowIdConflict and runs nothing", () => {
    const { Checkout, env, recorder } = setup()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "order-3", amount: 1 })
      // Concurrently with the first start still pending, and again after it finished.
      const conflict = yield* Effect.flip(client.start(Checkout, { orderId: "order-3", amount: 2 }))
      assert.instanceOf(conflict, WorkflowError.WorkflowIdConflict)
      assert.strictEqual(conflict.workflowId, "order-3")
      assert.strictEqual(conflict.reason, "a different payload")
      successOf(yield* resultOf(Checkout, "order-3"))
      const late = yield* Effect.flip(client.start(Checkout, { orderId: "order-3", amount: 3 }))
      assert.instanceOf(late, WorkflowError.WorkflowIdConflict)
      yield* settle

      assert.strictEqual(recorder.count("checkout-body"), 1)
      assert.deepStrictEqual(recorder.data("charge"), [{ orderId: "order-3", amount: 1 }])
      const run = yield* client.get("order-3")
      assert.deepStrictEqual(JSON.parse(run.payload), { orderId: "order-3", amount: 1 })
      assert.strictEqual((yield* client.list()).runs.length, 1)
    }).pipe(Effect.provide(env))
  })

  it.effect("the same ID for another workflow fails with WorkflowIdConflict and runs nothing", () => {
    const { Checkout, Refund, env, recorder } = setup()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const order = { orderId: "order-4", amount: 5 }
      yield* client.start(Checkout, order)
      const conflict = yield* Effect.flip(client.start(Refund, order, { id: "order-4" }))
      assert.instanceOf(conflict, WorkflowError.WorkflowIdConflict)
      assert.strictEqual(conflict.workflow, "refund")
      assert.strictEqual(conflict.existingWorkflow, "checkout")
      assert.strictEqual(conflict.reason, "another workflow")
      successOf(yield* resultOf(Checkout, "order-4"))
      yield* settle
      assert.strictEqual(recorder.count("refund-body"), 0)
      assert.strictEqual(recorder.count("checkout-body"), 1)
      assert.strictEqual((yield* client.get("order-4")).workflow, "checkout")
    }).pipe(Effect.provide(env))
  })

  // `execute` hands the run to a worker of its process before it is stored: the run's first commit
  // creates it, and no step runs unless that commit stored it.
  it.scoped("50 concurrent executes of one ID from 5 processes create one run and run its step once", () => {
    const { Checkout, implementations, recorder } = setup()
    return Effect.gen(function*() {
      const store = yield* MemoryStore.make
      // A process: its own view of the one store (in-process hand-overs are per store object), a
      // worker and a client.
      const processes = yield* Effect.forEach(Array.from({ length: 5 }, (_, i) => i), (i) =>
        Effect.gen(function*() {
          const view: WorkflowStore.WorkflowStore["Type"] = { ...store }
          const context = yield* Layer.build(
            Layer.mergeAll(
              WorkflowClient.layer,
              workerLayer({ workflows: [Checkout], implementations, workerId: `worker-${i}` })
            ).pipe(Layer.provideMerge(Layer.succeed(WorkflowStore.WorkflowStore, view)))
          )
          return Context.get(context, WorkflowClient.WorkflowClient)
        }))
      yield* settle
      const order = { orderId: "order-9", amount: 9 }
      const fibers = yield* Effect.forEach(
        Array.from({ length: 50 }, (_, i) => i),
        (i) => Effect.fork(processes[i % processes.length].execute(Checkout, order))
      )
      yield* advanceUntil(Effect.map(Effect.forEach(fibers, Fiber.poll), (polls) => polls.every(Option.isSome)), {
        what: "every execute to return"
      })
      for (const fiber of fibers) assert.strictEqual(yield* Fiber.join(fiber), "charged 9")
      assert.strictEqual(recorder.count("charge"), 1)
      const page = yield* store.list({})
      assert.strictEqual(page.runs.length, 1)
      assert.strictEqual(page.runs[0].status, "succeeded")
      assert.strictEqual(page.runs[0].epoch, 1)
      const details = yield* store.inspect("order-9")
      assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), ["charge:succeeded"])
      assert.deepStrictEqual(details.attempts.map((a) => `${a.key}#${a.attempt}:${a.outcome}`), ["charge#1:succeeded"])
      // the executes whose first commit found the run created by another are no lost leases
      const lost = yield* Metric.value(Metric.tagged(Metrics.leasesLost, "workflow", "checkout"))
      assert.strictEqual(lost.count, 0)
    }).pipe(Effect.provide(WorkflowConfig.layer(settings)))
  })

  it.effect("execute of an existing ID: the stored result, or WorkflowIdConflict; no step runs", () => {
    const { Checkout, Refund, env, recorder } = setup()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const store = yield* WorkflowStore.WorkflowStore
      const order = { orderId: "order-5", amount: 5 }
      assert.strictEqual(successOf(yield* Effect.exit(completing(client.execute(Checkout, order)))), "charged 5")
      assert.strictEqual(recorder.count("charge"), 1)
      // again: the finished run's result, without running its step
      assert.strictEqual(successOf(yield* Effect.exit(completing(client.execute(Checkout, order)))), "charged 5")
      const payload = failureOf(
        yield* Effect.exit(completing(client.execute(Checkout, { orderId: "order-5", amount: 6 })))
      )
      assert.instanceOf(payload, WorkflowError.WorkflowIdConflict)
      assert.strictEqual(payload.reason, "a different payload")
      const workflow = failureOf(yield* Effect.exit(completing(client.execute(Refund, order, { id: "order-5" }))))
      assert.instanceOf(workflow, WorkflowError.WorkflowIdConflict)
      assert.strictEqual(workflow.reason, "another workflow")
      assert.strictEqual(recorder.count("charge"), 1, "no step ran again")
      const details = yield* store.inspect("order-5")
      assert.deepStrictEqual(JSON.parse(details.run.payload), order)
      assert.strictEqual(details.run.workflow, "checkout")
      assert.deepStrictEqual(details.attempts.map((a) => `${a.key}#${a.attempt}:${a.outcome}`), ["charge#1:succeeded"])
      // a run still pending (no worker here executes it): the same, while it waits
      const { run: pending } = yield* store.create({ id: "order-6", workflow: "elsewhere", payload: "{}" })
      const elsewhere = failureOf(
        yield* Effect.exit(completing(client.execute(Checkout, { orderId: "order-6", amount: 1 })))
      )
      assert.instanceOf(elsewhere, WorkflowError.WorkflowIdConflict)
      const untouched = yield* store.inspect("order-6")
      assert.deepStrictEqual(untouched.run, pending)
      assert.deepStrictEqual(untouched.entries, [])
      assert.strictEqual(recorder.count("charge"), 1)
    }).pipe(Effect.provide(env))
  })

  it.effect("an oversized payload fails with PayloadTooLarge before any write", () => {
    const { Checkout, env, recorder } = setup({ maxValueBytes: 256 })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const order = { orderId: "x".repeat(300), amount: 1 }
      const error = yield* Effect.flip(client.start(Checkout, order))
      assert.instanceOf(error, WorkflowError.PayloadTooLarge)
      assert.strictEqual(error.limit, 256)
      assert.strictEqual(error.bytes, JSON.stringify(order).length)
      yield* settle
      assert.strictEqual((yield* client.list()).runs.length, 0)
      assert.instanceOf(yield* Effect.flip(client.get(order.orderId)), WorkflowError.RunNotFound)
      assert.strictEqual(recorder.count("checkout-body"), 0)
      // A payload under the limit still goes through.
      const small = yield* client.start(Checkout, { orderId: "small", amount: 1 })
      assert.strictEqual(successOf(yield* resultOf(Checkout, small.id)), "charged 1")
      assert.strictEqual(recorder.count("checkout-body"), 1)
    }).pipe(Effect.provide(env))
  })
})
