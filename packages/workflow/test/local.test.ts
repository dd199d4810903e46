/**
 * In-process hand-over (`internal/local.ts`): a client whose process runs a worker of the workflow
 * with a free slot creates the run claimed by that worker (no claim, no wake-up) — `execute` even
 * lets the run's first commit create it — and gets the final record from it (no read); without a
 * free slot, or when that worker is gone, the run goes the usual way and nothing is lost.
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
import { Deferred, Effect, Fiber, Layer, Option, Schema } from "effect"
import { advanceUntil, awaitStatus, Recorder, settings, settle, startWorker, successOf, workerLayer } from "./utils.js"

const Three = Workflow.make({ name: "three", payload: Schema.Number, success: Schema.Number })

const threeLive = (recorder: Recorder) =>
  Three.implement((n) =>
    Effect.gen(function*() {
      const a = yield* Step.run("a", { success: Schema.Number }, Effect.as(recorder.record("a"), n + 1))
      const b = yield* Step.run("b", { success: Schema.Number }, Effect.as(recorder.record("b"), a + 1))
      return yield* Step.run("c", { success: Schema.Number }, Effect.as(recorder.record("c"), b + 1))
    })
  )

/** A MemoryStore that records which runs `claim` returned and which runs were read with `get`. */
const observedStore = Effect.gen(function*() {
  const store = yield* MemoryStore.make
  const claimed: Array<string> = []
  const read: Array<string> = []
  const observed: WorkflowStore.WorkflowStore["Type"] = {
    ...store,
    claim: (request) =>
      Effect.tap(store.claim(request), (runs) => Effect.sync(() => claimed.push(...runs.map((r) => r.id)))),
    get: (id) => Effect.tap(store.get(id), () => Effect.sync(() => read.push(id)))
  }
  return { store: observed, claimed, read }
})

/** A client and a worker in one process, on `store`. */
const inProcess = <const W extends ReadonlyArray<Workflow.Any>>(
  store: WorkflowStore.WorkflowStore["Type"],
  worker: Parameters<typeof workerLayer<W>>[0]
) =>
  Layer.mergeAll(WorkflowClient.layer, workerLayer(worker)).pipe(
    Layer.provideMerge(Layer.succeed(WorkflowStore.WorkflowStore, store)),
    Layer.provideMerge(WorkflowConfig.layer(settings))
  )

/** Runs `effect` while the test clock advances until it completes. */
const completing = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const fiber = yield* Effect.fork(effect)
    yield* advanceUntil(Effect.map(Fiber.poll(fiber), Option.isSome), { what: "the effect to complete" })
    return yield* Fiber.join(fiber)
  })

