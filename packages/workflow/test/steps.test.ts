/**
 * Guarantee 2 (step identity, journaled encoded results and failures) and guarantee 3 (steps run at
 * least once, a journaled result is used exactly once, `Step.idempotencyKey` is stable), with
 * crashes injected at every step boundary.
 */
import { assert, describe, it } from "@effect/vitest"
import { Step, Workflow, WorkflowClient, WorkflowError } from "@memento/workflow"
import type { WorkflowStore } from "@memento/workflow"
import { Clock, Effect, FiberRef, HashMap, Option, Schedule, Schema, TestClock } from "effect"
import type { CrashPoint } from "./utils.js"
import {
  advanceUntil,
  crashes,
  expireLease,
  failureOf,
  Recorder,
  resultOf,
  runError,
  settings,
  settle,
  successOf,
  testEnv
} from "./utils.js"

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String }) {}
class Flaky extends Schema.TaggedError<Flaky>()("Flaky", { attempt: Schema.Number }) {}

/** step-1, step-2, step-3; each records its idempotency key and attempt. */
const threeSteps = (recorder: Recorder) => {
  const W = Workflow.make({ name: "three-steps", payload: Schema.String, success: Schema.Array(Schema.String) })
  const implementations = W.implement((payload) =>
    Effect.gen(function*() {
      const results: Array<string> = []
      for (const name of ["step-1", "step-2", "step-3"]) {
        const result = yield* Step.run(
          name,
          { success: Schema.String },
          Effect.gen(function*() {
            const key = yield* Step.idempotencyKey
            const attempt = yield* Step.attempt
            yield* recorder.record(name, { key, attempt })
            return `${name}(${payload})`
          })
        )
        results.push(result)
      }
      return results
    })
  )
  return { W, implementations }
}

const journalKeys = (id: string) =>
  Effect.map(WorkflowClient.WorkflowClient, (client) => client.inspect(id)).pipe(
    Effect.flatten,
    Effect.map((details) => details.entries.map((entry) => entry.key))
  )

const comparable = (entries: ReadonlyArray<WorkflowStore.JournalEntry>) =>
  entries.map(({ key, kind, output, error, status }) => ({ key, kind, output, error, status }))

