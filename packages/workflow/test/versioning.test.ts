/**
 * Guarantee 9: code changes are caught, not mis-replayed. A replay whose step sequence contradicts
 * the journal, or a journaled value that no longer decodes, parks the run as `needs_attention`
 * with a typed error naming run and step; nothing re-executes. `Workflow.patched` lets old and new
 * runs take different paths.
 */
import { assert, describe, it } from "@effect/vitest"
import type { WorkflowClient, WorkflowStore } from "@memento/workflow"
import { Step, Workflow, WorkflowError } from "@memento/workflow"
import type { Layer } from "effect"
import { Effect, Exit, Schema, Scope } from "effect"
import type { CrashSpec } from "./utils.js"
import {
  awaitStatus,
  crashes,
  expireLease,
  failureOf,
  Recorder,
  resultOf,
  runError,
  settle,
  sharedStore,
  startWorker,
  successOf
} from "./utils.js"

const W = Workflow.make({ name: "versioned", payload: Schema.String, success: Schema.Array(Schema.String) })

/** A body made of plain steps with the given names, each recording its execution. */
const steps = (recorder: Recorder, names: ReadonlyArray<string>) =>
  W.implement((payload) =>
    Effect.forEach(
      names,
      (name) => Step.run(name, { success: Schema.String }, Effect.as(recorder.record(name), `${name}(${payload})`))
    )
  )

/**
 * One store; a first worker runs version 1 until the crash, stops, and a second worker runs
 * version 2 (as after a deploy). Both share the client the test uses.
 */
const deploy = <A, E>(
  test: (helpers: {
    readonly client: WorkflowClient.Service
    readonly run: (
      implementations: Layer.Layer<Workflow.HandlerOf<typeof W>>,
      crash?: CrashSpec
    ) => Effect.Effect<Scope.CloseableScope, never, WorkflowStore.WorkflowStore>
  }) => Effect.Effect<A, E, WorkflowClient.WorkflowClient | WorkflowStore.WorkflowStore>
) =>
  Effect.gen(function*() {
    const { client, provide } = yield* sharedStore
    const workers: Array<Scope.CloseableScope> = []
    const run = (implementations: Layer.Layer<Workflow.HandlerOf<typeof W>>, crash?: CrashSpec) =>
      startWorker({
        workflows: [W],
        implementations,
        hooks: crash === undefined ? undefined : crashes(crash).hooks
      }).pipe(Effect.tap((scope) => Effect.sync(() => workers.push(scope))))
    return yield* provide(test({ client, run })).pipe(
      Effect.ensuring(Effect.forEach(workers, (scope) => Scope.close(scope, Exit.void), { discard: true }))
    )
  })