describe("in-process hand-over", () => {
  it.scoped("execute with a local worker: the run's first commit creates it claimed by that worker; no claim and no read of the result", () =>
    Effect.gen(function*() {
      const recorder = new Recorder()
      const { claimed, read, store } = yield* observedStore
      const env = inProcess(store, { workflows: [Three], implementations: threeLive(recorder) })
      yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        yield* settle
        for (let i = 0; i < 5; i++) {
          assert.strictEqual(yield* completing(client.execute(Three, i, { id: `run-${i}` })), i + 3)
        }
        assert.deepStrictEqual(claimed, [], "no claim returned a run")
        assert.deepStrictEqual(read, [], "no result was read back")
        for (let i = 0; i < 5; i++) {
          const run = yield* client.get(`run-${i}`)
          assert.strictEqual(run.status, "succeeded")
          assert.strictEqual(run.epoch, 1)
          assert.strictEqual(run.recoveries, 0)
        }
        assert.deepStrictEqual(recorder.counts("a", "b", "c"), { a: 5, b: 5, c: 5 })
      }).pipe(Effect.provide(env))
    }))

  it.scoped("execute: steps started side by side first wait for the commit that creates the run", () =>
    Effect.gen(function*() {
      const recorder = new Recorder()
      const Fan = Workflow.make({ name: "fan", payload: Schema.Number, success: Schema.Number })
      const implementation = Fan.implement((n) =>
        Effect.map(
          Effect.all(
            ["x", "y", "z"].map((name) =>
              Step.run(name, { success: Schema.Number }, Effect.as(recorder.record(name), n))
            ),
            { concurrency: "unbounded" }
          ),
          (values) => values.reduce((a, b) => a + b, 0)
        )
      )
      const { read, store } = yield* observedStore
      const commits: Array<{ readonly runId: string; readonly create: boolean; readonly keys: ReadonlyArray<string> }> =
        []
      const observed: WorkflowStore.WorkflowStore["Type"] = {
        ...store,
        // a commit that lets the other fibers run while it is in flight, as a database's does
        commit: (commit) =>
          Effect.tap(
            Effect.zipRight(Effect.yieldNow(), store.commit(commit)),
            () =>
              Effect.sync(() =>
                commits.push({
                  runId: commit.runId,
                  create: commit.create !== undefined,
                  keys: commit.entries.map((e) => `${e.key}:${e.status}`)
                })
              )
          )
      }
      const env = inProcess(observed, { workflows: [Fan], implementations: implementation })
      yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        yield* settle
        for (let i = 1; i <= 3; i++) {
          assert.strictEqual(yield* completing(client.execute(Fan, i, { id: `fan-${i}` })), 3 * i)
        }
        assert.deepStrictEqual(recorder.counts("x", "y", "z"), { x: 3, y: 3, z: 3 }, "each step ran once per run")
        for (let i = 1; i <= 3; i++) {
          const mine = commits.filter((c) => c.runId === `fan-${i}`)
          // the first commit created the run; the other start markers waited for it
          assert.isTrue(mine[0].create, JSON.stringify(mine))
          assert.isTrue(mine.slice(1).every((c) => !c.create), JSON.stringify(mine))
          const details = yield* store.inspect(`fan-${i}`)
          assert.strictEqual(details.run.status, "succeeded")
          assert.strictEqual(details.run.epoch, 1)
          assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`).sort(), [
            "x:succeeded",
            "y:succeeded",
            "z:succeeded"
          ])
        }
        assert.deepStrictEqual(read, [], "no result was read back")
      }).pipe(Effect.provide(env))
    }))

  it.scoped("execute: a creating commit whose reply was lost is recovered; every step runs once", () =>
    Effect.gen(function*() {
      const recorder = new Recorder()
      const { store } = yield* observedStore
      // the first commit that creates a run is applied, but its caller gets a StoreError (the
      // connection dropped after the commit): the retry then finds the run and fails with LeaseLost
      let lost = 0
      const lossy: WorkflowStore.WorkflowStore["Type"] = {
        ...store,
        commit: (commit) =>
          Effect.suspend(() =>
            commit.create !== undefined && lost++ === 0
              ? Effect.zipRight(
                store.commit(commit),
                Effect.fail(
                  new WorkflowError.StoreError({ operation: "commit", message: "connection lost after COMMIT" })
                )
              )
              : store.commit(commit)
          )
      }
      const env = inProcess(lossy, { workflows: [Three], implementations: threeLive(recorder) })
      yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        yield* settle
        // the worker gave the run up; execute found it (same payload) and waited: after the lease
        // expired the worker claimed it again and finished it
        assert.strictEqual(yield* completing(client.execute(Three, 4, { id: "lossy" })), 7)
        assert.strictEqual(lost, 2, "the creating commit and its retry")
        assert.deepStrictEqual(recorder.counts("a", "b", "c"), { a: 1, b: 1, c: 1 })
        const run = yield* client.get("lossy")
        assert.strictEqual(run.status, "succeeded")
        assert.strictEqual(run.epoch, 2, "claimed again after the lease of the creating commit expired")
      }).pipe(Effect.provide(env))
    }))

  it.scoped("without a free slot the run is created pending and the worker claims it once a slot frees", () =>
    Effect.gen(function*() {
      const gate = yield* Deferred.make<void>()
      const Blocking = Workflow.make({ name: "blocking", payload: Schema.String, success: Schema.String })
      const implementation = Blocking.implement((name) =>
        Step.run("wait", { success: Schema.String }, Effect.as(Deferred.await(gate), name))
      )
      const env = Layer.mergeAll(
        WorkflowClient.layer,
        workerLayer({ workflows: [Blocking], implementations: implementation, concurrency: 1 })
      ).pipe(Layer.provideMerge(MemoryStore.layer), Layer.provideMerge(WorkflowConfig.layer(settings)))
      yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        yield* settle
        const first = yield* client.start(Blocking, "first", { id: "first" })
        assert.isTrue(first.created)
        yield* settle
        const running = yield* client.get("first")
        assert.strictEqual(running.status, "running")
        assert.strictEqual(running.epoch, 1)
        // the only slot is taken: the second run is created unclaimed
        yield* client.start(Blocking, "second", { id: "second" })
        const pending = yield* client.get("second")
        assert.strictEqual(pending.status, "pending")
        assert.strictEqual(pending.epoch, 0)
        assert.isNull(pending.leaseOwner)
        yield* Deferred.succeed(gate, undefined)
        assert.strictEqual(successOf(yield* completing(Effect.exit(client.result(Blocking, "second")))), "second")
        assert.strictEqual(yield* client.result(Blocking, "first"), "first")
        const second = yield* client.get("second")
        assert.strictEqual(second.epoch, 1, "claimed once, by the worker's claim")
      }).pipe(Effect.provide(env))
    }))

  it.scoped("a run created claimed for a worker that died before starting it is recovered once its lease expires", () =>
    Effect.gen(function*() {
      const recorder = new Recorder()
      const env = WorkflowClient.layer.pipe(
        Layer.provideMerge(MemoryStore.layer),
        Layer.provideMerge(WorkflowConfig.layer(settings))
      )
      yield* Effect.gen(function*() {
        const store = yield* WorkflowStore.WorkflowStore
        const client = yield* WorkflowClient.WorkflowClient
        // what a client leaves behind when its process dies between the create and the hand-over
        const { run } = yield* store.create({
          id: "orphan",
          workflow: Three.name,
          payload: "7",
          claim: { workerId: "dead-worker", leaseMs: settings.leaseMs! }
        })
        assert.strictEqual(run.status, "running")
        yield* startWorker({ workflows: [Three], implementations: threeLive(recorder), workerId: "survivor" })
        const done = yield* awaitStatus("orphan", "succeeded", { maxMs: 60_000 })
        assert.strictEqual(done.epoch, 2)
        assert.strictEqual(done.recoveries, 0, "the finished steps reset the count")
        assert.strictEqual(yield* client.result(Three, "orphan"), 10)
        assert.deepStrictEqual(recorder.counts("a", "b", "c"), { a: 1, b: 1, c: 1 })
      }).pipe(Effect.provide(env))
    }))
})
