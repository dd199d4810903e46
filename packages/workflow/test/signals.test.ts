/**
 * Guarantee 8 on MemoryStore with TestClock: durable sleep frees the worker and wakes on time,
 * signals are received whether sent before or after the wait, a repeated signalId is ignored,
 * timeouts are typed, and cancelling a suspended run compensates it.
 */
import { assert, describe, it } from "@effect/vitest"
import { Step, Workflow, WorkflowClient, WorkflowError } from "@memento/workflow"
import { Clock, Deferred, Effect, Exit, Layer, Schema, Scope, TestClock } from "effect"
import {
  awaitStatus,
  failureOf,
  Recorder,
  resultOf,
  settle,
  sharedStore,
  startWorker,
  successOf,
  testEnv
} from "./utils.js"

const hour = 3_600_000

/**
 * These tests move the clock by hours and days: the worker's safety-net polling, heartbeats and
 * leases are stretched accordingly (wake-ups come from the store's events and the worker's timers).
 */
const slow = { pollMs: 600_000, heartbeatMs: 600_000, leaseMs: 1_800_000, resultPollMs: 600_000 }

describe("durable sleep (guarantee 8)", () => {
  const sleeper = (recorder: Recorder) => {
    const Sleeper = Workflow.make({ name: "sleeper", payload: Schema.Void, success: Schema.Number })
    const implementations = Sleeper.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("before", recorder.record("before"))
        yield* Workflow.sleep("nap", "1 hour")
        return yield* Step.run(
          "after",
          { success: Schema.Number },
          Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.as(recorder.record("after", now), now))
        )
      })
    )
    return { Sleeper, implementations }
  }

  it.effect("Workflow.sleep frees the worker and wakes the run on time", () => {
    const recorder = new Recorder()
    const { implementations, Sleeper } = sleeper(recorder)
    const Quick = Workflow.make({ name: "quick", payload: Schema.Number, success: Schema.Number })
    const quick = Quick.implement((n) =>
      Step.run("ping", { success: Schema.Number }, Effect.as(recorder.record("ping", n), n + 1))
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Sleeper, undefined, { id: "sleeper-1" })
      const sleeping = yield* awaitStatus(id, "sleeping")
      assert.strictEqual(sleeping.runnableAt, hour)
      assert.isNull(sleeping.leaseOwner, "a sleeping run holds no lease")
      const nap = (yield* client.inspect(id)).entries.find((e) => e.key === "nap")!
      assert.strictEqual(nap.kind, "sleep")
      assert.strictEqual(JSON.parse(nap.meta!).wakeAt, hour)

      // The only slot of the worker is free: another workflow runs meanwhile.
      const other = yield* client.start(Quick, 1, { id: "quick-1" })
      assert.strictEqual(successOf(yield* resultOf(Quick, other.id)), 2)
      assert.isBelow(yield* Clock.currentTimeMillis, hour)

      yield* TestClock.adjust(hour - 1_000 - (yield* Clock.currentTimeMillis))
      assert.strictEqual((yield* client.get(id)).status, "sleeping")
      assert.strictEqual(recorder.count("after"), 0)

      const wokeAt = successOf(yield* resultOf(Sleeper, id))
      assert.isAtLeast(wokeAt, hour)
      assert.isBelow(wokeAt, hour + 2_000)
      assert.deepStrictEqual(recorder.counts("before", "after", "ping"), { before: 1, after: 1, ping: 1 })
      const entries = (yield* client.inspect(id)).entries
      assert.deepStrictEqual(entries.map((e) => [e.key, e.status]), [
        ["before", "succeeded"],
        ["nap", "succeeded"],
        ["after", "succeeded"]
      ])
    }).pipe(
      Effect.provide(
        testEnv({
          workflows: [Sleeper, Quick],
          implementations: Layer.merge(implementations, quick),
          concurrency: 1,
          settings: slow
        })
      )
    )
  })

  it.scoped("a sleeping run wakes on time after its worker was restarted", () => {
    const recorder = new Recorder()
    const { implementations, Sleeper } = sleeper(recorder)
    return Effect.gen(function*() {
      const { client, provide } = yield* sharedStore
      const first = yield* provide(startWorker({ workflows: [Sleeper], implementations, settings: slow }))
      const { id } = yield* client.start(Sleeper, undefined, { id: "sleeper-2" })
      yield* provide(awaitStatus(id, "sleeping"))
      yield* Scope.close(first, Exit.void)
      yield* TestClock.adjust(hour / 2)

      const second = yield* provide(startWorker({ workflows: [Sleeper], implementations, settings: slow }))
      assert.strictEqual((yield* client.get(id)).status, "sleeping")
      yield* TestClock.adjust(hour / 2 - 1_000)
      assert.strictEqual(recorder.count("after"), 0)
      // The new worker has no timer for this run: it finds it due at its next poll.
      const wokeAt = successOf(yield* provide(resultOf(Sleeper, id, { stepMs: 10_000, maxMs: 2 * slow.pollMs })))
      assert.isAtLeast(wokeAt, hour)
      assert.isAtMost(wokeAt, hour + slow.pollMs * 1.25 + 10_000)
      assert.deepStrictEqual(recorder.counts("before", "after"), { before: 1, after: 1 })
      yield* Scope.close(second, Exit.void)
    })
  })
})