describe("crash and replay (guarantee 3, acceptance)", () => {
  it.effect(
    "a crash after step 2's side effect but before its journal write: step 1 once, step 2 twice with the same idempotency key, step 3 once",
    () => {
      const recorder = new Recorder()
      const { W, implementations } = threeSteps(recorder)
      const crash = crashes({ point: "after-effect", key: "step-2" })
      return Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const { id } = yield* client.start(W, "order-1", { id: "run-1" })
        yield* settle
        assert.deepStrictEqual(crash.fired, ["after-effect step-2"])
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 0 })

        // The abandoned run keeps its lease: nothing happens before it expires.
        const crashed = yield* client.inspect(id)
        assert.strictEqual(crashed.run.status, "running")
        assert.strictEqual(crashed.run.epoch, 1)
        assert.deepStrictEqual(crashed.entries.map((e) => [e.key, e.status]), [["step-1", "succeeded"], [
          "step-2",
          "started"
        ]])
        yield* TestClock.adjust(settings.leaseMs! - 100)
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 0 })

        yield* expireLease
        const exit = yield* resultOf(W, id)
        assert.deepStrictEqual(successOf(exit), ["step-1(order-1)", "step-2(order-1)", "step-3(order-1)"])
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 2, "step-3": 1 })
        const [first, second] = recorder.data("step-2") as Array<{ key: string; attempt: number }>
        assert.strictEqual(first.key, second.key)
        assert.match(first.key, /^mem_/)
        assert.notStrictEqual(first.key, (recorder.data("step-1")[0] as { key: string }).key)
        assert.deepStrictEqual([first.attempt, second.attempt], [1, 2])

        const details = yield* client.inspect(id)
        assert.strictEqual(details.run.status, "succeeded")
        assert.strictEqual(details.run.epoch, 2, "the recovered run was claimed at a higher epoch")
        assert.deepStrictEqual(
          details.entries.map((e) => [e.key, e.seq, e.status, e.attempts]),
          [["step-1", 1, "succeeded", 1], ["step-2", 2, "succeeded", 2], ["step-3", 3, "succeeded", 1]]
        )
        assert.deepStrictEqual(
          details.attempts.filter((a) => a.key === "step-2").map((a) => [a.attempt, a.outcome]),
          [[1, "running"], [2, "succeeded"]]
        )
      }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
    }
  )

  it.effect("a step's StepContext and log annotations hold in each of its attempts and end with the step", () => {
    const seen: Array<readonly [string, string | null, unknown, unknown]> = []
    const probe = (where: string) =>
      Effect.gen(function*() {
        const context = yield* Effect.serviceOption(Step.StepContext)
        const annotations = yield* FiberRef.get(FiberRef.currentLogAnnotations)
        seen.push([
          where,
          Option.getOrNull(Option.map(context, (step) => `${step.key}/${step.attempt}`)),
          Option.getOrNull(HashMap.get(annotations, "step.key")),
          Option.getOrNull(HashMap.get(annotations, "step.attempt"))
        ])
      })
    const W = Workflow.make({ name: "step-scope", payload: Schema.Void, success: Schema.Void })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* probe("before")
        yield* Step.run("ok", probe("in ok"))
        yield* probe("after ok")
        yield* Effect.orDie(Step.run(
          "flaky",
          { success: Schema.Void, error: Flaky, retry: Schedule.recurs(1) },
          Effect.zipRight(
            probe("in flaky"),
            Effect.flatMap(Step.attempt, (attempt) => attempt === 1 ? Effect.fail(new Flaky({ attempt })) : Effect.void)
          )
        ))
        yield* probe("after flaky")
        yield* Effect.either(
          Step.run(
            "fails",
            { success: Schema.Void, error: OutOfStock, retry: Schedule.stop },
            Effect.zipRight(probe("in fails"), Effect.fail(new OutOfStock({ sku: "x" })))
          )
        )
        yield* probe("after fails")
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      successOf(yield* resultOf(W, (yield* client.start(W, undefined, { id: "step-scope-1" })).id))
      assert.deepStrictEqual(seen, [
        ["before", null, null, null],
        ["in ok", "ok/1", "ok", 1],
        ["after ok", null, null, null],
        ["in flaky", "flaky/1", "flaky", 1],
        ["in flaky", "flaky/2", "flaky", 2],
        ["after flaky", null, null, null],
        ["in fails", "fails/1", "fails", 1],
        ["after fails", null, null, null]
      ])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("the idempotency key is derived from workflow ID and step key: other runs get other keys", () => {
    const recorder = new Recorder()
    const { W, implementations } = threeSteps(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      successOf(yield* resultOf(W, (yield* client.start(W, "x", { id: "a" })).id))
      successOf(yield* resultOf(W, (yield* client.start(W, "x", { id: "b" })).id))
      const keys = recorder.calls.map((call) => (call.data as { key: string }).key)
      assert.strictEqual(new Set(keys).size, 6)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  const points: ReadonlyArray<CrashPoint> = ["before-step", "after-effect", "after-journal"]
  for (const point of points) {
    for (const key of ["step-1", "step-2", "step-3"]) {
      it.effect(`a crash at ${point} of ${key} recovers with the clean run's journal and result`, () => {
        const recorder = new Recorder()
        const { W, implementations } = threeSteps(recorder)
        const crash = crashes({ point, key })
        crash.disable()
        return Effect.gen(function*() {
          const client = yield* WorkflowClient.WorkflowClient
          const clean = successOf(yield* resultOf(W, (yield* client.start(W, "p", { id: "clean" })).id))
          const cleanJournal = (yield* client.inspect("clean")).entries
          recorder.calls.length = 0

          crash.enable()
          const { id } = yield* client.start(W, "p", { id: "crashed" })
          const exit = yield* resultOf(W, id)
          assert.deepStrictEqual(crash.fired, [`${point} ${key}`])
          assert.deepStrictEqual(successOf(exit), clean)
          assert.deepStrictEqual(comparable((yield* client.inspect(id)).entries), comparable(cleanJournal))
          const expected = Object.fromEntries(
            ["step-1", "step-2", "step-3"].map((k) => [k, point === "after-effect" && k === key ? 2 : 1])
          )
          assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), expected)
          const keys = new Set(recorder.data(key).map((data) => (data as { key: string }).key))
          assert.strictEqual(keys.size, 1)
          // The last step's result is journaled with the final status: a crash after that journal
          // write leaves nothing to recover.
          const recovered = !(point === "after-journal" && key === "step-3")
          assert.strictEqual((yield* client.get(id)).epoch, recovered ? 2 : 1)
        }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
      })
    }
  }
})

describe("step identity and journaled values (guarantee 2)", () => {
  it.effect("a name used again in one run gets name#2, name#3", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "repeat", payload: Schema.Void, success: Schema.Array(Schema.Number) })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        const values: Array<number> = []
        for (let i = 1; i <= 3; i++) {
          values.push(
            yield* Step.run(
              "charge",
              { success: Schema.Number },
              Effect.as(recorder.record("charge", yield* Effect.succeed(i)), i * 10)
            )
          )
        }
        yield* Step.run("other", recorder.record("other"))
        values.push(
          yield* Step.run("charge", { success: Schema.Number }, Effect.as(recorder.record("charge", 4), 40))
        )
        return values
      })
    )
    const crash = crashes({ point: "after-effect", key: "charge#3" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "repeat-1" })
      yield* settle
      yield* expireLease
      assert.deepStrictEqual(successOf(yield* resultOf(W, id)), [10, 20, 30, 40])
      assert.deepStrictEqual(yield* journalKeys(id), ["charge", "charge#2", "charge#3", "other", "charge#4"])
      // charge#3 crashed after its side effect: it ran twice, the journaled ones once.
      assert.deepStrictEqual(recorder.data("charge"), [1, 2, 3, 3, 4])
      assert.strictEqual(recorder.count("other"), 1)
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.entries.map((e) => e.output), ["10", "20", "30", null, "40"])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })

  it.effect("a step name containing '#' parks the run instead of colliding with a generated key", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "bad-name", payload: Schema.Void })
    const implementations = W.implement(() => Step.run("charge#2", recorder.record("charge#2")))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined)
      const error = failureOf(yield* resultOf(W, id))
      assert.instanceOf(error, WorkflowError.RunParked)
      assert.strictEqual((yield* client.get(id)).status, "needs_attention")
      assert.strictEqual(recorder.count("charge#2"), 0)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("results are journaled encoded with the step's Schema and decoded on replay (Date round-trips)", () => {
    const recorder = new Recorder()
    const at = new Date("2024-02-29T12:34:56.789Z")
    const Stamp = Schema.Struct({ at: Schema.Date, amount: Schema.NumberFromString })
    const W = Workflow.make({ name: "dates", payload: Schema.Void, success: Schema.Date })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        const stamp = yield* Step.run(
          "stamp",
          { success: Stamp },
          Effect.as(recorder.record("stamp"), { at, amount: 12 })
        )
        // What the body sees: on the replay this value comes from the journal.
        yield* recorder.record("seen", stamp)
        yield* Step.run("next", recorder.record("next"))
        return new Date(stamp.at.getTime() + stamp.amount)
      })
    )
    const crash = crashes({ point: "before-step", key: "next" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "dates-1" })
      yield* settle
      const journaled = (yield* client.inspect(id)).entries.find((e) => e.key === "stamp")!
      assert.strictEqual(journaled.status, "succeeded")
      assert.deepStrictEqual(JSON.parse(journaled.output!), { at: "2024-02-29T12:34:56.789Z", amount: "12" })

      yield* expireLease
      const result = successOf(yield* resultOf(W, id))
      assert.instanceOf(result, Date)
      assert.strictEqual(result.getTime(), at.getTime() + 12)
      assert.strictEqual(recorder.count("stamp"), 1)
      assert.strictEqual(recorder.count("next"), 1)
      const seen = recorder.data("seen") as Array<{ at: Date; amount: number }>
      assert.strictEqual(seen.length, 2)
      assert.instanceOf(seen[1].at, Date)
      assert.strictEqual(seen[1].at.getTime(), at.getTime())
      assert.strictEqual(seen[1].amount, 12)
      // The run output is encoded with the workflow's success Schema.
      assert.strictEqual(JSON.parse((yield* client.get(id)).output!), "2024-02-29T12:34:56.801Z")
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })

  it.effect("a journaled terminal failure replays as the same typed failure without running the step", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "typed-failure", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        const reserved = yield* Step.run(
          "reserve",
          { success: Schema.String, error: OutOfStock, retryOn: () => false },
          Effect.zipRight(recorder.record("reserve"), Effect.fail(new OutOfStock({ sku: "sku-9" })))
        ).pipe(
          Effect.catchTag("OutOfStock", (error) =>
            Effect.as(recorder.record("caught", error), `backordered ${error.sku}`))
        )
        yield* Step.run("notify", recorder.record("notify"))
        return reserved
      })
    )
    const crash = crashes({ point: "after-effect", key: "notify" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "tf-1" })
      yield* settle
      const journaled = (yield* client.inspect(id)).entries.find((e) => e.key === "reserve")!
      assert.strictEqual(journaled.status, "failed")
      assert.deepStrictEqual(JSON.parse(journaled.error!), { _tag: "OutOfStock", sku: "sku-9" })
      assert.isNull(journaled.output)

      yield* expireLease
      assert.strictEqual(successOf(yield* resultOf(W, id)), "backordered sku-9")
      assert.strictEqual(recorder.count("reserve"), 1)
      assert.strictEqual(recorder.count("notify"), 2)
      const caught = recorder.data("caught")
      assert.strictEqual(caught.length, 2)
      for (const error of caught) {
        assert.instanceOf(error, OutOfStock)
        assert.strictEqual((error as OutOfStock).sku, "sku-9")
      }
      assert.notStrictEqual(caught[0], caught[1], "the replayed failure was decoded from the journal")
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })
})