describe("journal mismatches (guarantee 9, acceptance)", () => {
  it.scoped("renaming step 2 between the crash and the replay parks the run with a JournalMismatch naming step 2", () => {
    const recorder = new Recorder()
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        const v1 = yield* run(steps(recorder, ["step-1", "step-2", "step-3"]), { point: "after-effect", key: "step-2" })
        const { id } = yield* client.start(W, "p", { id: "rename-1" })
        yield* settle
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 1, "step-3": 0 })
        yield* Scope.close(v1, Exit.void)
        const journal = (yield* client.inspect(id)).entries

        // Version 2 renames step 2.
        const v2 = yield* run(steps(recorder, ["step-1", "step-2-renamed", "step-3"]))
        yield* expireLease
        const parked = yield* awaitStatus(id, "needs_attention")
        assert.strictEqual(parked.epoch, 2, "the replay happened")

        const error = yield* runError(id)
        assert.strictEqual(error._tag, "Parked")
        assert.strictEqual(error.reason._tag, "JournalMismatch")
        assert.strictEqual(error.reason.workflowId, "rename-1")
        assert.strictEqual(error.reason.stepKey, "step-2")
        assert.strictEqual(error.reason.requested, "step-2-renamed")
        // It decodes as the typed error.
        const reason = yield* Schema.decodeUnknown(WorkflowError.ParkReason)(error.reason)
        assert.instanceOf(reason, WorkflowError.JournalMismatch)
        assert.include(reason.message, "step-2")

        const result = failureOf(yield* resultOf(W, id))
        assert.instanceOf(result, WorkflowError.RunParked)
        assert.strictEqual(result.status, "needs_attention")
        assert.include(result.reason, "\"step-2\"")

        // No step body ran during the replay, and the journal is untouched.
        assert.deepStrictEqual(
          recorder.counts("step-1", "step-2", "step-2-renamed", "step-3"),
          { "step-1": 1, "step-2": 1, "step-2-renamed": 0, "step-3": 0 }
        )
        assert.deepStrictEqual((yield* client.inspect(id)).entries, journal)
        yield* Scope.close(v2, Exit.void)

        // The operator rolls the rename back and resumes: the run finishes on the old names.
        const v3 = yield* run(steps(recorder, ["step-1", "step-2", "step-3"]))
        yield* client.resume(id)
        assert.deepStrictEqual(successOf(yield* resultOf(W, id)), ["step-1(p)", "step-2(p)", "step-3(p)"])
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "step-3"), { "step-1": 1, "step-2": 2, "step-3": 1 })
        yield* Scope.close(v3, Exit.void)
      })
    )
  })

  const changes: ReadonlyArray<{
    readonly title: string
    readonly v2: ReadonlyArray<string>
    readonly requested: string | null
    readonly stepKey: string
  }> = [
    { title: "removing a journaled step", v2: ["step-1", "step-3"], requested: "step-3", stepKey: "step-2" },
    {
      title: "moving an unfinished step before a journaled one",
      v2: ["step-1", "step-3", "step-2"],
      requested: "step-3",
      stepKey: "step-2"
    },
    {
      title: "inserting a step before journaled ones",
      v2: ["step-0", "step-1", "step-2"],
      requested: "step-0",
      stepKey: "step-1"
    },
    { title: "ending the body before a journaled step", v2: ["step-1"], requested: null, stepKey: "step-2" }
  ]
  for (const change of changes) {
    it.scoped(`${change.title} parks the run and runs nothing`, () => {
      const recorder = new Recorder()
      return deploy(({ client, run }) =>
        Effect.gen(function*() {
          const v1 = yield* run(steps(recorder, ["step-1", "step-2", "step-3"]), {
            point: "before-step",
            key: "step-3"
          })
          const { id } = yield* client.start(W, "p", { id: "change-1" })
          yield* settle
          yield* Scope.close(v1, Exit.void)
          const journal = (yield* client.inspect(id)).entries
          assert.deepStrictEqual(journal.map((e) => [e.key, e.status]), [
            ["step-1", "succeeded"],
            ["step-2", "succeeded"],
            ["step-3", "started"]
          ])
          const before = recorder.calls.length

          yield* run(steps(recorder, change.v2))
          yield* expireLease
          yield* awaitStatus(id, "needs_attention")
          const error = yield* runError(id)
          assert.strictEqual(error.reason._tag, "JournalMismatch")
          assert.strictEqual(error.reason.stepKey, change.stepKey)
          assert.strictEqual(error.reason.requested, change.requested)
          assert.instanceOf(failureOf(yield* resultOf(W, id)), WorkflowError.RunParked)
          assert.strictEqual(recorder.calls.length, before, `ran ${recorder.names().slice(before).join(", ")}`)
          assert.deepStrictEqual((yield* client.inspect(id)).entries, journal)
        })
      )
    })
  }

  it.scoped("a journaled step replayed as another kind (step -> sleep) parks the run", () => {
    const recorder = new Recorder()
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        const v1 = yield* run(steps(recorder, ["step-1", "step-2"]), { point: "before-step", key: "step-2" })
        const { id } = yield* client.start(W, "p", { id: "kind-1" })
        yield* settle
        yield* Scope.close(v1, Exit.void)
        yield* run(W.implement(() =>
          Effect.gen(function*() {
            yield* Workflow.sleep("step-1", "1 second")
            yield* Step.run("step-2", recorder.record("step-2"))
            return []
          })
        ))
        yield* expireLease
        yield* awaitStatus(id, "needs_attention")
        const error = yield* runError(id)
        assert.strictEqual(error.reason._tag, "JournalMismatch")
        assert.strictEqual(error.reason.stepKey, "step-1")
        assert.strictEqual(recorder.count("step-2"), 0)
      })
    )
  })
})

describe("journaled values that no longer decode (guarantee 9)", () => {
  it.scoped("changing a step's success Schema under a journaled value parks the run with JournalDecodeError", () => {
    const recorder = new Recorder()
    const version = (success: Schema.Schema<any, any>) =>
      W.implement((payload) =>
        Effect.gen(function*() {
          const amount = yield* Step.run("quote", { success }, Effect.as(recorder.record("quote"), "12.50"))
          yield* Step.run("charge", recorder.record("charge", amount))
          return [String(amount), payload]
        })
      )
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        const v1 = yield* run(version(Schema.String), { point: "before-step", key: "charge" })
        const { id } = yield* client.start(W, "p", { id: "decode-1" })
        yield* settle
        yield* Scope.close(v1, Exit.void)
        assert.deepStrictEqual(recorder.counts("quote", "charge"), { quote: 1, charge: 0 })

        // Version 2 expects a number where version 1 journaled a string.
        yield* run(version(Schema.Number))
        yield* expireLease
        yield* awaitStatus(id, "needs_attention")
        const error = yield* runError(id)
        assert.strictEqual(error._tag, "Parked")
        assert.strictEqual(error.reason._tag, "JournalDecodeError")
        assert.strictEqual(error.reason.workflowId, "decode-1")
        assert.strictEqual(error.reason.stepKey, "quote")
        assert.include(error.reason.message, "Expected number")
        const result = failureOf(yield* resultOf(W, id))
        assert.instanceOf(result, WorkflowError.RunParked)
        assert.deepStrictEqual(recorder.counts("quote", "charge"), { quote: 1, charge: 0 })
      })
    )
  })

  it.scoped("a journaled typed failure whose error Schema changed parks the run too", () => {
    class V1Error extends Schema.TaggedError<V1Error>()("Declined", { code: Schema.Number }) {}
    class V2Error extends Schema.TaggedError<V2Error>()("Declined", { code: Schema.Number, reason: Schema.String }) {}
    const recorder = new Recorder()
    const version = (error: Schema.Schema<any, any>, make: () => unknown) =>
      W.implement(() =>
        Effect.gen(function*() {
          const outcome = yield* Step.run(
            "authorize",
            { success: Schema.String, error, retryOn: () => false },
            Effect.zipRight(recorder.record("authorize"), Effect.fail(make()))
          ).pipe(Effect.catchAll((e) => Effect.succeed(`declined ${JSON.stringify(e)}`)))
          yield* Step.run("notify", recorder.record("notify"))
          return [outcome]
        })
      )
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        const v1 = yield* run(version(V1Error, () => new V1Error({ code: 51 })), {
          point: "before-step",
          key: "notify"
        })
        const { id } = yield* client.start(W, "p", { id: "decode-2" })
        yield* settle
        yield* Scope.close(v1, Exit.void)
        yield* run(version(V2Error, () => new V2Error({ code: 51, reason: "funds" })))
        yield* expireLease
        yield* awaitStatus(id, "needs_attention")
        const error = yield* runError(id)
        assert.strictEqual(error.reason._tag, "JournalDecodeError")
        assert.strictEqual(error.reason.stepKey, "authorize")
        assert.deepStrictEqual(recorder.counts("authorize", "notify"), { authorize: 1, notify: 0 })
      })
    )
  })
})

