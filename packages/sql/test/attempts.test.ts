/**
 * How the SqlStore keeps the execution log, on SQLite and Postgres. A step that succeeds at its
 * first attempt stores no attempt rows: its journal row says the same (`implied_attempt`), and
 * `inspect` rebuilds the records from it. The conformance suite checks what `inspect` returns for
 * every order of writes; these tests check what is stored, and that a database written before
 * migration 3 reads exactly as it did.
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Step, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import type { AttemptRecord } from "@memento/workflow/WorkflowStore"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { migrations, tables } from "../src/internal/tables.js"
import { freshDatabase, pgClient, sqliteClient, tempSqliteFile } from "./utils/database.js"
import { ns, settings, startWorker } from "./utils/engine.js"

const url = await freshDatabase()

class Flaky extends Schema.TaggedError<Flaky>()("Flaky", {}) {}

const dialects: ReadonlyArray<{
  readonly name: string
  readonly client: () => Layer.Layer<SqlClient.SqlClient>
}> = [
  { name: "SQLite", client: () => sqliteClient(tempSqliteFile()) },
  { name: "Postgres", client: () => Layer.orDie(pgClient(url, { maxConnections: 4 })) }
]

const rows = <A extends object>(statement: Effect.Effect<ReadonlyArray<A>, unknown>) =>
  Effect.map(Effect.orDie(statement), (found) => found.map((row) => ({ ...row })))

for (const dialect of dialects) {
  describe(`execution log on ${dialect.name}`, () => {
    it.scopedLive("a step that succeeds at its first attempt stores no attempt rows; inspect shows its attempt", () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(
          Layer.mergeAll(WorkflowClient.layer, WorkflowConfig.layer(settings)).pipe(
            Layer.provideMerge(SqlStore.layer().pipe(Layer.provideMerge(dialect.client())))
          )
        )
        const sql = Context.get(context, SqlClient.SqlClient)
        const client = Context.get(context, WorkflowClient.WorkflowClient)
        const id = ns()
        let calls = 0
        const Order = Workflow.make({
          name: `log-${id}`,
          payload: Schema.String,
          success: Schema.String,
          error: Flaky
        })
        const implementations = Order.implement(() =>
          Effect.gen(function*() {
            const a = yield* Step.run("a", { success: Schema.String }, Effect.succeed("a"))
            yield* Step.run(
              "flaky",
              { success: Schema.Void, error: Flaky, retry: Schedule.recurs(1) },
              Effect.suspend(() => ++calls === 1 ? Effect.fail(new Flaky()) : Effect.void)
            )
            yield* Step.transaction("tx", { success: Schema.Void }, Effect.void)
            return a
          })
        )
        yield* startWorker({ workflows: [Order], implementations }).pipe(Effect.provide(context))
        const runId = `log-${id}`
        const started = yield* client.start(Order, "x", { id: runId })
        assert.strictEqual(yield* client.result(Order, started.id), "a")

        const details = yield* client.inspect(runId)
        const entry = (key: string) => details.entries.find((e) => e.key === key)!
        assert.deepStrictEqual(details.attempts.map((a) => `${a.key}#${a.attempt}:${a.outcome}`), [
          "a#1:succeeded",
          "flaky#1:retrying",
          "flaky#2:succeeded",
          "tx#1:succeeded"
        ])
        for (const key of ["a", "tx"]) {
          const attempt = details.attempts.find((a) => a.key === key)!
          assert.strictEqual(attempt.startedAt, entry(key).startedAt)
          assert.strictEqual(attempt.endedAt, entry(key).completedAt)
          assert.isNull(attempt.error)
        }
        assert.strictEqual(details.attempts[1].error, "Flaky")

        // stored: only the retried step's attempts; the journal rows of `a` and `tx` imply theirs
        const stored = yield* rows(
          sql<{ key: string; attempt: number }>`SELECT key, attempt FROM memento_attempts WHERE run_id = ${runId}
            ORDER BY key, attempt`
        )
        assert.deepStrictEqual(stored.map((row) => `${row.key}#${Number(row.attempt)}`), ["flaky#1", "flaky#2"])
        const implied = yield* rows(
          sql<{ key: string; implied_attempt: unknown }>`SELECT key, implied_attempt FROM memento_journal
            WHERE run_id = ${runId} ORDER BY key`
        )
        assert.deepStrictEqual(implied.map((row) => `${row.key}:${Boolean(row.implied_attempt)}`), [
          "a:true",
          "flaky:false",
          "tx:true"
        ])

        // retry sets the journal aside with its implied attempts, and they stay in the log
        const store = Context.get(context, WorkflowStore)
        yield* store.retry({ runId, archiveKeys: ["a", "flaky", "tx"], from: ["succeeded"] })
        const archived = yield* client.inspect(runId)
        assert.deepStrictEqual(
          archived.archivedAttempts.map(({ generation, ...attempt }) => ({ ...attempt, generation })),
          details.attempts.map((attempt) => ({ ...attempt, generation: 1 }))
        )
        assert.deepStrictEqual(archived.attempts, [])
      }))

    it.scopedLive("a database written before migration 3 reads exactly as it did, and goes on from there", () =>
      Effect.gen(function*() {
        const context = yield* Layer.build(dialect.client())
        const sql = Context.get(context, SqlClient.SqlClient)
        const prefix = `v2_${ns()}_`
        const t = tables(prefix)
        const all = migrations(t)
        const runMigrations = (ids: ReadonlyArray<string>) =>
          Migrator.make({})({
            loader: Migrator.fromRecord(Object.fromEntries(ids.map((id) => [id, all[id]]))),
            table: t.migrations
          }).pipe(Effect.provideService(SqlClient.SqlClient, sql), Effect.orDie)
        yield* runMigrations(["1_create_tables", "2_operations"])

        // rows as version 2 wrote them: every attempt stored, including first attempts that match their entry
        const runId = `old-${ns()}`
        const u = sql.unsafe
        yield* Effect.orDie(
          u(`INSERT INTO ${t.runs} (id, workflow, status, payload, epoch, runnable_at, created_at, updated_at)
          VALUES ('${runId}', 'wf', 'pending', '{}', 1, 1000, 1000, 1000)`)
        )
        yield* Effect.orDie(u(`INSERT INTO ${t.journal}
          (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at) VALUES
          ('${runId}', 'a', 0, 'step', 'succeeded', '"a"', NULL, 1, NULL, 1001, 1002),
          ('${runId}', 'b', 1, 'step', 'started', NULL, NULL, 2, NULL, 1003, NULL),
          ('${runId}', 'nap', 2, 'sleep', 'succeeded', 'null', NULL, 1, NULL, 1004, 1005),
          ('${runId}', 'c', 3, 'step', 'started', NULL, NULL, 1, NULL, 1006, NULL)`))
        yield* Effect.orDie(u(`INSERT INTO ${t.attempts} (run_id, key, attempt, outcome, error, started_at, ended_at)
          VALUES
          ('${runId}', 'a', 1, 'succeeded', NULL, 1001, 1002),
          ('${runId}', 'b', 1, 'running', NULL, 1003, NULL),
          ('${runId}', 'b', 2, 'running', NULL, 1010, NULL),
          ('${runId}', 'c', 1, 'running', NULL, 1006, NULL)`))

        const layer = SqlStore.layer({ tablePrefix: prefix }).pipe(
          Layer.provide(Layer.succeedContext(Context.make(SqlClient.SqlClient, sql)))
        )
        const store = Context.get(yield* Layer.build(layer), WorkflowStore)
        const [{ n }] = yield* rows(sql<{ n: unknown }>`SELECT count(*) AS n FROM ${sql(t.migrations)}`)
        assert.strictEqual(Number(n), 3)
        const before = yield* store.inspect(runId)
        const record = (
          key: string,
          attempt: number,
          startedAt: number,
          endedAt: number | null = null
        ): AttemptRecord => ({
          key,
          attempt,
          outcome: endedAt === null ? "running" : "succeeded",
          error: null,
          startedAt,
          endedAt
        })
        assert.deepStrictEqual(before.attempts, [
          record("a", 1, 1001, 1002),
          record("b", 1, 1003),
          record("b", 2, 1010),
          record("c", 1, 1006)
        ])

        // a worker of version 3 finishes the old run: its new records are left to the journal rows
        const [claimed] = yield* store.claim({ workerId: "w", workflows: ["wf"], limit: 1, leaseMs: 60_000 })
        const cDone = {
          key: "c",
          seq: 3,
          kind: "step" as const,
          status: "succeeded" as const,
          output: "\"c\"",
          error: null,
          attempts: 1,
          meta: null,
          startedAt: 1006,
          completedAt: 1020
        }
        const dStarted = { ...cDone, key: "d", seq: 4, status: "started" as const, startedAt: 1021, completedAt: null }
        yield* store.commit({
          runId,
          epoch: claimed.epoch,
          leaseMs: 60_000,
          entries: [cDone, dStarted],
          attempts: [record("c", 1, 1006, 1020), record("d", 1, 1021)]
        })
        const after = yield* store.inspect(runId)
        assert.deepStrictEqual(after.attempts, [
          record("a", 1, 1001, 1002),
          record("b", 1, 1003),
          record("b", 2, 1010),
          record("c", 1, 1006, 1020),
          record("d", 1, 1021)
        ])
        const stored = yield* rows(
          sql<{ key: string; attempt: number; outcome: string }>`SELECT key, attempt, outcome
            FROM ${sql(t.attempts)} WHERE run_id = ${runId} ORDER BY key, attempt`
        )
        // c's old row stays as it was (the succeeded journal row outranks it); d has none
        assert.deepStrictEqual(stored.map((row) => `${row.key}#${Number(row.attempt)}:${row.outcome}`), [
          "a#1:succeeded",
          "b#1:running",
          "b#2:running",
          "c#1:running"
        ])
      }))
  })
}
