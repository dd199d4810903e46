/**
 * `WorkflowClient.retry`: a failed, compensated or cancelled run re-runs from a step. Entries from
 * that step on are archived (kept in the execution log), earlier results are replayed; compensated
 * steps and compensations are archived too; other statuses and unknown steps fail typed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Step, Workflow, WorkflowClient, WorkflowError } from "@memento/workflow"
import { Effect, Schema, TestClock } from "effect"
import { awaitStatus, failureOf, Recorder, resultOf, settle, successOf, testEnv } from "./utils.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { step: Schema.String }) {}

interface Control {
  /** Step names that fail (with `Declined`, no retries) while listed. */
  failing: Set<string>
  /** Fail the body after its last step, outside any step. */
  failBody: boolean
}

const step = (recorder: Recorder, control: Control, name: string, compensate?: boolean) =>
  Step.run(
    name,
    {
      success: Schema.String,
      error: Declined,
      retryOn: () => false,
      ...(compensate === true ? { compensate: (value: string) => recorder.record(`undo-${name}`, value) } : {})
    },
    Effect.zipRight(
      recorder.record(name),
      control.failing.has(name) ? Effect.fail(new Declined({ step: name })) : Effect.succeed(`${name}-done`)
    )
  )

/** validate, reserve (compensated by undo-reserve), notify twice (notify, notify#2), charge. */
const pipeline = (recorder: Recorder, control: Control) => {
  const W = Workflow.make({ name: "retry-pipeline", payload: Schema.String, success: Schema.String, error: Declined })
  const implementations = W.implement(() =>
    Effect.gen(function*() {
      yield* step(recorder, control, "validate")
      const reserved = yield* step(recorder, control, "reserve", true)
      yield* step(recorder, control, "notify")
      yield* step(recorder, control, "notify")
      const charged = yield* step(recorder, control, "charge")
      if (control.failBody) return yield* Effect.fail(new Declined({ step: "(body)" }))
      return `${reserved}+${charged}`
    })
  )
  return { W, implementations }
}

/** The same steps without any compensation: a failure ends the run `failed`. */
const plain = (recorder: Recorder, control: Control) => {
  const W = Workflow.make({ name: "retry-plain", payload: Schema.String, success: Schema.String, error: Declined })
  const implementations = W.implement(() =>
    Effect.gen(function*() {
      yield* step(recorder, control, "validate")
      yield* step(recorder, control, "reserve")
      yield* step(recorder, control, "notify")
      yield* step(recorder, control, "notify")
      const charged = yield* step(recorder, control, "charge")
      if (control.failBody) return yield* Effect.fail(new Declined({ step: "(body)" }))
      return charged
    })
  )
  return { W, implementations }
}

const steps = ["validate", "reserve", "notify", "charge"] as const