describe("retries and the execution log", () => {
  const flakyWorkflow = (
    recorder: Recorder,
    options: {
      readonly failures: number
      readonly retryOn?: ((error: Flaky) => boolean) | undefined
      readonly declared?: boolean | undefined
    }
  ) => {
    const W = Workflow.make({ name: "flaky", payload: Schema.Void, success: Schema.String, error: Flaky })
    const implementations = W.implement(() =>
      Step.run(
        "call-api",
        { success: Schema.String, error: Flaky, retryOn: options.retryOn },
        Effect.gen(function*() {
          const attempt = yield* Step.attempt
          yield* recorder.record("call-api", { attempt, at: yield* Clock.currentTimeMillis })
          if (attempt <= options.failures) return yield* Effect.fail(new Flaky({ attempt }))
          return `ok after ${attempt}`
        })
      )
    )
    return { W, implementations }
  }

  it.effect("the default policy retries a declared error with backoff, 5 attempts in all, then fails terminally", () => {
    const recorder = new Recorder()
    const { W, implementations } = flakyWorkflow(recorder, { failures: Infinity })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "flaky-1" })
      yield* settle
      assert.strictEqual(recorder.count("call-api"), 1, "retries wait on the clock")
      const exit = yield* resultOf(W, id, { stepMs: 10 })
      const error = failureOf(exit)
      assert.instanceOf(error, Flaky)
      assert.strictEqual(error.attempt, 5)

      const calls = recorder.data("call-api") as Array<{ attempt: number; at: number }>
      assert.deepStrictEqual(calls.map((c) => c.attempt), [1, 2, 3, 4, 5])
      // Exponential from 100 ms, factor 2, jittered (0.8x to 1.2x).
      const delays = calls.slice(1).map((c, i) => c.at - calls[i].at)
      delays.forEach((delay, i) => {
        const base = 100 * 2 ** i
        assert.isAtLeast(delay, base * 0.8 - 10, `delay ${i + 1}: ${delay}`)
        assert.isAtMost(delay, base * 1.2 + 10, `delay ${i + 1}: ${delay}`)
      })

      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "failed")
      assert.deepStrictEqual(
        details.attempts.map((a) => [a.key, a.attempt, a.outcome]),
        [
          ["call-api", 1, "retrying"],
          ["call-api", 2, "retrying"],
          ["call-api", 3, "retrying"],
          ["call-api", 4, "retrying"],
          ["call-api", 5, "failed"]
        ]
      )
      details.attempts.forEach((a, i) => {
        assert.include(a.error!, "Flaky")
        assert.match(a.error!, new RegExp(`"attempt":\\s*${i + 1}\\b`))
        assert.strictEqual(a.startedAt, calls[i].at)
        assert.isNotNull(a.endedAt)
      })
      const entry = details.entries.find((e) => e.key === "call-api")!
      assert.strictEqual(entry.status, "failed")
      assert.strictEqual(entry.attempts, 5)
      assert.deepStrictEqual(JSON.parse(entry.error!), { _tag: "Flaky", attempt: 5 })
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a step that succeeds on a later attempt journals its result and the attempts that failed", () => {
    const recorder = new Recorder()
    const { W, implementations } = flakyWorkflow(recorder, { failures: 2 })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "flaky-2" })
      assert.strictEqual(successOf(yield* resultOf(W, id, { stepMs: 10 })), "ok after 3")
      assert.strictEqual(recorder.count("call-api"), 3)
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(
        details.attempts.map((a) => [a.attempt, a.outcome, a.error === null]),
        [[1, "retrying", false], [2, "retrying", false], [3, "succeeded", true]]
      )
      assert.deepStrictEqual(details.entries.map((e) => [e.key, e.status, e.attempts]), [["call-api", "succeeded", 3]])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("retryOn returning false makes a declared error terminal at once", () => {
    const recorder = new Recorder()
    const { W, implementations } = flakyWorkflow(recorder, { failures: Infinity, retryOn: () => false })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "flaky-3" })
      const error = failureOf(yield* resultOf(W, id))
      assert.instanceOf(error, Flaky)
      assert.strictEqual(error.attempt, 1)
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(recorder.count("call-api"), 1)
      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "failed")
      assert.deepStrictEqual(details.attempts.map((a) => [a.attempt, a.outcome]), [[1, "failed"]])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a defect in a step is not retried and parks the run as needs_attention with StepDefect", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "defect", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("before", recorder.record("before"))
        const value = yield* Step.run(
          "explode",
          { success: Schema.String },
          Effect.zipRight(
            recorder.record("explode"),
            Effect.sync((): string => {
              throw new TypeError("cannot read properties of undefined")
            })
          )
        )
        yield* Step.run("after", recorder.record("after"))
        return value
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "defect-1" })
      const error = failureOf(yield* resultOf(W, id))
      assert.instanceOf(error, WorkflowError.RunParked)
      assert.strictEqual(error.status, "needs_attention")
      assert.include(error.reason, "cannot read properties of undefined")
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(recorder.counts("before", "explode", "after"), { before: 1, explode: 1, after: 0 })

      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "needs_attention")
      const parked = yield* runError(id)
      assert.strictEqual(parked._tag, "Parked")
      assert.strictEqual(parked.reason._tag, "StepDefect")
      assert.strictEqual(parked.reason.workflowId, id)
      assert.strictEqual(parked.reason.stepKey, "explode")
      const log = details.attempts.filter((a) => a.key === "explode")
      assert.deepStrictEqual(log.map((a) => [a.attempt, a.outcome]), [[1, "failed"]])
      assert.include(log[0].error!, "cannot read properties of undefined")
      // The defect is not journaled as a result: a resumed run executes the step again.
      assert.notInclude(details.entries.filter((e) => e.key === "explode").map((e) => e.status), "failed")
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })
})

