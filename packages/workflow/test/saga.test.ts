/**
 * Guarantee 7: sagas. Compensations of succeeded steps run in reverse order when the workflow fails
 * terminally, each journaled as its own step with retries; a crash during compensation never
 * repeats a finished compensation; a compensation that exhausts its retries parks the run.
 */
import { assert, describe, it } from "@effect/vitest"
import { Step, Workflow, WorkflowClient, WorkflowError } from "@memento/workflow"
import { Effect, Schema } from "effect"
import type { CrashSpec } from "./utils.js"
import { awaitStatus, crashes, expireLease, failureOf, Recorder, resultOf, runError, settle, testEnv } from "./utils.js"

class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", { reason: Schema.String }) {}
class ProviderDown extends Schema.TaggedError<ProviderDown>()("ProviderDown", {}) {}

const Reservation = Schema.Struct({ id: Schema.String })

/**
 * reserve (compensated by release), hold-funds (compensated by unhold), charge (always declined).
 * `failRelease` makes the compensation of step 1 fail while it is true.
 */
const checkout = (recorder: Recorder, control: { failRelease: boolean } = { failRelease: false }) => {
  const W = Workflow.make({
    name: "saga",
    payload: Schema.String,
    success: Schema.String,
    error: PaymentDeclined
  })
  const implementations = W.implement((order) =>
    Effect.gen(function*() {
      const reservation = yield* Step.run("step-1", {
        success: Reservation,
        compensate: (r) =>
          Effect.gen(function*() {
            yield* recorder.record("compensate-1", r)
            if (control.failRelease) return yield* Effect.fail(new ProviderDown())
          })
      }, Effect.as(recorder.record("step-1"), { id: `res-${order}` }))
      const hold = yield* Step.run("step-2", {
        success: Schema.String,
        compensate: (h) => recorder.record("compensate-2", h)
      }, Effect.as(recorder.record("step-2"), `hold-${reservation.id}`))
      return yield* Step.run(
        "step-3",
        { success: Schema.String, error: PaymentDeclined },
        Effect.zipRight(recorder.record("step-3"), Effect.fail(new PaymentDeclined({ reason: `card of ${hold}` })))
      )
    })
  )
  return { W, implementations }
}

const compensations = (recorder: Recorder) => recorder.names().filter((name) => name.startsWith("compensate-"))

