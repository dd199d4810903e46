/**
 * Alerts on Postgres, in real time: two dispatchers with pools of their own (two processes) share
 * the outbox. A claim leases an alert to one of them, so each alert is delivered once; an alert
 * whose dispatcher died mid-delivery is delivered by the other after the lease.
 */
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Alerts, Step, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Context, Deferred, Effect, Exit, Layer, Schedule, Schema, Scope } from "effect"
import { freshDatabase, pgClient } from "./utils/database.js"
import { ns, settings, waitUntil, workerLayer } from "./utils/engine.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { order: Schema.Number }) {}

const url = await freshDatabase()

/** A store on a pool of its own: what one process has. */
const store = () => SqlStore.layer().pipe(Layer.provideMerge(pgClient(url, { maxConnections: 3 })))

const dispatcherOptions: Alerts.Options = {
  lease: "1 second",
  pollInterval: "100 millis",
  retry: Schedule.recurs(0),
  batchSize: 1
}

describe("alerts on Postgres", () => {
  it.scopedLive(
    "two dispatchers deliver each alert once; one that died mid-delivery is taken over",
    () =>
      Effect.gen(function*() {
        const id = ns()
        const W = Workflow.make({ name: `alerting-${id}`, payload: Schema.Number, error: Declined })
        const implementations = W.implement((order) =>
          Step.run(
            "charge",
            { success: Schema.Void, error: Declined, retryOn: () => false },
            Effect.fail(new Declined({ order }))
          )
        )
        const calls: Array<{ readonly by: "a" | "b"; readonly id: string; readonly attempt: number }> = []
        const delivered: Array<string> = []
        const stuck = yield* Deferred.make<string>()

        // Dispatcher A: its first alert never completes (the process dies during the call).
        const scopeA = yield* Scope.make()
        yield* Layer.buildWithScope(
          Alerts.layer((alert) =>
            Effect.gen(function*() {
              calls.push({ by: "a", id: alert.id, attempt: alert.attempt })
              if (yield* Deferred.succeed(stuck, alert.id)) return yield* Effect.never
              delivered.push(alert.id)
            }), dispatcherOptions).pipe(Layer.provide(store())),
          scopeA
        )
        // The worker and the client.
        const context = yield* Layer.build(
          Layer.mergeAll(WorkflowClient.layer, workerLayer({ workflows: [W], implementations, concurrency: 4 })).pipe(
            Layer.provideMerge(store()),
            Layer.provideMerge(WorkflowConfig.layer(settings))
          )
        )
        const client = Context.get(context, WorkflowClient.WorkflowClient)
        const outbox = Context.get(context, WorkflowStore)

        const runs = Array.from({ length: 8 }, (_, i) => `${id}-${i}`)
        for (const [i, runId] of runs.entries()) yield* client.start(W, i, { id: runId })

        const stuckId = yield* Deferred.await(stuck).pipe(Effect.timeout("20 seconds"))
        // Dispatcher B starts while A is still alive and holds its claim, then A dies.
        yield* Layer.build(
          Alerts.layer((alert) =>
            Effect.sync(() => {
              calls.push({ by: "b", id: alert.id, attempt: alert.attempt })
              delivered.push(alert.id)
            }), dispatcherOptions).pipe(Layer.provide(store()))
        )
        yield* Effect.sleep("300 millis")
        yield* Scope.close(scopeA, Exit.void)

        const allDelivered = Effect.map(
          Effect.forEach(runs, (runId) => outbox.alerts(runId)),
          (alerts) => alerts.every((list) => list.length === 1 && list[0].deliveredAt !== null)
        )
        yield* waitUntil(Effect.orDie(allDelivered), { what: "every alert delivered", timeoutMs: 30_000 })
        // A few leases later, nothing is delivered twice.
        yield* Effect.sleep("2 seconds")

        const ids = (yield* Effect.forEach(runs, (runId) => outbox.alerts(runId))).map((list) => list[0].id)
        assert.deepStrictEqual([...delivered].sort(), [...ids].sort(), "each alert delivered once")
        // The stuck alert: claimed by A, then by B after A died and its lease expired.
        assert.deepStrictEqual(
          calls.filter((call) => call.id === stuckId).map((call) => [call.by, call.attempt]),
          [["a", 1], ["b", 2]]
        )
        // Every other alert was called once, by whichever dispatcher claimed it.
        for (const alertId of ids.filter((alertId) => alertId !== stuckId)) {
          assert.strictEqual(calls.filter((call) => call.id === alertId).length, 1, alertId)
        }
      }),
    90_000
  )
})