describe("WorkflowClient.retry", () => {
  it.effect("from a named occurrence: only that step and later ones run again; the archive stays in inspect", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(["charge"]), failBody: false }
    const { W, implementations } = plain(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-1", { id: "retry-1" })
      assert.instanceOf(failureOf(yield* resultOf(W, id)), Declined)
      assert.strictEqual((yield* client.get(id)).status, "failed")

      control.failing.clear()
      const retried = yield* client.retry(id, { fromStep: "notify#2" })
      assert.strictEqual(retried.status, "pending")
      assert.isNull(retried.error)
      assert.strictEqual(successOf(yield* resultOf(W, id)), "charge-done")
      assert.deepStrictEqual(recorder.counts(...steps), { validate: 1, reserve: 1, notify: 3, charge: 2 })

      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "succeeded")
      assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), [
        "validate:succeeded",
        "reserve:succeeded",
        "notify:succeeded",
        "notify#2:succeeded",
        "charge:succeeded"
      ])
      // The first execution's entries from notify#2 on are archived as generation 1, failure included.
      assert.deepStrictEqual(
        details.archivedEntries.map((e) => `${e.generation}:${e.key}:${e.status}`),
        ["1:notify#2:succeeded", "1:charge:failed"]
      )
      assert.deepStrictEqual(
        details.archivedAttempts.filter((a) => a.key === "charge").map((a) => `${a.generation}:${a.outcome}`),
        ["1:failed"]
      )
      assert.deepStrictEqual(
        details.attempts.filter((a) => a.key === "charge").map((a) => a.outcome),
        ["succeeded"]
      )
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a step name means its first occurrence", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(["charge"]), failBody: false }
    const { W, implementations } = plain(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-2", { id: "retry-2" })
      yield* awaitStatus(id, "failed")
      control.failing.clear()
      yield* client.retry(id, { fromStep: "reserve" })
      assert.strictEqual(successOf(yield* resultOf(W, id)), "charge-done")
      assert.deepStrictEqual(recorder.counts(...steps), { validate: 1, reserve: 2, notify: 4, charge: 2 })
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.archivedEntries.map((e) => e.key), ["reserve", "notify", "notify#2", "charge"])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("without fromStep: from the failed step; a second retry archives a second generation", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(["charge"]), failBody: false }
    const { W, implementations } = plain(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-3", { id: "retry-3" })
      yield* awaitStatus(id, "failed")

      // Still failing: the retry fails again, from the same step.
      yield* client.retry(id)
      assert.instanceOf(failureOf(yield* resultOf(W, id)), Declined)
      assert.deepStrictEqual(recorder.counts(...steps), { validate: 1, reserve: 1, notify: 2, charge: 2 })

      control.failing.clear()
      yield* client.retry(id)
      assert.strictEqual(successOf(yield* resultOf(W, id)), "charge-done")
      assert.deepStrictEqual(recorder.counts(...steps), { validate: 1, reserve: 1, notify: 2, charge: 3 })
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(
        details.archivedEntries.map((e) => `${e.generation}:${e.key}:${e.status}`),
        ["1:charge:failed", "2:charge:failed"]
      )
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("without fromStep, a body that failed outside any step keeps every step result", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(), failBody: true }
    const { W, implementations } = plain(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-4", { id: "retry-4" })
      const failure = failureOf(yield* resultOf(W, id))
      assert.instanceOf(failure, Declined)
      assert.strictEqual(failure.step, "(body)")

      control.failBody = false // the operator fixed the code
      yield* client.retry(id)
      assert.strictEqual(successOf(yield* resultOf(W, id)), "charge-done")
      assert.deepStrictEqual(recorder.counts(...steps), { validate: 1, reserve: 1, notify: 2, charge: 1 })
      assert.deepStrictEqual((yield* client.inspect(id)).archivedEntries, [])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a compensated run re-runs from its first compensated step; compensations run again if it fails again", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(["charge"]), failBody: false }
    const { W, implementations } = pipeline(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-5", { id: "retry-5" })
      assert.instanceOf(failureOf(yield* resultOf(W, id)), Declined)
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      assert.strictEqual(recorder.count("undo-reserve"), 1)

      // reserve was undone: its result is archived with everything after it, even though the
      // operator asked for charge; validate (nothing to undo) keeps its result.
      yield* client.retry(id, { fromStep: "charge" })
      assert.instanceOf(failureOf(yield* resultOf(W, id)), Declined)
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      assert.deepStrictEqual(recorder.counts(...steps, "undo-reserve"), {
        validate: 1,
        reserve: 2,
        notify: 4,
        charge: 2,
        "undo-reserve": 2
      })
      const first = (yield* client.inspect(id)).archivedEntries.filter((e) => e.generation === 1)
      assert.deepStrictEqual(first.map((e) => e.key).sort(), [
        "charge",
        "notify",
        "notify#2",
        "reserve",
        "reserve#compensate"
      ])

      control.failing.clear()
      yield* client.retry(id)
      assert.strictEqual(successOf(yield* resultOf(W, id)), "reserve-done+charge-done")
      assert.deepStrictEqual(recorder.counts(...steps, "undo-reserve"), {
        validate: 1,
        reserve: 3,
        notify: 6,
        charge: 3,
        "undo-reserve": 2
      })
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.entries.map((e) => e.key), ["validate", "reserve", "notify", "notify#2", "charge"])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a cancelled run continues: its undone steps run again, then the rest", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "retry-cancel", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("prepare", recorder.record("prepare"))
        yield* Step.run("reserve", {
          success: Schema.String,
          compensate: () => recorder.record("undo-reserve")
        }, Effect.as(recorder.record("reserve"), "r-1"))
        yield* Workflow.sleep("cool-off", "1 minute")
        yield* Step.run("ship", recorder.record("ship"))
        return "shipped"
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "retry-6" })
      yield* awaitStatus(id, "sleeping")
      yield* client.cancel(id)
      yield* awaitStatus(id, "cancelled")
      assert.strictEqual(recorder.count("undo-reserve"), 1)

      yield* client.retry(id)
      yield* awaitStatus(id, "sleeping")
      assert.deepStrictEqual(recorder.counts("prepare", "reserve", "ship"), { prepare: 1, reserve: 2, ship: 0 })
      yield* TestClock.adjust("1 minute")
      assert.strictEqual(successOf(yield* resultOf(W, id)), "shipped")
      assert.deepStrictEqual(recorder.counts("prepare", "reserve", "ship", "undo-reserve"), {
        prepare: 1,
        reserve: 2,
        ship: 1,
        "undo-reserve": 1
      })
      assert.isFalse((yield* client.get(id)).cancelRequested)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("an unknown step fails with UnknownStep naming the run, the step and the steps it has", () => {
    const recorder = new Recorder()
    const control: Control = { failing: new Set(["charge"]), failBody: false }
    const { W, implementations } = pipeline(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-7", { id: "retry-7" })
      yield* awaitStatus(id, "compensated")
      for (const fromStep of ["ship", "notify#3", "reserve#compensate"]) {
        const error = yield* Effect.flip(client.retry(id, { fromStep }))
        assert.instanceOf(error, WorkflowError.UnknownStep)
        assert.strictEqual(error.workflowId, id)
        assert.strictEqual(error.stepKey, fromStep)
        assert.deepStrictEqual(error.steps, ["validate", "reserve", "notify", "notify#2", "charge"])
        assert.include(error.message, `"${fromStep}"`)
        assert.include(error.message, "\"notify#2\"")
      }
      // nothing changed
      const run = yield* client.get(id)
      assert.strictEqual(run.status, "compensated")
      assert.deepStrictEqual((yield* client.inspect(id)).archivedEntries, [])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("other statuses fail with InvalidRunState; parked runs are to be resumed", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "retry-states", payload: Schema.String, success: Schema.String })
    const implementations = W.implement((mode) =>
      Effect.gen(function*() {
        yield* Step.run("first", recorder.record("first"))
        if (mode === "defect") yield* Step.run("boom", Effect.die("bug"))
        if (mode === "wait") yield* Workflow.sleep("nap", "1 hour")
        return mode
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const ok = yield* client.start(W, "ok", { id: "retry-ok" })
      const defect = yield* client.start(W, "defect", { id: "retry-defect" })
      const wait = yield* client.start(W, "wait", { id: "retry-wait" })
      yield* awaitStatus(ok.id, "succeeded")
      yield* awaitStatus(defect.id, "needs_attention")
      yield* awaitStatus(wait.id, "sleeping")
      yield* settle

      const cases = [[ok.id, "succeeded", "retry"], [defect.id, "needs_attention", "retry (resume it instead)"], [
        wait.id,
        "sleeping",
        "retry"
      ]] as const
      for (const [id, status, operation] of cases) {
        const error = yield* Effect.flip(client.retry(id))
        assert.instanceOf(error, WorkflowError.InvalidRunState)
        assert.strictEqual(error.status, status)
        assert.strictEqual(error.operation, operation)
        assert.strictEqual((yield* client.get(id)).status, status)
      }
      const missing = yield* Effect.flip(client.retry("no-such-run"))
      assert.instanceOf(missing, WorkflowError.RunNotFound)
      assert.strictEqual(recorder.count("first"), 3)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })
})
