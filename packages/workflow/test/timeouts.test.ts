/**
 * Workflow and step timeouts on MemoryStore with TestClock: a run's deadline is its creation time
 * plus the workflow's `timeout` (it holds across sleeps, waits and crashes); at the deadline the run
 * fails with a typed `WorkflowTimeout` and compensates. A step's `timeout` limits each attempt
 * with a retried, journaled `StepTimeout`.
 */
import { assert, describe, it } from "@effect/vitest"
import { MemoryStore, Step, Workflow, WorkflowClient, WorkflowError, WorkflowStore } from "@memento/workflow"
import { Effect, Exit, Schedule, Schema, Scope, TestClock } from "effect"
import {
  awaitStatus,
  crashes,
  expireLease,
  failureOf,
  Recorder,
  resultOf,
  startWorker,
  successOf,
  testEnv
} from "./utils.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

const minute = 60_000
const hour = 60 * minute

/** Hour-long tests: polling, heartbeats and leases are stretched (wake-ups come from the worker's timers). */
const slow = { pollMs: 10 * minute, heartbeatMs: 10 * minute, leaseMs: 30 * minute, resultPollMs: 10 * minute }

describe("workflow timeout", () => {
  it.effect("a run sleeping past its deadline wakes at the deadline, fails with WorkflowTimeout and compensates", () => {
    const recorder = new Recorder()
    const Order = Workflow.make({
      name: "timeout-sleeper",
      payload: Schema.String,
      success: Schema.String,
      error: Declined,
      timeout: "1 hour"
    })
    const implementations = Order.implement((id) =>
      Effect.gen(function*() {
        yield* Step.run("reserve", {
          success: Schema.String,
          compensate: (reservation) => recorder.record("release", reservation)
        }, Effect.as(recorder.record("reserve"), `r-${id}`))
        yield* Workflow.sleep("cooling-off", "2 hours")
        yield* Step.run("ship", recorder.record("ship"))
        return "shipped"
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, "o-1", { id: "o-1" })
      const sleeping = yield* awaitStatus(id, "sleeping")
      assert.strictEqual(sleeping.runnableAt, sleeping.createdAt + hour, "woken at the deadline, not at the wake time")
      const nap = (yield* client.inspect(id)).entries.find((entry) => entry.key === "cooling-off")!
      assert.strictEqual(JSON.parse(nap.meta!).wakeAt, sleeping.createdAt + 2 * hour, "the sleep keeps its wake time")

      const error = failureOf(yield* resultOf(Order, id, { stepMs: minute, maxMs: 2 * hour }))
      // typed: WorkflowTimeout is one of the workflow's errors
      const typed: WorkflowError.WorkflowTimeout extends Workflow.ErrorOf<typeof Order> ? true : false = true
      assert.isTrue(typed)
      assert.instanceOf(error, WorkflowError.WorkflowTimeout)
      const timeout = error as WorkflowError.WorkflowTimeout
      assert.deepStrictEqual([timeout.workflowId, timeout.timeoutMs], [id, hour])
      assert.strictEqual(timeout.message, `run "${id}" did not finish within its timeout of 1h`)

      const { entries, run } = yield* client.inspect(id)
      assert.strictEqual(run.status, "compensated")
      assert.isAtLeast(run.completedAt!, run.createdAt + hour)
      assert.isBelow(run.completedAt!, run.createdAt + hour + minute)
      assert.deepStrictEqual(entries.map((entry) => [entry.key, entry.status]), [
        ["reserve", "succeeded"],
        ["cooling-off", "started"],
        ["reserve#compensate", "succeeded"]
      ])
      assert.deepStrictEqual(recorder.counts("reserve", "ship", "release"), { reserve: 1, ship: 0, release: 1 })
      assert.deepStrictEqual(recorder.data("release"), ["r-o-1"])
      assert.deepStrictEqual(JSON.parse(run.error!), {
        _tag: "Failure",
        error: { _tag: "WorkflowTimeout", workflowId: id, timeoutMs: hour }
      })
    }).pipe(Effect.provide(testEnv({ workflows: [Order], implementations, settings: slow })))
  })

  it.effect("a step running at the deadline is interrupted: its attempt is `interrupted`, its result not journaled", () => {
    const recorder = new Recorder()
    const Slow = Workflow.make({ name: "timeout-slow-step", payload: Schema.Void, timeout: "1 minute" })
    const implementations = Slow.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("prepare", {
          success: Schema.Void,
          compensate: () => recorder.record("undo-prepare")
        }, recorder.record("prepare"))
        yield* Step.run(
          "export",
          Effect.zipRight(Effect.sleep("10 minutes"), recorder.record("export-done"))
        )
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Slow, undefined, { id: "slow-1" })
      const error = failureOf(yield* resultOf(Slow, id, { stepMs: 1_000 }))
      assert.instanceOf(error, WorkflowError.WorkflowTimeout)
      const { attempts, entries, run } = yield* client.inspect(id)
      assert.strictEqual(run.status, "compensated")
      assert.isAtMost(run.completedAt!, run.createdAt + minute + 1_000, "stopped at the deadline, not after the step")
      assert.strictEqual(entries.find((entry) => entry.key === "export")?.status, "started")
      const exportAttempts = attempts.filter((attempt) => attempt.key === "export")
      assert.deepStrictEqual(exportAttempts.map((attempt) => attempt.outcome), ["interrupted"])
      assert.deepStrictEqual(recorder.counts("prepare", "export-done", "undo-prepare"), {
        prepare: 1,
        "export-done": 0,
        "undo-prepare": 1
      })
      // the interrupted step does not finish later either
      yield* TestClock.adjust(20 * minute)
      assert.strictEqual(recorder.count("export-done"), 0)
    }).pipe(Effect.provide(testEnv({ workflows: [Slow], implementations, settings: slow })))
  })

  it.effect("a run waiting for a signal wakes at its deadline and ends failed when nothing is to compensate", () => {
    const Approval = Workflow.make({
      name: "timeout-approval",
      payload: Schema.Void,
      success: Schema.Boolean,
      timeout: "1 day"
    })
    const implementations = Approval.implement(() =>
      Workflow.awaitSignal("approved", Schema.Boolean).pipe(
        Effect.catchTag("SignalTimeout", () => Effect.succeed(false))
      )
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Approval, undefined, { id: "approval-1" })
      const waiting = yield* awaitStatus(id, "waiting")
      assert.strictEqual(waiting.runnableAt, waiting.createdAt + 24 * hour)
      assert.isNull(waiting.leaseOwner)
      yield* TestClock.adjust(24 * hour - minute)
      assert.strictEqual((yield* client.get(id)).status, "waiting")
      const error = failureOf(yield* resultOf(Approval, id, { stepMs: minute, maxMs: 2 * hour }))
      assert.instanceOf(error, WorkflowError.WorkflowTimeout)
      const run = yield* client.get(id)
      assert.strictEqual(run.status, "failed")
      // a signal after the deadline changes nothing
      yield* client.signal(id, "approved", true)
      yield* TestClock.adjust(hour)
      assert.strictEqual((yield* client.get(id)).status, "failed")
    }).pipe(Effect.provide(testEnv({ workflows: [Approval], implementations, settings: slow })))
  })

  it.effect("the deadline counts from the run's creation across a crash of its worker", () => {
    const recorder = new Recorder()
    const Quick = Workflow.make({
      name: "timeout-crash",
      payload: Schema.Void,
      success: Schema.String,
      timeout: "3 seconds"
    })
    const implementations = Quick.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("charge", recorder.record("charge"))
        return "done"
      })
    )
    // the worker dies after the step's side effect; the run is recovered after its lease (5 s) expired,
    // past the deadline: the step does not run again and the run times out
    const crash = crashes({ point: "after-effect", key: "charge" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Quick, undefined, { id: "crash-1" })
      yield* awaitStatus(id, "running")
      yield* TestClock.adjust(0)
      assert.deepStrictEqual(crash.fired, ["after-effect charge"])
      yield* expireLease
      const error = failureOf(yield* resultOf(Quick, id))
      assert.instanceOf(error, WorkflowError.WorkflowTimeout)
      const run = yield* client.get(id)
      assert.strictEqual(run.status, "failed")
      assert.strictEqual(run.epoch, 2, "recovered once")
      assert.strictEqual(recorder.count("charge"), 1)
    }).pipe(Effect.provide(testEnv({ workflows: [Quick], implementations, hooks: crash.hooks })))
  })

  it.effect("a failed run recovered past its deadline while compensating keeps its own error", () => {
    const recorder = new Recorder()
    const Booking = Workflow.make({
      name: "timeout-compensating",
      payload: Schema.Void,
      error: Declined,
      timeout: "3 seconds"
    })
    const implementations = Booking.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("book", { success: Schema.Void, compensate: () => recorder.record("unbook") }, Effect.void)
        yield* Step.run(
          "pay",
          { success: Schema.Void, error: Declined, retryOn: () => false },
          Effect.fail(new Declined({ reason: "card" }))
        )
      })
    )
    // the worker dies as the compensation starts; the run is recovered 5 s later, past its deadline:
    // its replay ends with the journaled failure, which is compensated, not turned into a timeout
    const crash = crashes({ point: "before-step", key: "book#compensate" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Booking, undefined, { id: "compensating-1" })
      yield* awaitStatus(id, "compensating")
      yield* TestClock.adjust(0)
      assert.deepStrictEqual(crash.fired, ["before-step book#compensate"])
      yield* expireLease
      const error = failureOf(yield* resultOf(Booking, id))
      assert.instanceOf(error, Declined)
      const run = yield* client.get(id)
      assert.strictEqual(run.status, "compensated")
      assert.strictEqual(run.epoch, 2)
      assert.isAbove(run.completedAt!, run.createdAt + 3_000, "finished after the deadline")
      assert.strictEqual(recorder.count("unbook"), 1)
    }).pipe(Effect.provide(testEnv({ workflows: [Booking], implementations, hooks: crash.hooks })))
  })

  it.effect("a run claimed after its deadline runs no step", () => {
    const recorder = new Recorder()
    const Late = Workflow.make({ name: "timeout-late", payload: Schema.Void, timeout: "1 minute" })
    const implementations = Late.implement(() => Step.run("work", recorder.record("work")))
    return Effect.gen(function*() {
      const store = yield* MemoryStore.make
      const provide = <A, E>(
        effect: Effect.Effect<A, E, WorkflowStore.WorkflowStore | WorkflowClient.WorkflowClient | Scope.Scope>
      ) =>
        effect.pipe(
          Effect.provide(WorkflowClient.layer),
          Effect.provideService(WorkflowStore.WorkflowStore, store),
          Effect.scoped
        )
      // the run is created while no worker runs; a worker starts two minutes later
      const { id } = yield* provide(
        Effect.flatMap(WorkflowClient.WorkflowClient, (client) => client.start(Late, undefined, { id: "late-1" }))
      )
      yield* TestClock.adjust(2 * minute)
      yield* provide(Effect.gen(function*() {
        const worker = yield* startWorker({ workflows: [Late], implementations })
        const error = failureOf(yield* resultOf(Late, id))
        assert.instanceOf(error, WorkflowError.WorkflowTimeout)
        const client = yield* WorkflowClient.WorkflowClient
        assert.strictEqual((yield* client.get(id)).status, "failed")
        assert.strictEqual(recorder.count("work"), 0)
        yield* Scope.close(worker, Exit.void)
      }))
    })
  })
})