describe("signals (guarantee 8)", () => {
  const Review = Workflow.make({
    name: "review",
    payload: Schema.Void,
    success: Schema.Tuple(Schema.Boolean, Schema.String),
    error: WorkflowError.SignalTimeout
  })
  const Payments = Workflow.make({
    name: "payments",
    payload: Schema.Void,
    success: Schema.Array(Schema.Number),
    error: WorkflowError.SignalTimeout
  })

  it.effect("awaitSignal receives a signal sent before it waits and one sent after", () => {
    const recorder = new Recorder()
    const implementations = Review.implement(() =>
      Effect.gen(function*() {
        yield* Workflow.sleep("pause", "1 minute")
        const approved = yield* Workflow.awaitSignal("approval", Schema.Boolean)
        yield* recorder.record("approval", approved)
        const comment = yield* Workflow.awaitSignal("comment", Schema.String)
        yield* recorder.record("comment", comment)
        return [approved, comment] as const
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Review, undefined, { id: "review-1" })
      yield* awaitStatus(id, "sleeping")
      // Before the run waits for it (the run is asleep).
      assert.deepStrictEqual(yield* client.signal(id, "approval", true, { signalId: "approval-1" }), {
        duplicate: false
      })
      yield* TestClock.adjust("1 minute")
      const waiting = yield* awaitStatus(id, "waiting")
      assert.isNull(waiting.runnableAt, "no timeout: only a signal wakes it")
      assert.isNull(waiting.leaseOwner)
      assert.deepStrictEqual(recorder.data("approval"), [true])
      assert.strictEqual(recorder.count("comment"), 0)

      // A value that does not decode is ignored; then one sent after the run started waiting.
      yield* client.signal(id, "comment", 42, { signalId: "comment-bad" })
      yield* settle
      assert.strictEqual((yield* client.get(id)).status, "waiting")
      yield* client.signal(id, "comment", "looks good", { signalId: "comment-1" })
      assert.deepStrictEqual(successOf(yield* resultOf(Review, id)), [true, "looks good"])
      // Received once, then replayed from the journal by the executions that the undecodable and
      // the good comment woke up.
      assert.deepStrictEqual(recorder.data("approval"), [true, true, true])
      const entries = (yield* client.inspect(id)).entries
      const approval = entries.find((e) => e.key === "approval")!
      assert.strictEqual(approval.kind, "signal")
      assert.strictEqual(JSON.parse(approval.output!), true)
      assert.strictEqual(JSON.parse(approval.meta!).signalId, "approval-1")
      assert.strictEqual(JSON.parse(entries.find((e) => e.key === "comment")!.meta!).signalId, "comment-1")
    }).pipe(Effect.provide(testEnv({ workflows: [Review], implementations, settings: slow })))
  })

  it.effect("a signal sent while the run is still executing the steps before the wait is not lost", () => {
    const recorder = new Recorder()
    return Effect.gen(function*() {
      const latch = yield* Deferred.make<void>()
      const implementations = Payments.implement(() =>
        Effect.gen(function*() {
          yield* Step.run("prepare", Effect.zipRight(recorder.record("prepare"), Deferred.await(latch)))
          return [yield* Workflow.awaitSignal("payment", Schema.Number)]
        })
      )
      return yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const { id } = yield* client.start(Payments, undefined, { id: "payments-2" })
        yield* settle
        assert.strictEqual(recorder.count("prepare"), 1)
        assert.strictEqual((yield* client.get(id)).status, "running")
        // The run loaded its signals before this one arrived, and is not waiting yet.
        assert.deepStrictEqual(yield* client.signal(id, "payment", 7, { signalId: "early" }), { duplicate: false })
        yield* Deferred.succeed(latch, undefined)
        const exit = yield* resultOf(Payments, id, { maxMs: 10_000 })
        assert.deepStrictEqual(successOf(exit), [7])
        assert.strictEqual(recorder.count("prepare"), 1)
      }).pipe(Effect.provide(testEnv({ workflows: [Payments], implementations, settings: slow })))
    })
  })

  it.effect("a repeated signalId is ignored (webhooks arrive more than once)", () => {
    const implementations = Payments.implement(() =>
      Effect.gen(function*() {
        const first = yield* Workflow.awaitSignal("payment", Schema.Number)
        const second = yield* Workflow.awaitSignal("payment", Schema.Number)
        return [first, second]
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Payments, undefined, { id: "payments-1" })
      yield* awaitStatus(id, "waiting")
      assert.deepStrictEqual(yield* client.signal(id, "payment", 10, { signalId: "evt-1" }), { duplicate: false })
      assert.deepStrictEqual(yield* client.signal(id, "payment", 10, { signalId: "evt-1" }), { duplicate: true })
      // Even a retried webhook with another body is the same event.
      assert.deepStrictEqual(yield* client.signal(id, "payment", 99, { signalId: "evt-1" }), { duplicate: true })
      yield* TestClock.adjust("10 seconds")
      const run = yield* client.get(id)
      assert.strictEqual(run.status, "waiting", "the duplicate did not satisfy the second wait")
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.signals.map((s) => [s.signalId, JSON.parse(s.payload)]), [["evt-1", 10]])
      assert.deepStrictEqual(details.entries.map((e) => [e.key, e.status]), [["payment", "succeeded"], [
        "payment#2",
        "started"
      ]])

      assert.deepStrictEqual(yield* client.signal(id, "payment", 20, { signalId: "evt-2" }), { duplicate: false })
      assert.deepStrictEqual(successOf(yield* resultOf(Payments, id)), [10, 20])
      assert.deepStrictEqual(yield* client.signal(id, "payment", 20, { signalId: "evt-2" }), { duplicate: true })
      assert.instanceOf(yield* Effect.flip(client.signal("nope", "payment", 1)), WorkflowError.RunNotFound)
    }).pipe(Effect.provide(testEnv({ workflows: [Payments], implementations, settings: slow })))
  })

  it.effect("awaitSignal with a timeout fails with SignalTimeout when no signal arrives", () => {
    const recorder = new Recorder()
    const implementations = Review.implement(() =>
      Effect.gen(function*() {
        const approved = yield* Workflow.awaitSignal("approval", Schema.Boolean, { timeout: "1 hour" }).pipe(
          Effect.tapError((error) => recorder.record("timeout", error))
        )
        return [approved, "never"] as const
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Review, undefined, { id: "review-2" })
      const waiting = yield* awaitStatus(id, "waiting")
      assert.strictEqual(waiting.runnableAt, hour)
      yield* TestClock.adjust(hour - 1_000)
      assert.strictEqual((yield* client.get(id)).status, "waiting")
      assert.strictEqual(recorder.count("timeout"), 0)

      const error = failureOf(yield* resultOf(Review, id))
      assert.instanceOf(error, WorkflowError.SignalTimeout)
      assert.strictEqual(error.signal, "approval")
      assert.strictEqual((yield* client.get(id)).status, "failed")
      const entry = (yield* client.inspect(id)).entries.find((e) => e.key === "approval")!
      assert.strictEqual(entry.status, "failed")
      assert.strictEqual(JSON.parse(entry.error!)._tag, "SignalTimeout")
      assert.strictEqual(recorder.count("timeout"), 1)
      assert.instanceOf(recorder.data("timeout")[0], WorkflowError.SignalTimeout)

      // A signal after the timeout changes nothing.
      yield* client.signal(id, "approval", true)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual((yield* client.get(id)).status, "failed")
    }).pipe(Effect.provide(testEnv({ workflows: [Review], implementations, settings: slow })))
  })
})