describe("Workflow.patched (guarantee 9)", () => {
  const patchedVersion = (recorder: Recorder) =>
    W.implement((payload) =>
      Effect.gen(function*() {
        const a = yield* Step.run("step-1", { success: Schema.String }, Effect.as(recorder.record("step-1"), "one"))
        const isNew = yield* Workflow.patched("new-charge")
        yield* recorder.record("patched", isNew)
        const b = isNew
          ? yield* Step.run("charge-v2", { success: Schema.String }, Effect.as(recorder.record("charge-v2"), "new"))
          : yield* Step.run("step-2", { success: Schema.String }, Effect.as(recorder.record("step-2"), "old"))
        const c = yield* Step.run("step-3", { success: Schema.String }, Effect.as(recorder.record("step-3"), payload))
        return [a, b, c]
      })
    )

  it.scoped("returns false for a run replaying old history and true for a new run", () => {
    const recorder = new Recorder()
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        // Version 1 (no patch) crashes a run inside step 2.
        const v1 = yield* run(steps(recorder, ["step-1", "step-2", "step-3"]), { point: "before-step", key: "step-2" })
        const old = yield* client.start(W, "old", { id: "old-run" })
        yield* settle
        yield* Scope.close(v1, Exit.void)
        recorder.calls.length = 0

        // Version 2 introduces the patch. A new run crashes before its new step once.
        yield* run(patchedVersion(recorder), { point: "before-step", key: "charge-v2" })
        yield* expireLease
        assert.deepStrictEqual(successOf(yield* resultOf(W, old.id)), ["step-1(old)", "old", "old"])
        assert.deepStrictEqual(recorder.data("patched"), [false])
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "charge-v2", "step-3"), {
          "step-1": 0,
          "step-2": 1,
          "charge-v2": 0,
          "step-3": 1
        })
        assert.deepStrictEqual((yield* client.inspect(old.id)).entries.map((e) => e.key), [
          "step-1",
          "step-2",
          "step-3"
        ])
        recorder.calls.length = 0

        const fresh = yield* client.start(W, "new", { id: "new-run" })
        yield* settle
        yield* expireLease
        assert.deepStrictEqual(successOf(yield* resultOf(W, fresh.id)), ["one", "new", "new"])
        // First execution, then the replay after the crash: the journaled marker keeps it true.
        assert.deepStrictEqual(recorder.data("patched"), [true, true])
        assert.deepStrictEqual(recorder.counts("step-1", "step-2", "charge-v2", "step-3"), {
          "step-1": 1,
          "step-2": 0,
          "charge-v2": 1,
          "step-3": 1
        })
        const entries = (yield* client.inspect(fresh.id)).entries
        assert.deepStrictEqual(entries.map((e) => [e.key, e.kind]), [
          ["step-1", "step"],
          ["new-charge#patch", "patch"],
          ["charge-v2", "step"],
          ["step-3", "step"]
        ])
      })
    )
  })

  it.scoped("returns true for an old run that had not reached the patch yet", () => {
    const recorder = new Recorder()
    return deploy(({ client, run }) =>
      Effect.gen(function*() {
        const v1 = yield* run(steps(recorder, ["step-1", "step-2", "step-3"]), { point: "after-effect", key: "step-1" })
        const { id } = yield* client.start(W, "p", { id: "early-run" })
        yield* settle
        yield* Scope.close(v1, Exit.void)
        recorder.calls.length = 0
        yield* run(patchedVersion(recorder))
        yield* expireLease
        assert.deepStrictEqual(successOf(yield* resultOf(W, id)), ["one", "new", "p"])
        assert.deepStrictEqual(recorder.data("patched"), [true])
      })
    )
  })
})