describe("sagas (guarantee 7)", () => {
  it.effect("step 3 failing after its retries compensates step 2 then step 1, once each, and keeps the error", () => {
    const recorder = new Recorder()
    const { W, implementations } = checkout(recorder)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-1", { id: "saga-1" })
      const error = failureOf(yield* resultOf(W, id, { stepMs: 50 }))
      assert.instanceOf(error, PaymentDeclined)
      assert.strictEqual(error.reason, "card of hold-res-o-1")

      assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 5 })
      assert.deepStrictEqual(compensations(recorder), ["compensate-2", "compensate-1"])
      // Each compensation receives its step's (decoded) output.
      assert.deepStrictEqual(recorder.data("compensate-2"), ["hold-res-o-1"])
      assert.deepStrictEqual(recorder.data("compensate-1"), [{ id: "res-o-1" }])
      // Every step finished after the compensations ran, and no further compensation runs later.
      const names = recorder.names()
      assert.isBelow(names.lastIndexOf("step-3"), names.indexOf("compensate-2"))
      yield* settle

      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "compensated")
      assert.deepStrictEqual(
        details.entries.map((e) => [e.key, e.kind, e.status]),
        [
          ["step-1", "step", "succeeded"],
          ["step-2", "step", "succeeded"],
          ["step-3", "step", "failed"],
          ["step-2#compensate", "compensation", "succeeded"],
          ["step-1#compensate", "compensation", "succeeded"]
        ]
      )
      const stored = yield* runError(id)
      assert.deepStrictEqual(stored, {
        _tag: "Failure",
        error: { _tag: "PaymentDeclined", reason: "card of hold-res-o-1" }
      })
      // Polling a finished run gives the same typed error.
      const polled = yield* client.poll(W, id)
      assert.strictEqual(polled._tag, "Some")
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  const crashCases: ReadonlyArray<{ readonly crash: CrashSpec; readonly compensate2: number }> = [
    // Right after the failure of step 3 was journaled with the switch to `compensating`.
    { crash: { point: "after-journal", key: "step-3" }, compensate2: 1 },
    { crash: { point: "after-journal", key: "step-2#compensate" }, compensate2: 1 },
    { crash: { point: "before-step", key: "step-1#compensate" }, compensate2: 1 },
    { crash: { point: "after-effect", key: "step-1#compensate" }, compensate2: 1 },
    // Not journaled yet: compensations run at least once, like steps.
    { crash: { point: "after-effect", key: "step-2#compensate" }, compensate2: 2 }
  ]
  for (const { compensate2, crash: spec } of crashCases) {
    it.effect(`a crash at ${spec.point} of ${spec.key} resumes without repeating finished compensations`, () => {
      const recorder = new Recorder()
      const { W, implementations } = checkout(recorder)
      const crash = crashes(spec)
      return Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const { id } = yield* client.start(W, "o-2", { id: "saga-2" })
        yield* awaitStatus(id, "compensating", { stepMs: 50 })
        yield* settle
        assert.deepStrictEqual(crash.fired, [`${spec.point} ${spec.key}`])
        const crashed = yield* client.get(id)
        assert.strictEqual(crashed.status, "compensating")
        assert.strictEqual(crashed.epoch, 1)

        const error = failureOf(yield* resultOf(W, id))
        assert.instanceOf(error, PaymentDeclined)
        assert.strictEqual((yield* client.get(id)).status, "compensated")
        assert.strictEqual((yield* client.get(id)).epoch, 2)
        assert.strictEqual(recorder.count("compensate-2"), compensate2)
        const expected1 = spec.point === "after-effect" && spec.key === "step-1#compensate" ? 2 : 1
        assert.strictEqual(recorder.count("compensate-1"), expected1)
        // Reverse order held across the crash; the steps themselves were replayed, not re-run.
        assert.deepStrictEqual(
          compensations(recorder),
          [...Array(compensate2).fill("compensate-2"), ...Array(expected1).fill("compensate-1")]
        )
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 5 })
      }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
    })
  }

  it.effect("a compensation that keeps failing parks the run; resume after the fix completes the compensation", () => {
    const recorder = new Recorder()
    const control = { failRelease: true }
    const { W, implementations } = checkout(recorder, control)
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "o-3", { id: "saga-3" })
      const parked = failureOf(yield* resultOf(W, id, { stepMs: 50 }))
      assert.instanceOf(parked, WorkflowError.RunParked)
      assert.strictEqual(parked.status, "needs_attention")

      // The compensation was retried with the default policy (5 attempts), then gave up.
      assert.strictEqual(recorder.count("compensate-1"), 5)
      assert.strictEqual(recorder.count("compensate-2"), 1)
      const details = yield* client.inspect(id)
      assert.strictEqual(details.run.status, "needs_attention")
      assert.deepStrictEqual(
        details.attempts.filter((a) => a.key === "step-1#compensate").map((a) => a.outcome),
        ["retrying", "retrying", "retrying", "retrying", "failed"]
      )
      // The final state says what could not be compensated, and keeps the original error.
      const stored = yield* runError(id)
      assert.strictEqual(stored._tag, "Parked")
      assert.strictEqual(stored.reason._tag, "CompensationFailed")
      assert.deepStrictEqual(stored.reason.stepKeys, ["step-1"])
      assert.include(stored.reason.message, "ProviderDown")
      assert.deepStrictEqual(stored.failure, { _tag: "PaymentDeclined", reason: "card of hold-res-o-3" })

      // An operator fixes the provider and resumes the run.
      control.failRelease = false
      const resumed = yield* client.resume(id)
      assert.strictEqual(resumed.status, "pending")
      const error = failureOf(yield* resultOf(W, id))
      assert.instanceOf(error, PaymentDeclined)
      assert.strictEqual(error.reason, "card of hold-res-o-3")
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      assert.strictEqual(recorder.count("compensate-1"), 6)
      assert.strictEqual(recorder.count("compensate-2"), 1, "the finished compensation was not repeated")
      assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 5 })
      const entries = (yield* client.inspect(id)).entries
      assert.deepStrictEqual(
        entries.filter((e) => e.kind === "compensation").map((e) => [e.key, e.status]),
        [["step-2#compensate", "succeeded"], ["step-1#compensate", "succeeded"]]
      )
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  it.effect("a compensation run again after a crash keeps its idempotency key (distinct from its step's)", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "refund", payload: Schema.Void, error: PaymentDeclined })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("charge", {
          success: Schema.String,
          compensate: (charge) =>
            Effect.flatMap(Step.idempotencyKey, (key) => recorder.record("refund", { charge, key }))
        }, Effect.flatMap(Step.idempotencyKey, (key) => Effect.as(recorder.record("charge", key), "ch_1")))
        return yield* Effect.fail(new PaymentDeclined({ reason: "fraud" }))
      })
    )
    const crash = crashes({ point: "after-effect", key: "charge#compensate" })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "refund-1" })
      yield* settle
      assert.deepStrictEqual(crash.fired, ["after-effect charge#compensate"])
      yield* expireLease
      assert.instanceOf(failureOf(yield* resultOf(W, id)), PaymentDeclined)
      assert.strictEqual((yield* client.get(id)).status, "compensated")
      const refunds = recorder.data("refund") as Array<{ charge: string; key: string }>
      assert.strictEqual(refunds.length, 2)
      assert.strictEqual(refunds[0].key, refunds[1].key)
      assert.deepStrictEqual(refunds.map((r) => r.charge), ["ch_1", "ch_1"])
      assert.notStrictEqual(refunds[0].key, recorder.data("charge")[0])
      assert.strictEqual(recorder.count("charge"), 1)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks })))
  })

  it.effect("a workflow failure with nothing to compensate ends failed", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "no-saga", payload: Schema.Void, error: PaymentDeclined })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("plain", recorder.record("plain"))
        return yield* Effect.fail(new PaymentDeclined({ reason: "no" }))
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined)
      const error = failureOf(yield* resultOf(W, id))
      assert.instanceOf(error, PaymentDeclined)
      assert.strictEqual((yield* client.get(id)).status, "failed")
      assert.strictEqual(recorder.count("plain"), 1)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })
})
