/**
 * Retention: `WorkflowClient.purge` deletes finished runs older than a duration in batches and never
 * touches unfinished or parked runs; `stats` counts runs; `Worker.layer({ purge })` purges
 * periodically. On MemoryStore, with `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import type { WorkflowStore as Store } from "@memento/workflow"
import { MemoryStore, Step, Worker, Workflow, WorkflowClient, WorkflowConfig, WorkflowError } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Effect, Layer, Schema, TestClock } from "effect"
import { awaitStatus, settings } from "./utils.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", {}) {}

const Mode = Schema.Literal("ok", "fail", "sleep", "defect")

const W = Workflow.make({ name: "retained", payload: Mode, success: Schema.String, error: Declined })

const implementations = W.implement((mode) =>
  Effect.gen(function*() {
    yield* Step.run("work", Effect.void)
    if (mode === "fail") return yield* Effect.fail(new Declined())
    if (mode === "sleep") yield* Workflow.sleep("long-nap", "30 days")
    if (mode === "defect") yield* Step.run("boom", Effect.die("bug"))
    return mode
  })
)

type PurgeCall = Parameters<Store.WorkflowStore["Type"]["purge"]>[0]

/** MemoryStore whose `purge` calls are recorded (then passed on unchanged). */
const recordingStore = (calls: Array<PurgeCall>) =>
  Layer.effect(
    WorkflowStore,
    Effect.map(MemoryStore.make, (store) => ({
      ...store,
      purge: (request: Parameters<typeof store.purge>[0]) => {
        calls.push(request)
        return store.purge(request)
      }
    }))
  )

/**
 * The test clock jumps days here: the worker polls and heartbeats hourly (store hints wake it for new
 * work), so a jump wakes few timers.
 */
const slowTimers: Partial<WorkflowConfig.Settings> = {
  ...settings,
  pollMs: 3_600_000,
  heartbeatMs: 3_600_000,
  leaseMs: 4 * 3_600_000
}

/** A client and one worker (with an optional periodic purge) on a recording MemoryStore. */
const env = (calls: Array<PurgeCall>, purge?: WorkflowClient.PeriodicPurgeOptions | undefined) =>
  Layer.mergeAll(
    WorkflowClient.layer,
    Worker.layer({ workflows: [W], purge }).pipe(Layer.provide(implementations))
  ).pipe(Layer.provideMerge(recordingStore(calls)), Layer.provideMerge(WorkflowConfig.layer(slowTimers)))

const start = (mode: typeof Mode.Type, id: string) =>
  Effect.flatMap(WorkflowClient.WorkflowClient, (client) => client.start(W, mode, { id }))

const exists = (id: string) =>
  Effect.flatMap(WorkflowClient.WorkflowClient, (client) =>
    client.get(id).pipe(
      Effect.as(true),
      Effect.catchIf((error) => error instanceof WorkflowError.RunNotFound, () => Effect.succeed(false))
    ))

describe("retention", () => {
  it.effect("purge deletes finished runs older than olderThan in batches; unfinished and parked runs stay", () => {
    const calls: Array<PurgeCall> = []
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const old = ["old-1", "old-2", "old-3", "old-4"]
      for (const id of old) yield* start("ok", id)
      yield* start("fail", "old-failed")
      yield* start("sleep", "old-sleeping")
      yield* start("defect", "old-parked")
      for (const id of old) yield* awaitStatus(id, "succeeded")
      yield* awaitStatus("old-failed", "failed")
      yield* awaitStatus("old-sleeping", "sleeping")
      yield* awaitStatus("old-parked", "needs_attention")

      yield* TestClock.adjust("2 days")
      yield* start("ok", "recent")
      yield* awaitStatus("recent", "succeeded")

      assert.deepStrictEqual(
        (yield* client.stats).map((count) => `${count.workflow}:${count.status}:${count.count}`).sort(),
        ["retained:failed:1", "retained:needs_attention:1", "retained:sleeping:1", "retained:succeeded:5"]
      )

      // Statuses that are not terminal are never purged.
      assert.strictEqual(
        yield* client.purge({ olderThan: "1 day", statuses: ["sleeping", "needs_attention", "running"] }),
        0
      )
      assert.strictEqual(yield* client.purge({ olderThan: "1 day", statuses: ["failed"] }), 1)
      assert.isFalse(yield* exists("old-failed"))
      calls.length = 0

      const now = yield* TestClock.currentTimeMillis
      assert.strictEqual(yield* client.purge({ olderThan: "1 day", batchSize: 2 }), 4)
      // 2 + 2, then a batch that finds nothing: one short store call per batch, one cut-off.
      assert.deepStrictEqual(calls.map((call) => call.limit), [2, 2, 2])
      assert.isTrue(calls.every((call) => call.completedBefore === now - 86_400_000))
      assert.deepStrictEqual([...calls[0].statuses].sort(), ["cancelled", "compensated", "failed", "succeeded"])

      for (const id of old) assert.isFalse(yield* exists(id))
      for (const id of ["old-sleeping", "old-parked", "recent"]) assert.isTrue(yield* exists(id))
      assert.deepStrictEqual(
        (yield* client.stats).map((count) => `${count.status}:${count.count}`).sort(),
        ["needs_attention:1", "sleeping:1", "succeeded:1"]
      )

      // Nothing left that is old enough.
      assert.strictEqual(yield* client.purge({ olderThan: "1 day" }), 0)
      assert.isTrue(yield* exists("recent"))
    }).pipe(Effect.provide(env(calls)))
  })

  it.effect("a worker with `purge` deletes old finished runs periodically", () =>
    Effect.gen(function*() {
      for (const id of ["p-1", "p-2"]) yield* start("ok", id)
      yield* start("sleep", "p-sleeping")
      for (const id of ["p-1", "p-2"]) yield* awaitStatus(id, "succeeded")
      yield* awaitStatus("p-sleeping", "sleeping")

      yield* TestClock.adjust("23 hours")
      assert.isTrue(yield* exists("p-1"))
      // The purge after the runs are a day old deletes them.
      yield* TestClock.adjust("2 hours")
      assert.isFalse(yield* exists("p-1"))
      assert.isFalse(yield* exists("p-2"))
      assert.isTrue(yield* exists("p-sleeping"))
    }).pipe(Effect.provide(env([], { every: "1 hour", olderThan: "1 day" }))))
})
