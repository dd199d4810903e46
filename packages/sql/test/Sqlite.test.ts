/**
 * SQLite-specific behaviour of the SqlStore: a real file in WAL mode that survives reopening,
 * migrations with a custom prefix, `transaction` atomicity with the user's SQL, corrupt rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Statement from "@effect/sql/Statement"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { JournalDecodeError, LeaseLost, StoreError } from "@memento/workflow/WorkflowError"
import type { Commit, JournalEntry, RunRecord } from "@memento/workflow/WorkflowStore"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Cause, Context, Effect, Exit, Layer, Option } from "effect"
import { readFileSync, writeFileSync } from "node:fs"
import { tempSqliteFile } from "./utils/database.js"
import { claimedCreateInTransaction } from "./utils/transactions.js"

const ns = () => Math.random().toString(36).slice(2, 10)

const build = <E>(layer: Layer.Layer<WorkflowStore | SqlClient.SqlClient, E>) =>
  Effect.map(Layer.build(layer), (context) => ({
    store: Context.get(context, WorkflowStore),
    sql: Context.get(context, SqlClient.SqlClient)
  }))

const entry = (key: string, seq: number, status: JournalEntry["status"]): JournalEntry => ({
  key,
  seq,
  kind: "step",
  status,
  output: status === "succeeded" ? "\"ok\"" : null,
  error: null,
  attempts: 1,
  meta: null,
  startedAt: 1_000 + seq,
  completedAt: status === "started" ? null : 2_000 + seq
})

const commitOf = (run: RunRecord, fields: Partial<Commit> = {}): Commit => ({
  runId: run.id,
  epoch: run.epoch,
  leaseMs: 60_000,
  entries: [],
  attempts: [],
  ...fields
})

const claimNew = (store: WorkflowStore["Type"], leaseMs = 60_000) =>
  Effect.gen(function*() {
    const id = ns()
    yield* store.create({ id: `run-${id}`, workflow: `wf-${id}`, payload: "{}" })
    const [run] = yield* store.claim({ workerId: "worker-a", workflows: [`wf-${id}`], limit: 1, leaseMs })
    return run
  })

describe("SqlStore on SQLite", () => {
  it.live("a file in WAL mode keeps runs and journals across reopening", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const run = yield* Effect.scoped(Effect.gen(function*() {
        const { sql, store } = yield* build(SqlStore.layerSqlite({ filename }))
        const [{ journal_mode }] = yield* sql<{ journal_mode: string }>`PRAGMA journal_mode`
        assert.strictEqual(journal_mode, "wal")
        const [{ timeout }] = yield* sql<{ timeout: number }>`PRAGMA busy_timeout`
        assert.strictEqual(timeout, 5_000)
        const run = yield* claimNew(store)
        yield* store.commit(commitOf(run, {
          entries: [entry("a", 1, "succeeded")],
          transition: { status: "sleeping", runnableAt: run.updatedAt + 60_000, release: true }
        }))
        return run
      }))
      const reopened = yield* Effect.scoped(Effect.gen(function*() {
        const { store } = yield* build(SqlStore.layerSqlite({ filename }))
        return yield* store.load(run.id)
      }))
      assert.strictEqual(reopened.run.status, "sleeping")
      assert.deepStrictEqual(reopened.entries.map((e) => e.key), ["a"])
    }))

  it.scopedLive("every commit is synced to disk unless `synchronous: \"normal\"` asks for speed instead", () =>
    Effect.gen(function*() {
      // better-sqlite3 itself defaults to NORMAL in WAL mode: commits could be lost with the machine
      const synchronous = (options: Partial<SqlStore.SqliteOptions>) =>
        Effect.scoped(Effect.gen(function*() {
          const { sql } = yield* build(SqlStore.layerSqlite({ filename: tempSqliteFile(), ...options }))
          const [row] = yield* sql<{ synchronous: number }>`PRAGMA synchronous`
          return row.synchronous
        }))
      assert.strictEqual(yield* synchronous({}), 2, "FULL by default")
      assert.strictEqual(yield* synchronous({ synchronous: "full" }), 2)
      assert.strictEqual(yield* synchronous({ synchronous: "normal" }), 1)
    }))

  it.scopedLive("a file that is not a SQLite database fails with a SqlError naming it, not a defect", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      writeFileSync(filename, "these are not the pages of a database ".repeat(200))
      const exit = yield* Effect.exit(Effect.scoped(build(SqlStore.layerSqlite({ filename }))))
      assert.isTrue(Exit.isFailure(exit))
      const failure = Exit.isFailure(exit) ? Cause.failureOption(exit.cause) : Option.none()
      assert.isTrue(
        Option.isSome(failure),
        `a typed failure, got ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`
      )
      const error = Option.getOrThrow(failure)
      assert.instanceOf(error, SqlError)
      assert.strictEqual(error.message, `cannot open the SQLite file ${filename}`)
      assert.match(String((error.cause as Error).message), /not a database/)
      // nothing was written over the file
      assert.match(readFileSync(filename, "utf8"), /^these are not the pages/)
    }))

  it.scopedLive("hot statements are served by indexes", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* build(SqlStore.layerSqlite({ filename: tempSqliteFile() }))
      const captured: Array<{ readonly name: string; readonly text: string; readonly params: ReadonlyArray<unknown> }> =
        []
      const capture = <A, E>(name: string, effect: Effect.Effect<A, E>) =>
        Statement.withTransformer(effect, (statement) =>
          Effect.sync(() => {
            const [text, params] = statement.compile()
            captured.push({ name, text, params })
            return statement
          }))
      const id = ns()
      const workflow = `wf-${id}`
      yield* capture("create", store.create({ id: `run-${id}`, workflow, payload: "{}" }))
      const [run] = yield* capture(
        "claim",
        store.claim({ workerId: "w", workflows: [workflow], limit: 5, leaseMs: 60_000 })
      )
      yield* capture("load", store.load(run.id))
      yield* capture(
        "commit",
        store.commit(commitOf(run, {
          entries: [entry("a", 1, "succeeded")],
          attempts: [{ key: "a", attempt: 1, outcome: "succeeded", error: null, startedAt: 1, endedAt: 2 }]
        }))
      )
      // a step's start: its attempt record is implied by the journal row, so no attempts insert
      yield* capture(
        "step commit",
        store.commit(commitOf(run, {
          entries: [entry("b", 2, "started")],
          attempts: [{ key: "b", attempt: 1, outcome: "running", error: null, startedAt: 1_002, endedAt: null }]
        }))
      )
      yield* capture("heartbeat", store.heartbeat({ workerId: "w", runs: [{ id: run.id, epoch: 1 }], leaseMs: 60_000 }))
      yield* capture("signal", store.signal({ runId: run.id, name: "s", signalId: "evt", payload: "1" }))
      yield* capture("list", store.list({ workflow, status: "running" }))
      yield* capture("list", store.list({ status: "running", limit: 10 }))
      yield* capture("list", store.list({}))
      yield* capture("inspect", store.inspect(run.id))
      // the operations: an alerting commit, retry, alerts, list by parent, purge of a finished run
      yield* capture(
        "failing commit",
        store.commit(commitOf(run, {
          transition: { status: "failed", runnableAt: null, release: true, error: "\"boom\"" }
        }))
      )
      yield* capture("retry", store.retry({ runId: run.id, archiveKeys: ["a"], from: ["failed"] }))
      yield* capture("claimAlerts", store.claimAlerts({ limit: 10, leaseMs: 60_000 }))
      yield* capture("alerts", store.alerts(run.id))
      yield* capture("list", store.list({ parentId: run.id }))
      const [again] = yield* store.claim({ workerId: "w", workflows: [workflow], limit: 5, leaseMs: 60_000 })
      yield* store.commit(commitOf(again, { transition: { status: "succeeded", runnableAt: null, release: true } }))
      assert.strictEqual(
        yield* capture(
          "purge",
          store.purge({ completedBefore: Date.now() + 60_000, statuses: ["succeeded"], limit: 10 })
        ),
        1
      )
      const counts = captured.reduce<Record<string, number>>(
        (acc, { name }) => ({ ...acc, [name]: (acc[name] ?? 0) + 1 }),
        {}
      )
      // commit and signal run their statements in one transaction (BEGIN/COMMIT are not counted here)
      assert.deepStrictEqual(counts, {
        create: 1,
        claim: 1,
        load: 1,
        commit: 3,
        "step commit": 2,
        heartbeat: 1,
        signal: 2,
        list: 4,
        inspect: 1,
        "failing commit": 2,
        retry: 6,
        claimAlerts: 1,
        alerts: 1,
        purge: 8
      })
      for (const { name, params, text } of captured) {
        const plan = yield* sql.unsafe<{ readonly detail: string }>(`EXPLAIN QUERY PLAN ${text}`, params)
        // a scan of a subquery's rows (a co-routine, e.g. the execution log's UNION) reads no table
        const subqueries = plan.flatMap((row) => /^CO-ROUTINE (\w+)$/.exec(row.detail)?.[1] ?? [])
        const scans = plan.map((row) => row.detail).filter((detail) =>
          /^SCAN /.test(detail) && !/VIRTUAL TABLE|CONSTANT ROW|^SCAN held|USING (COVERING )?INDEX/.test(detail) &&
          !subqueries.includes(detail.slice("SCAN ".length))
        )
        assert.deepStrictEqual(scans, [], `${name} scans a table: ${plan.map((row) => row.detail).join(" | ")}`)
      }
    }))

  it.scopedLive("migrations are idempotent and honour the table prefix", () =>
    Effect.gen(function*() {
      const filename = tempSqliteFile()
      const tenant = yield* build(SqlStore.layerSqlite({ filename, tablePrefix: "tenant_a_" }))
      const again = yield* build(
        SqlStore.layer({ tablePrefix: "tenant_a_" }).pipe(
          Layer.provideMerge(Layer.succeedContext(Context.make(SqlClient.SqlClient, tenant.sql)))
        )
      )
      const other = yield* build(
        SqlStore.layer().pipe(
          Layer.provideMerge(Layer.succeedContext(Context.make(SqlClient.SqlClient, tenant.sql)))
        )
      )
      const tables = yield* tenant.sql<{ readonly name: string }>`SELECT name FROM sqlite_master
        WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`
      assert.deepStrictEqual(tables.map((t) => t.name), [
        "memento_alerts",
        "memento_attempts",
        "memento_attempts_archive",
        "memento_journal",
        "memento_journal_archive",
        "memento_migrations",
        "memento_runs",
        "memento_schedules",
        "memento_signals",
        "tenant_a_alerts",
        "tenant_a_attempts",
        "tenant_a_attempts_archive",
        "tenant_a_journal",
        "tenant_a_journal_archive",
        "tenant_a_migrations",
        "tenant_a_runs",
        "tenant_a_schedules",
        "tenant_a_signals"
      ])
      const [{ n }] = yield* tenant.sql<{ n: number }>`SELECT count(*) AS n FROM tenant_a_migrations`
      assert.strictEqual(n, 3)
      yield* again.store.create({ id: "shared", workflow: "wf", payload: "{}" })
      assert.isTrue(Option.isSome(yield* tenant.store.get("shared")))
      assert.isTrue(Option.isNone(yield* other.store.get("shared")))
    }))

  it.scopedLive("transaction commits the user's SQL with the journal, and rolls it back on LeaseLost", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* build(SqlStore.layerSqlite({ filename: tempSqliteFile() }))
      yield* sql`CREATE TABLE orders (id TEXT PRIMARY KEY)`
      const insert = (id: string) => sql`INSERT INTO orders (id) VALUES (${id})`
      const count = Effect.map(sql<{ readonly n: number }>`SELECT count(*) AS n FROM orders`, ([row]) => row.n)

      const run = yield* claimNew(store, 300)
      yield* store.transaction(
        insert("first"),
        () => commitOf(run, { leaseMs: 300, entries: [entry("tx", 1, "succeeded")] })
      )
      assert.strictEqual(yield* count, 1)

      const failed = yield* Effect.flip(store.transaction(
        Effect.zipRight(insert("second"), Effect.fail("declined" as const)),
        () => commitOf(run, { entries: [entry("tx2", 2, "succeeded")] })
      ))
      assert.strictEqual(failed, "declined")
      assert.strictEqual(yield* count, 1)

      yield* Effect.sleep("500 millis")
      yield* store.claim({ workerId: "worker-b", workflows: [run.workflow], limit: 1, leaseMs: 60_000 })
      const lost = yield* Effect.flip(
        store.transaction(insert("third"), () => commitOf(run, { entries: [entry("tx2", 2, "succeeded")] }))
      )
      assert.instanceOf(lost, LeaseLost)
      assert.strictEqual(yield* count, 1)
      assert.deepStrictEqual((yield* store.inspect(run.id)).entries.map((e) => e.key), ["tx"])
    }))

  it.scopedLive("a create that asks for a claim inside the caller's transaction creates the run pending, unclaimed", () =>
    Effect.flatMap(build(SqlStore.layerSqlite({ filename: tempSqliteFile() })), claimedCreateInTransaction))

  it.scopedLive("corrupt rows fail with a typed error naming the run, not a crash", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* build(SqlStore.layerSqlite({ filename: tempSqliteFile() }))
      const run = yield* claimNew(store)
      yield* store.commit(commitOf(run, { entries: [entry("a", 1, "succeeded")] }))
      yield* sql`UPDATE memento_journal SET status = 'half-done' WHERE run_id = ${run.id}`
      // the engine's load: damaged data (it parks the run), not a failing store (it would retry)
      const loadError = yield* Effect.flip(store.load(run.id))
      assert.instanceOf(loadError, JournalDecodeError)
      assert.strictEqual((loadError as JournalDecodeError).workflowId, run.id)
      assert.strictEqual((loadError as JournalDecodeError).stepKey, "a")
      assert.include(loadError.message, run.id)
      const inspectCorrupt = yield* Effect.flip(store.inspect(run.id))
      assert.instanceOf(inspectCorrupt, StoreError)

      const other = yield* claimNew(store)
      yield* sql`UPDATE memento_runs SET status = 'exploded' WHERE id = ${other.id}`
      const getError = yield* Effect.flip(store.get(other.id))
      assert.instanceOf(getError, StoreError)
      assert.include(getError.message, other.id)
      const inspectError = yield* Effect.flip(store.inspect(other.id))
      assert.instanceOf(inspectError, StoreError)
      // STRICT tables refuse wrongly typed values outright
      const typed = yield* Effect.exit(sql`UPDATE memento_runs SET epoch = 'lots' WHERE id = ${run.id}`)
      assert.strictEqual(typed._tag, "Failure")
      const fine = yield* claimNew(store)
      assert.strictEqual(fine.status, "running")
    }))
})
