/**
 * Retention at scale on Postgres: purging 100,000 finished runs (with their journal and attempts)
 * in batches of 5,000 while a worker keeps completing runs of another workflow. Each batch is one
 * short statement that locks its victims with `FOR UPDATE SKIP LOCKED` through the index of
 * finished runs, so the worker is never blocked for long, and no unfinished or parked run is ever
 * deleted, however old.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Step, Workflow, WorkflowClient } from "@memento/workflow"
import { allStatuses, WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Clock, Context, Duration, Effect, Fiber, Layer, Ref, Schema } from "effect"
import { freshDatabase, pgClient } from "./utils/database.js"
import { count, ns, startWorker } from "./utils/engine.js"

const url = await freshDatabase()

const finished = 100_000
const parked = 1_000
const unfinished = 1_000
const batchSize = 5_000

describe("purge on Postgres", () => {
  it.scopedLive(
    "purges 100,000 finished runs in batches while a worker keeps completing runs",
    () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(
          WorkflowClient.layer.pipe(
            Layer.provideMerge(SqlStore.layer().pipe(Layer.provideMerge(pgClient(url, { maxConnections: 10 }))))
          )
        )
        const sql = Context.get(context, SqlClient.SqlClient)
        const store = Context.get(context, WorkflowStore)
        const client = Context.get(context, WorkflowClient.WorkflowClient)
        const id = ns()

        // Old history, inserted directly: finished runs (three terminal statuses) with two journal
        // entries and an attempt each, plus old parked and old unfinished runs that must survive.
        const now = yield* Clock.currentTimeMillis
        const longAgo = now - 30 * 86_400_000
        const [seedTime] = yield* Effect.timed(Effect.orDie(Effect.gen(function*() {
          yield* sql`INSERT INTO memento_runs (id, workflow, status, payload, output, epoch, created_at, updated_at,
            completed_at)
          SELECT 'old-' || i, 'history', (ARRAY['succeeded', 'failed', 'cancelled'])[1 + i % 3], '{}', '1', 1,
            ${longAgo}::bigint + i, ${longAgo}::bigint + i, ${longAgo}::bigint + i
          FROM generate_series(1, ${finished}) AS i`
          yield* sql`INSERT INTO memento_journal (run_id, key, seq, kind, status, output, attempts, started_at,
            completed_at)
          SELECT 'old-' || i, 'step-' || k, k, 'step', 'succeeded', '1', 1, ${longAgo}::bigint + i, ${longAgo}::bigint + i
          FROM generate_series(1, ${finished}) AS i, generate_series(1, 2) AS k`
          yield* sql`INSERT INTO memento_attempts (run_id, key, attempt, outcome, started_at, ended_at)
          SELECT 'old-' || i, 'a', 1, 'succeeded', ${longAgo}::bigint + i, ${longAgo}::bigint + i
          FROM generate_series(1, ${finished}) AS i`
          yield* sql`INSERT INTO memento_runs (id, workflow, status, payload, error, epoch, created_at, updated_at,
            completed_at)
          SELECT 'parked-' || i, 'history', (ARRAY['dead', 'needs_attention'])[1 + i % 2], '{}', '"x"', 1,
            ${longAgo}::bigint + i, ${longAgo}::bigint + i, ${longAgo}::bigint + i
          FROM generate_series(1, ${parked}) AS i`
          yield* sql`INSERT INTO memento_runs (id, workflow, status, payload, epoch, runnable_at, created_at,
            updated_at)
          SELECT 'open-' || i, 'history', (ARRAY['pending', 'waiting', 'sleeping'])[1 + i % 3], '{}', 0,
            CASE WHEN i % 3 = 1 THEN NULL ELSE ${now}::bigint + 86400000 END, ${longAgo}::bigint + i, ${longAgo}::bigint + i
          FROM generate_series(1, ${unfinished}) AS i`
          yield* sql`ANALYZE memento_runs`
        })))
        const journalRows = yield* count(sql`SELECT count(*) AS n FROM memento_journal WHERE run_id LIKE 'old-%'`)
        assert.strictEqual(journalRows, 2 * finished)

        // A small workflow that a worker keeps completing, started by a client fiber, all along.
        const Small = Workflow.make({ name: `small-${id}`, payload: Schema.Number, success: Schema.Number })
        const implementations = Small.implement((n) =>
          Effect.gen(function*() {
            const a = yield* Step.run("a", { success: Schema.Number }, Effect.succeed(n + 1))
            return yield* Step.run("b", { success: Schema.Number }, Effect.succeed(a + 1))
          })
        )
        yield* startWorker({ workflows: [Small], implementations, concurrency: 8 }).pipe(
          Effect.provideService(WorkflowStore, store)
        )
        const started = yield* Ref.make(0)
        const completed = yield* Ref.make<ReadonlyArray<string>>([])
        const load = yield* Effect.forever(
          Effect.gen(function*() {
            const n = yield* Ref.getAndUpdate(started, (k) => k + 1)
            const runId = `small-${id}-${n}`
            const result = yield* client.execute(Small, n, { id: runId })
            assert.strictEqual(result, n + 2)
            yield* Ref.update(completed, (ids) => [...ids, runId])
          })
        ).pipe(Effect.replicateEffect(4, { concurrency: "unbounded" }), Effect.orDie, Effect.forkScoped)
        const completedSmall = count(sql`SELECT count(*) AS n FROM memento_runs
        WHERE workflow = ${Small.name} AND status = 'succeeded'`)
        // the worker is up and completing runs before the purge starts
        while ((yield* completedSmall) < 20) yield* Effect.sleep("50 millis")

        // the cutoff on the database's clock, which stamps completed_at: the runs of the small workflow
        // finished before it are purged too, none finished after it
        const [{ n: cutoffText }] = yield* Effect.orDie(
          sql<{ readonly n: string }>`SELECT (floor(extract(epoch from clock_timestamp()) * 1000))::bigint AS n`
        )
        const cutoff = Number(cutoffText)
        const completedBefore = yield* completedSmall
        const doomed = new Set(
          (yield* Effect.orDie(sql<{ readonly id: string }>`SELECT id FROM memento_runs
          WHERE workflow = ${Small.name} AND completed_at < ${cutoff}::bigint`)).map((row) => row.id)
        )
        const batches: Array<{ readonly deleted: number; readonly ms: number }> = []
        const [purgeTime] = yield* Effect.timed(Effect.gen(function*() {
          while (true) {
            const [duration, deleted] = yield* Effect.timed(
              store.purge({ completedBefore: cutoff, statuses: allStatuses, limit: batchSize })
            )
            batches.push({ deleted, ms: Math.round(Duration.toMillis(duration)) })
            if (deleted < batchSize) break
          }
        }))
        const completedAfter = yield* completedSmall
        yield* Fiber.interrupt(load)

        const purged = batches.reduce((sum, batch) => sum + batch.deleted, 0)
        const longest = Math.max(...batches.map((batch) => batch.ms))
        console.log(
          `purge on Postgres: seeded ${finished} finished runs (+${2 * finished} journal rows, ${finished} attempts) ` +
            `in ${Math.round(Duration.toMillis(seedTime))} ms; ` +
            `purged ${purged} runs (${doomed.size} of them recent runs of the small workflow) in ${batches.length} batches of at most ${batchSize} ` +
            `in ${Math.round(Duration.toMillis(purgeTime))} ms ` +
            `(longest batch ${longest} ms); the worker completed ${completedAfter - completedBefore} runs meanwhile ` +
            `(${yield* Ref.get(started)} started in all)`
        )

        // every finished old run is gone, in batches of at most batchSize, with its rows
        assert.strictEqual(purged, finished + doomed.size)
        assert.isAtLeast(batches.length, finished / batchSize)
        for (const batch of batches) assert.isAtMost(batch.deleted, batchSize)
        assert.strictEqual(yield* count(sql`SELECT count(*) AS n FROM memento_runs WHERE id LIKE 'old-%'`), 0)
        assert.strictEqual(yield* count(sql`SELECT count(*) AS n FROM memento_journal WHERE run_id LIKE 'old-%'`), 0)
        assert.strictEqual(yield* count(sql`SELECT count(*) AS n FROM memento_attempts WHERE run_id LIKE 'old-%'`), 0)
        // the worker kept completing runs during the purge
        assert.isAbove(completedAfter, completedBefore, "the worker completed no run during the purge")
        // nothing unfinished or parked was deleted, however old
        assert.strictEqual(yield* count(sql`SELECT count(*) AS n FROM memento_runs WHERE id LIKE 'parked-%'`), parked)
        assert.strictEqual(yield* count(sql`SELECT count(*) AS n FROM memento_runs WHERE id LIKE 'open-%'`), unfinished)
        // and every run the worker completed after the cutoff still exists
        const done = (yield* Ref.get(completed)).filter((runId) => !doomed.has(runId))
        assert.isAtLeast(done.length, completedAfter - doomed.size - 4)
        const kept = yield* count(sql`SELECT count(*) AS n FROM memento_runs
        WHERE id IN (SELECT json_array_elements_text(${JSON.stringify(done)}::json))`)
        assert.strictEqual(kept, done.length)
        assert.strictEqual(yield* store.purge({ completedBefore: cutoff, statuses: allStatuses, limit: batchSize }), 0)
      }),
    300_000
  )
})