describe("cancellation", () => {
  const Shipment = Workflow.make({
    name: "shipment",
    payload: Schema.Void,
    success: Schema.String,
    error: WorkflowError.SignalTimeout
  })
  const shipment = (recorder: Recorder) =>
    Shipment.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("reserve", {
          success: Schema.String,
          compensate: (r) => recorder.record("release", r)
        }, Effect.as(recorder.record("reserve"), "res-1"))
        yield* Step.run("label", {
          success: Schema.String,
          compensate: (l) => recorder.record("void-label", l)
        }, Effect.as(recorder.record("label"), "lbl-1"))
        yield* Workflow.sleep("cooling-off", "1 day")
        yield* Workflow.awaitSignal("go", Schema.Boolean)
        yield* Step.run("ship", recorder.record("ship"))
        return "shipped"
      })
    )

  it.effect("cancelling a sleeping run runs its compensations in reverse order and ends cancelled", () => {
    const recorder = new Recorder()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Shipment, undefined, { id: "ship-1" })
      yield* awaitStatus(id, "sleeping")
      const requested = yield* client.cancel(id)
      assert.isTrue(requested.cancelRequested)
      const error = failureOf(yield* resultOf(Shipment, id))
      assert.instanceOf(error, WorkflowError.WorkflowCancelled)
      assert.strictEqual(error.workflowId, id)
      assert.isBelow(yield* Clock.currentTimeMillis, hour, "the sleep was not waited out")

      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "cancelled")
      assert.deepStrictEqual(
        recorder.names().filter((name) => name === "release" || name === "void-label"),
        ["void-label", "release"]
      )
      assert.deepStrictEqual(recorder.data("release"), ["res-1"])
      assert.deepStrictEqual(recorder.counts("reserve", "label", "ship"), { reserve: 1, label: 1, ship: 0 })
      assert.deepStrictEqual(
        details.entries.filter((e) => e.kind === "compensation").map((e) => [e.key, e.status]),
        [["label#compensate", "succeeded"], ["reserve#compensate", "succeeded"]]
      )
      // Nothing more happens, and a cancelled run cannot be cancelled again.
      yield* TestClock.adjust("2 days")
      assert.deepStrictEqual(recorder.counts("release", "void-label", "ship"), { release: 1, "void-label": 1, ship: 0 })
      assert.instanceOf(yield* Effect.flip(client.cancel(id)), WorkflowError.InvalidRunState)
    }).pipe(Effect.provide(testEnv({ workflows: [Shipment], implementations: shipment(recorder), settings: slow })))
  })

  it.effect("cancelling a running run stops it at the next step boundary and compensates it", () => {
    const recorder = new Recorder()
    const Transfer = Workflow.make({ name: "transfer", payload: Schema.Void, success: Schema.String })
    return Effect.gen(function*() {
      const latch = yield* Deferred.make<void>()
      const implementations = Transfer.implement(() =>
        Effect.gen(function*() {
          yield* Step.run("debit", {
            success: Schema.String,
            compensate: (d) => recorder.record("credit-back", d)
          }, Effect.as(Effect.zipRight(recorder.record("debit"), Deferred.await(latch)), "debit-1"))
          yield* Step.run("credit", recorder.record("credit"))
          return "done"
        })
      )
      return yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const { id } = yield* client.start(Transfer, undefined, { id: "transfer-1" })
        yield* settle
        assert.strictEqual(recorder.count("debit"), 1)
        yield* client.cancel(id)
        // The running step is allowed to finish; nothing after it starts.
        yield* Deferred.succeed(latch, undefined)
        assert.instanceOf(failureOf(yield* resultOf(Transfer, id)), WorkflowError.WorkflowCancelled)
        assert.strictEqual((yield* client.get(id)).status, "cancelled")
        assert.deepStrictEqual(recorder.counts("debit", "credit", "credit-back"), {
          debit: 1,
          credit: 0,
          "credit-back": 1
        })
        assert.deepStrictEqual(recorder.data("credit-back"), ["debit-1"])
        const details = yield* client.inspect(id)
        assert.deepStrictEqual(
          details.attempts.filter((a) => a.key === "credit").map((a) => [a.attempt, a.outcome]),
          [[1, "interrupted"]]
        )
      }).pipe(Effect.provide(testEnv({ workflows: [Transfer], implementations })))
    })
  })

  it.effect("a cancel requested while a step runs is not postponed by the durable sleep that follows", () => {
    const recorder = new Recorder()
    const Transfer = Workflow.make({ name: "transfer", payload: Schema.Void, success: Schema.String })
    return Effect.gen(function*() {
      const latch = yield* Deferred.make<void>()
      const implementations = Transfer.implement(() =>
        Effect.gen(function*() {
          yield* Step.run("debit", {
            success: Schema.String,
            compensate: (d) => recorder.record("credit-back", d)
          }, Effect.as(Effect.zipRight(recorder.record("debit"), Deferred.await(latch)), "debit-1"))
          yield* Workflow.sleep("settlement", "1 day")
          yield* Step.run("credit", recorder.record("credit"))
          return "done"
        })
      )
      return yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const { id } = yield* client.start(Transfer, undefined, { id: "transfer-2" })
        yield* settle
        yield* client.cancel(id)
        yield* Deferred.succeed(latch, undefined)
        assert.instanceOf(
          failureOf(yield* resultOf(Transfer, id, { stepMs: 60_000, maxMs: hour })),
          WorkflowError.WorkflowCancelled
        )
        assert.isBelow(yield* Clock.currentTimeMillis, hour, "the cancel waited for the sleep")
        assert.deepStrictEqual(recorder.counts("debit", "credit", "credit-back"), {
          debit: 1,
          credit: 0,
          "credit-back": 1
        })
      }).pipe(Effect.provide(testEnv({ workflows: [Transfer], implementations, settings: slow })))
    })
  })

  it.effect("cancelling a run waiting for a signal compensates it too", () => {
    const recorder = new Recorder()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Shipment, undefined, { id: "ship-2" })
      yield* awaitStatus(id, "sleeping")
      yield* TestClock.adjust("1 day")
      yield* awaitStatus(id, "waiting")
      yield* client.cancel(id)
      assert.instanceOf(failureOf(yield* resultOf(Shipment, id)), WorkflowError.WorkflowCancelled)
      assert.strictEqual((yield* client.get(id)).status, "cancelled")
      assert.deepStrictEqual(recorder.counts("release", "void-label", "ship"), { release: 1, "void-label": 1, ship: 0 })
      // A late signal does not revive it.
      yield* client.signal(id, "go", true)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual((yield* client.get(id)).status, "cancelled")
      assert.strictEqual(recorder.count("ship"), 0)
    }).pipe(Effect.provide(testEnv({ workflows: [Shipment], implementations: shipment(recorder), settings: slow })))
  })
})