describe("parallel steps", () => {
  const parallel = (recorder: Recorder) => {
    const W = Workflow.make({ name: "parallel", payload: Schema.String, success: Schema.Array(Schema.String) })
    const branch = (name: string, millis: number) =>
      Step.run(
        name,
        { success: Schema.String },
        Effect.gen(function*() {
          yield* recorder.record(name)
          yield* Effect.sleep(millis)
          return `${name}@${yield* Clock.currentTimeMillis}`
        })
      )
    const implementations = W.implement((payload) =>
      Effect.gen(function*() {
        // Started a, b, c; finished b, c, a.
        const results = yield* Effect.all([branch("a", 300), branch("b", 100), branch("c", 200)], {
          concurrency: "unbounded"
        })
        const d = yield* Step.run("d", { success: Schema.String }, Effect.as(recorder.record("d"), `d(${payload})`))
        return [...results, d]
      })
    )
    return { W, implementations }
  }

  it.effect("Effect.all of distinct steps replays deterministically after a crash", () => {
    const recorder = new Recorder()
    const { W, implementations } = parallel(recorder)
    const crash = crashes({ point: "before-step", key: "d" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "x", { id: "par-1" })
      yield* TestClock.adjust(300)
      assert.deepStrictEqual(crash.fired, ["before-step d"])
      const before = (yield* client.inspect(id)).entries
      assert.deepStrictEqual(
        before.map((e) => [e.key, e.status]),
        [["a", "succeeded"], ["b", "succeeded"], ["c", "succeeded"], ["d", "started"]]
      )
      yield* expireLease
      const result = successOf(yield* resultOf(W, id))
      // The journaled results (with the times they were produced), not new ones.
      assert.deepStrictEqual(result, ["a@300", "b@100", "c@200", "d(x)"])
      assert.deepStrictEqual(recorder.counts("a", "b", "c", "d"), { a: 1, b: 1, c: 1, d: 1 })
      const after = (yield* client.inspect(id)).entries
      assert.deepStrictEqual(comparable(after.slice(0, 3)), comparable(before.slice(0, 3)))
      assert.strictEqual((yield* client.get(id)).status, "succeeded")
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })

  it.effect("a crash inside a parallel block re-runs only the unjournaled branches and keeps their keys", () => {
    const recorder = new Recorder()
    const { W, implementations } = parallel(recorder)
    const crash = crashes({ point: "after-effect", key: "a" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "x", { id: "par-2" })
      yield* TestClock.adjust(300)
      assert.deepStrictEqual(crash.fired, ["after-effect a"])
      yield* expireLease
      const result = successOf(yield* resultOf(W, id))
      // Nothing of the block was journaled before the crash: all three branches ran again.
      assert.deepStrictEqual(recorder.counts("a", "b", "c", "d"), { a: 2, b: 2, c: 2, d: 1 })
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.entries.map((e) => [e.key, e.status]), [
        ["a", "succeeded"],
        ["b", "succeeded"],
        ["c", "succeeded"],
        ["d", "succeeded"]
      ])
      assert.deepStrictEqual(result, details.entries.map((e) => JSON.parse(e.output!)))
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })

  it.effect("branches with several steps each replay without a false journal mismatch", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "chains", payload: Schema.Void, success: Schema.Array(Schema.String) })
    const step = (name: string, millis: number) =>
      Step.run(
        name,
        { success: Schema.String },
        Effect.zipRight(recorder.record(name), Effect.as(Effect.sleep(millis), name))
      )
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        // Journal order: x, z, w (z finished first), y; replay asks for x, y and z, w concurrently.
        const [first, second] = yield* Effect.all([
          Effect.all([step("x", 300), step("y", 10)]),
          Effect.all([step("z", 100), step("w", 100)])
        ], { concurrency: "unbounded" })
        const end = yield* step("end", 0)
        return [...first, ...second, end]
      })
    )
    const crash = crashes({ point: "after-effect", key: "y" }, { point: "before-step", key: "end" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "chains-1" })
      yield* TestClock.adjust(310)
      assert.deepStrictEqual(crash.fired, ["after-effect y"])
      assert.deepStrictEqual(
        (yield* client.inspect(id)).entries.map((e) => [e.key, e.seq, e.status]),
        [["x", 1, "succeeded"], ["z", 2, "succeeded"], ["w", 3, "succeeded"], ["y", 4, "started"]]
      )
      yield* expireLease
      yield* advanceUntil(Effect.sync(() => crash.fired.length === 2), { what: "the second crash" })
      yield* expireLease
      assert.deepStrictEqual(successOf(yield* resultOf(W, id)), ["x", "y", "z", "w", "end"])
      assert.deepStrictEqual(recorder.counts("x", "y", "z", "w", "end"), { x: 1, y: 2, z: 1, w: 1, end: 1 })
      assert.strictEqual((yield* client.get(id)).epoch, 3)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })
})