describe("step timeout", () => {
  it.effect("a slow attempt fails with StepTimeout and is retried; a fast one succeeds", () => {
    const recorder = new Recorder()
    const Call = Workflow.make({
      name: "step-timeout-retry",
      payload: Schema.Void,
      success: Schema.Number,
      error: WorkflowError.StepTimeout
    })
    const implementations = Call.implement(() =>
      Step.run(
        "call",
        {
          success: Schema.Number,
          timeout: "1 second",
          retry: Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(4)))
        },
        Effect.gen(function*() {
          const attempt = yield* Step.attempt
          yield* recorder.record("call", attempt)
          // the first two attempts hang, the third answers at once
          if (attempt <= 2) yield* Effect.sleep("1 minute")
          return attempt
        })
      )
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Call, undefined, { id: "call-1" })
      assert.strictEqual(successOf(yield* resultOf(Call, id)), 3)
      const { attempts, run } = yield* client.inspect(id)
      assert.deepStrictEqual(
        attempts.map((attempt) => [attempt.attempt, attempt.outcome, attempt.endedAt! - attempt.startedAt]),
        [[1, "retrying", 1_000], [2, "retrying", 1_000], [3, "succeeded", 0]]
      )
      assert.match(attempts[0].error!, /^StepTimeout: an attempt of step "call" .* took longer than 1s/)
      assert.isAtMost(run.completedAt! - run.createdAt, 2_300)
      assert.deepStrictEqual(recorder.data("call"), [1, 2, 3])
    }).pipe(Effect.provide(testEnv({ workflows: [Call], implementations })))
  })

  it.effect("when retries are exhausted the step fails with StepTimeout, journaled: a replay does not run it", () => {
    const recorder = new Recorder()
    const Call = Workflow.make({ name: "step-timeout-exhausted", payload: Schema.Void, success: Schema.String })
    const implementations = Call.implement(() =>
      Effect.gen(function*() {
        const outcome = yield* Step.run(
          "call",
          { success: Schema.String, error: Declined, timeout: "2 seconds", retry: Schedule.recurs(1) },
          Effect.zipRight(recorder.record("call"), Effect.as(Effect.sleep("1 minute"), "answered"))
        ).pipe(
          Effect.catchTag(
            "StepTimeout",
            (timeout) => Effect.succeed(`gave up on ${timeout.stepKey} after ${timeout.timeoutMs} ms`)
          ),
          Effect.catchTag("Declined", (declined) => Effect.succeed(declined.reason))
        )
        // the run suspends here: the body is replayed when it wakes
        yield* Workflow.sleep("pause", "1 hour")
        return outcome
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Call, undefined, { id: "call-2" })
      yield* awaitStatus(id, "sleeping")
      const call = (yield* client.inspect(id)).entries.find((entry) => entry.key === "call")!
      assert.strictEqual(call.status, "failed")
      assert.deepStrictEqual(JSON.parse(call.error!), {
        _tag: "StepTimeout",
        workflowId: id,
        stepKey: "call",
        timeoutMs: 2_000
      })
      assert.strictEqual(call.attempts, 2)
      assert.strictEqual(
        successOf(yield* resultOf(Call, id, { stepMs: minute, maxMs: 2 * hour })),
        "gave up on call after 2000 ms"
      )
      assert.strictEqual(recorder.count("call"), 2, "the replay after the sleep did not run the step again")
    }).pipe(Effect.provide(testEnv({ workflows: [Call], implementations, settings: slow })))
  })
})
