/**
 * Postgres-specific guarantees of the SqlStore: statements per operation (counted at the driver),
 * index use, fencing across connections, concurrent claims and creates from several pools,
 * migrations, `transaction` atomicity with the user's SQL, corrupt rows, LISTEN/NOTIFY, connections
 * given back after an interrupt and generic plans of the hot statements.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { JournalDecodeError, LeaseLost, StoreError } from "@memento/workflow/WorkflowError"
import type { Commit, JournalEntry, RunRecord } from "@memento/workflow/WorkflowStore"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { ConfigProvider, Context, Deferred, Effect, Either, Fiber, Layer, List, Logger, Option, Stream } from "effect"
import { countingPgClient, freshDatabase, pgClient } from "./utils/database.js"
import { claimedCreateInTransaction } from "./utils/transactions.js"

const url = await freshDatabase()

const ns = () => Math.random().toString(36).slice(2, 10)

/** Builds a store (and its SqlClient) in the test's scope. */
const build = <E>(layer: Layer.Layer<WorkflowStore | SqlClient.SqlClient, E>) =>
  Effect.map(Layer.build(layer), (context) => ({
    store: Context.get(context, WorkflowStore),
    sql: Context.get(context, SqlClient.SqlClient)
  }))

const storeOn = (options: SqlStore.Options = {}, maxConnections = 10) =>
  build(SqlStore.layer(options).pipe(Layer.provideMerge(pgClient(url, { maxConnections }))))

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

const claimNew = (store: WorkflowStore["Type"], leaseMs = 60_000) =>
  Effect.gen(function*() {
    const id = ns()
    yield* store.create({ id: `run-${id}`, workflow: `wf-${id}`, payload: "{}" })
    const [run] = yield* store.claim({ workerId: "worker-a", workflows: [`wf-${id}`], limit: 1, leaseMs })
    return run
  })

const commitOf = (run: RunRecord, fields: Partial<Commit> = {}): Commit => ({
  runId: run.id,
  epoch: run.epoch,
  leaseMs: 60_000,
  entries: [],
  attempts: [],
  ...fields
})

describe("SqlStore on Postgres", () => {
  it.scopedLive("costs one statement per operation on the happy path", () =>
    Effect.gen(function*() {
      const { client, log } = countingPgClient(url)
      const { sql, store } = yield* build(SqlStore.layer().pipe(Layer.provideMerge(client)))
      const id = ns()
      const workflow = `wf-${id}`

      const [created, onCreate] = yield* log.count(store.create({ id: `run-${id}`, workflow, payload: "{}" }))
      assert.isTrue(created.created)
      const [[run], onClaim] = yield* log.count(
        store.claim({ workerId: "w", workflows: [workflow], limit: 5, leaseMs: 60_000 })
      )
      const [, onLoad] = yield* log.count(store.load(run.id))
      const [, onStep] = yield* log.count(store.commit(commitOf(run, {
        entries: [entry("a", 1, "succeeded"), entry("b", 2, "started")],
        attempts: [{ key: "a", attempt: 1, outcome: "succeeded", error: null, startedAt: 1, endedAt: 2 }]
      })))
      const [, onHeartbeat] = yield* log.count(
        store.heartbeat({ workerId: "w", runs: [{ id: run.id, epoch: run.epoch }], leaseMs: 60_000 })
      )
      const [, onSignal] = yield* log.count(
        store.signal({ runId: run.id, name: "s", signalId: "evt", payload: "1" })
      )
      yield* sql`CREATE TABLE user_rows_${sql.literal(id)} (id text)`
      const [, onTransaction] = yield* log.count(store.transaction(
        sql`INSERT INTO ${sql(`user_rows_${id}`)} VALUES ('x')`,
        () => commitOf(run, { entries: [entry("b", 2, "succeeded")] })
      ))
      const [, onFinish] = yield* log.count(store.commit(commitOf(run, {
        entries: [entry("c", 3, "succeeded")],
        transition: { status: "succeeded", runnableAt: null, release: true, output: "\"done\"" }
      })))
      const [, onRelease] = yield* log.count(store.release(run.id, run.epoch))

      assert.deepStrictEqual(
        {
          create: onCreate.length,
          claim: onClaim.length,
          load: onLoad.length,
          commit: onStep.length,
          heartbeat: onHeartbeat.length,
          signal: onSignal.length,
          finish: onFinish.length,
          release: onRelease.length
        },
        { create: 1, claim: 1, load: 1, commit: 1, heartbeat: 1, signal: 1, finish: 1, release: 1 }
      )
      // BEGIN, the user's INSERT, the fenced commit, COMMIT
      assert.deepStrictEqual(onTransaction.map((statement) => statement.split(" ")[0].toUpperCase()), [
        "BEGIN",
        "INSERT",
        "WITH",
        "COMMIT"
      ])
      const details = yield* store.inspect(run.id)
      assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), [
        "a:succeeded",
        "b:succeeded",
        "c:succeeded"
      ])
      assert.strictEqual(details.run.status, "succeeded")
    }))

  it.scopedLive("hot statements are served by indexes", () =>
    Effect.gen(function*() {
      const { client, log } = countingPgClient(url)
      const { sql, store } = yield* build(SqlStore.layer().pipe(Layer.provideMerge(client)))
      const captured: Array<{ readonly name: string; readonly text: string; readonly values: ReadonlyArray<unknown> }> =
        []
      const capture = <A, E>(name: string, effect: Effect.Effect<A, E>) =>
        Effect.tap(log.countWithValues(effect), ([, statements]) => {
          for (const statement of statements) captured.push({ name, ...statement })
        }).pipe(Effect.map(([a]) => a))
      const id = ns()
      const workflow = `wf-${id}`
      yield* capture("create", store.create({ id: `run-${id}`, workflow, payload: "{}" }))
      const [run] = yield* capture(
        "claim",
        store.claim({ workerId: "w", workflows: [workflow], limit: 5, leaseMs: 60_000 })
      )
      yield* capture("load", store.load(run.id))
      yield* capture("commit", store.commit(commitOf(run, { entries: [entry("a", 1, "succeeded")] })))
      yield* capture(
        "commit with create",
        store.commit(commitOf(run, {
          runId: `new-${id}`,
          epoch: 1,
          entries: [entry("a", 1, "started")],
          create: { workflow, payload: "{}", workerId: "w" }
        }))
      )
      yield* capture("heartbeat", store.heartbeat({ workerId: "w", runs: [{ id: run.id, epoch: 1 }], leaseMs: 60_000 }))
      yield* capture("signal", store.signal({ runId: run.id, name: "s", signalId: "evt", payload: "1" }))
      yield* capture("list", store.list({ workflow, status: "running" }))
      yield* capture("list", store.list({ status: ["running", "pending"], limit: 10 }))
      yield* capture("list", store.list({}))
      yield* capture("inspect", store.inspect(run.id))
      yield* capture("list", store.list({ parentId: run.id }))
      yield* capture("retry", Effect.either(store.retry({ runId: run.id, archiveKeys: ["a"], from: ["failed"] })))
      yield* capture(
        "purge",
        store.purge({ completedBefore: Date.now(), statuses: ["succeeded", "failed"], limit: 100 })
      )
      yield* capture("claimAlerts", store.claimAlerts({ limit: 10, leaseMs: 30_000 }))
      yield* capture("alerts", store.alerts(run.id))
      const plans = yield* sql.withTransaction(Effect.gen(function*() {
        yield* sql`SET LOCAL enable_seqscan = off`
        return yield* Effect.forEach(captured, ({ name, text, values }) =>
          Effect.map(
            sql.unsafe<{ readonly "QUERY PLAN": string }>(`EXPLAIN ${text}`, values),
            (rows) => ({ name, plan: rows.map((row) => row["QUERY PLAN"]).join("\n") })
          ))
      }))
      if (process.env.SHOW_PLANS) { for (const p of plans) console.log(p.name + "\n" + p.plan) }
      assert.isAbove(plans.length, 8)
      for (const { name, plan } of plans) {
        assert.notMatch(plan, /Seq Scan on memento_/, `${name} scans a table:\n${plan}`)
      }
      const claimPlan = plans.find((p) => p.name === "claim")?.plan ?? ""
      assert.match(claimPlan, /memento_runs_claimable/)
      // purge reads only finished runs, through the index that holds nothing else
      const purgePlan = plans.find((p) => p.name === "purge")?.plan ?? ""
      assert.match(purgePlan, /memento_runs_finished/)
    }))

  it.scopedLive("a stale epoch writes nothing, even racing the new owner", () =>
    Effect.gen(function*() {
      const a = yield* storeOn()
      const b = yield* storeOn()
      const run = yield* claimNew(a.store, 200)
      yield* a.store.commit(commitOf(run, { leaseMs: 200, entries: [entry("a", 1, "started")] }))
      yield* Effect.sleep("400 millis")
      const [taken] = yield* b.store.claim({
        workerId: "worker-b",
        workflows: [run.workflow],
        limit: 1,
        leaseMs: 60_000
      })
      assert.strictEqual(taken.epoch, 2)
      const results = yield* Effect.all([
        Effect.either(a.store.commit(commitOf(run, {
          entries: [entry("a", 1, "succeeded"), entry("b", 2, "started")],
          transition: { status: "succeeded", runnableAt: null, release: true, output: "\"stale\"" }
        }))),
        Effect.either(b.store.commit(commitOf(taken, { entries: [entry("a", 1, "failed")] })))
      ], { concurrency: "unbounded" })
      assert.isTrue(results[0]._tag === "Left" && results[0].left instanceof LeaseLost)
      assert.strictEqual(results[1]._tag, "Right")
      const details = yield* b.store.inspect(run.id)
      assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), ["a:failed"])
      assert.strictEqual(details.run.status, "running")
      assert.strictEqual(details.run.output, null)
      assert.deepStrictEqual(
        yield* a.store.heartbeat({ workerId: "worker-a", runs: [{ id: run.id, epoch: 1 }], leaseMs: 60_000 }),
        []
      )
    }))

  it.scopedLive("a signal racing a waiting commit is never lost", () =>
    Effect.gen(function*() {
      const a = yield* storeOn()
      const b = yield* storeOn()
      for (let i = 0; i < 40; i++) {
        const run = yield* claimNew(a.store)
        const { signals } = yield* a.store.load(run.id)
        const seen = signals.length === 0 ? 0 : signals[signals.length - 1].seq
        yield* Effect.all([
          b.store.signal({ runId: run.id, name: "go", signalId: `evt-${i}`, payload: "1" }),
          a.store.commit(commitOf(run, {
            transition: { status: "waiting", runnableAt: null, release: true, signalSeenSeq: seen }
          }))
        ], { concurrency: "unbounded" })
        const stored = yield* a.store.get(run.id).pipe(Effect.map(Option.getOrThrow))
        assert.strictEqual(stored.status, "waiting")
        assert.isNotNull(stored.runnableAt, `run ${run.id} (round ${i}) lost its wake-up`)
      }
    }))

  it.scopedLive("a child's finishing commit racing its parent's waiting commit and heartbeats never loses the wake-up", () =>
    Effect.gen(function*() {
      const { log, client } = countingPgClient(url)
      const a = yield* build(SqlStore.layer().pipe(Layer.provideMerge(client)))
      const b = yield* storeOn()
      let signalled = 0
      for (let i = 0; i < 30; i++) {
        const parent = yield* claimNew(a.store)
        const child = yield* claimNew(a.store)
        const delivery = { runId: parent.id, name: "child", signalId: `child-${child.id}`, payload: `${i}` }
        // the parent suspends (same store: its commit may share a batch), the child finishes on
        // another pool, and a heartbeat locks both runs meanwhile
        const [, , held] = yield* Effect.all([
          a.store.commit(commitOf(parent, {
            transition: { status: "waiting", runnableAt: null, release: true, signalSeenSeq: 0 }
          })),
          (i % 2 === 0 ? b : a).store.commit(commitOf(child, {
            entries: [entry("done", 1, "succeeded")],
            transition: { status: "succeeded", runnableAt: null, release: true, output: "1", signal: delivery }
          })),
          a.store.heartbeat({
            workerId: "worker-a",
            runs: [{ id: parent.id, epoch: parent.epoch }, { id: child.id, epoch: child.epoch }],
            leaseMs: 60_000
          })
        ], { concurrency: "unbounded" })
        assert.isAtMost(held.length, 2)
        const { run, signals } = yield* a.store.load(parent.id)
        assert.strictEqual(run.status, "waiting")
        assert.deepStrictEqual(signals.map((signal) => signal.signalId), [delivery.signalId])
        assert.isNotNull(run.runnableAt, `parent ${parent.id} (round ${i}) lost its wake-up`)
        assert.strictEqual((yield* a.store.get(child.id).pipe(Effect.map(Option.getOrThrow))).status, "succeeded")
        signalled++
      }
      assert.strictEqual(signalled, 30)
      // the signal's commit went as its own transaction: BEGIN, the lock of both runs, commit, signal, COMMIT
      const [, statements] = yield* log.count(Effect.gen(function*() {
        const parent = yield* claimNew(b.store)
        const child = yield* claimNew(b.store)
        yield* a.store.commit(commitOf(child, {
          transition: {
            status: "succeeded",
            runnableAt: null,
            release: true,
            signal: { runId: parent.id, name: "child", signalId: "once", payload: "1" }
          }
        }))
      }))
      assert.deepStrictEqual(statements.map((text) => text.split(" ").slice(0, 2).join(" ")), [
        "BEGIN",
        "SELECT id",
        "WITH clock",
        "WITH clock",
        "COMMIT"
      ])
    }))

  it.scopedLive("concurrent claims from several pools never take a run twice", () =>
    Effect.gen(function*() {
      const stores = yield* Effect.all(Array.from({ length: 6 }, () => storeOn({}, 4)))
      const id = ns()
      const workflow = `wf-${id}`
      yield* Effect.forEach(
        Array.from({ length: 150 }, (_, i) => `run-${id}-${i}`),
        (runId) => stores[0].store.create({ id: runId, workflow, payload: "{}" }),
        { concurrency: 20 }
      )
      const claimer = (store: WorkflowStore["Type"], worker: string) =>
        Effect.gen(function*() {
          const mine: Array<RunRecord> = []
          while (true) {
            const claimed = yield* store.claim({ workerId: worker, workflows: [workflow], limit: 7, leaseMs: 60_000 })
            if (claimed.length === 0) return mine
            mine.push(...claimed)
          }
        })
      const claims = yield* Effect.all(
        stores.flatMap(({ store }, i) => [claimer(store, `w${i}a`), claimer(store, `w${i}b`)]),
        { concurrency: "unbounded" }
      )
      const ids = claims.flat().map((run) => run.id)
      assert.strictEqual(ids.length, 150)
      assert.strictEqual(new Set(ids).size, 150)
      assert.isAbove(claims.filter((runs) => runs.length > 0).length, 1)
      for (const run of claims.flat()) assert.strictEqual(run.epoch, 1)
    }))

  it.scopedLive("50 concurrent creates of one ID from several pools create one run", () =>
    Effect.gen(function*() {
      const stores = yield* Effect.all(Array.from({ length: 5 }, () => storeOn({}, 10)))
      const id = `run-${ns()}`
      const results = yield* Effect.all(
        Array.from({ length: 50 }, (_, i) => stores[i % 5].store.create({ id, workflow: "wf", payload: `${i}` })),
        { concurrency: "unbounded" }
      )
      assert.strictEqual(results.filter((r) => r.created).length, 1)
      const winner = results.find((r) => r.created)!.run
      for (const r of results) assert.deepStrictEqual(r.run, winner)
      const [{ count }] = yield* stores[0].sql<
        { count: number }
      >`SELECT count(*)::int AS count FROM memento_runs WHERE id = ${id}`
      assert.strictEqual(count, 1)
    }))

  it.scopedLive("migrations are idempotent, concurrent-safe and honour the table prefix", () =>
    Effect.gen(function*() {
      const database = yield* Effect.promise(() => freshDatabase())
      const open = (prefix: string) =>
        build(
          SqlStore.layer({ tablePrefix: prefix }).pipe(Layer.provideMerge(pgClient(database, { maxConnections: 2 })))
        )
      const first = yield* Effect.all([open("tenant_a_"), open("tenant_a_"), open("tenant_a_"), open("tenant_a_")], {
        concurrency: "unbounded"
      })
      const again = yield* open("tenant_a_")
      const other = yield* open("memento_")
      const { sql } = first[0]
      const tables = yield* sql<{ readonly name: string }>`SELECT tablename AS name FROM pg_tables
        WHERE schemaname = 'public' ORDER BY tablename`
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
      const migrations = yield* sql<{ readonly count: number }>`SELECT count(*)::int AS count FROM tenant_a_migrations`
      assert.strictEqual(migrations[0].count, 3)
      assert.deepStrictEqual(
        yield* SqlStore.migrate({ tablePrefix: "tenant_a_" }).pipe(Effect.provideService(SqlClient.SqlClient, sql)),
        []
      )
      yield* again.store.create({ id: "shared-id", workflow: "wf", payload: "\"a\"" })
      assert.isTrue(Option.isNone(yield* other.store.get("shared-id")))
      assert.isTrue((yield* other.store.create({ id: "shared-id", workflow: "wf", payload: "\"b\"" })).created)
      const bad = yield* Effect.exit(Layer.build(
        SqlStore.layer({ tablePrefix: "x; DROP TABLE y" }).pipe(
          Layer.provide(pgClient(database, { maxConnections: 1 }))
        )
      ))
      assert.isTrue(bad._tag === "Failure")
    }))

  it.scopedLive("transaction commits the user's SQL with the journal, and rolls it back on LeaseLost", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn()
      const table = `orders_${ns()}`
      yield* sql`CREATE TABLE ${sql(table)} (id text PRIMARY KEY)`
      const insert = (id: string) => sql`INSERT INTO ${sql(table)} (id) VALUES (${id})`
      const count = Effect.map(
        sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM ${sql(table)}`,
        ([row]) => row.n
      )

      const run = yield* claimNew(store, 300)
      const [, result] = yield* store.transaction(
        Effect.as(insert("first"), "ok"),
        (value) => commitOf(run, { leaseMs: 300, entries: [{ ...entry("tx", 1, "succeeded"), output: `"${value}"` }] })
      )
      assert.deepStrictEqual(result, { cancelRequested: false })
      assert.strictEqual(yield* count, 1)

      // the user's effect fails: its SQL is rolled back, nothing is journaled
      const failed = yield* Effect.flip(store.transaction(
        Effect.zipRight(insert("second"), Effect.fail("declined" as const)),
        () => commitOf(run, { entries: [entry("tx2", 2, "succeeded")] })
      ))
      assert.strictEqual(failed, "declined")
      assert.strictEqual(yield* count, 1)

      // the lease is lost while the step runs: its SQL is rolled back with the refused commit
      yield* Effect.sleep("500 millis")
      yield* store.claim({ workerId: "worker-b", workflows: [run.workflow], limit: 1, leaseMs: 60_000 })
      const lost = yield* Effect.flip(store.transaction(
        insert("third"),
        () => commitOf(run, { entries: [entry("tx2", 2, "succeeded")] })
      ))
      assert.instanceOf(lost, LeaseLost)
      assert.strictEqual(yield* count, 1)
      const details = yield* store.inspect(run.id)
      assert.deepStrictEqual(details.entries.map((e) => e.key), ["tx"])

      // the user's own SqlError stays the user's error (not a StoreError)
      const run2 = yield* claimNew(store)
      const duplicate = yield* Effect.flip(store.transaction(insert("first"), () => commitOf(run2)))
      assert.strictEqual(duplicate._tag, "SqlError")
    }))

  it.scopedLive("a create that asks for a claim inside the caller's transaction creates the run pending, unclaimed", () =>
    Effect.flatMap(storeOn(), claimedCreateInTransaction))

  it.scopedLive("corrupt rows fail with a typed error naming the run, not a crash", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn()
      const run = yield* claimNew(store)
      yield* store.commit(commitOf(run, { entries: [entry("a", 1, "succeeded")] }))
      yield* sql`UPDATE memento_journal SET kind = 'bogus' WHERE run_id = ${run.id}`
      // the engine's load: damaged data (it parks the run), not a failing store (it would retry)
      const loadError = yield* Effect.flip(store.load(run.id))
      assert.instanceOf(loadError, JournalDecodeError)
      assert.strictEqual((loadError as JournalDecodeError).workflowId, run.id)
      assert.strictEqual((loadError as JournalDecodeError).stepKey, "a")
      assert.include(loadError.message, run.id)
      const inspectError = yield* Effect.flip(store.inspect(run.id))
      assert.instanceOf(inspectError, StoreError)
      assert.strictEqual((inspectError as StoreError).operation, "inspect")

      const other = yield* claimNew(store)
      yield* sql`UPDATE memento_runs SET status = 'exploded' WHERE id = ${other.id}`
      const getError = yield* Effect.flip(store.get(other.id))
      assert.instanceOf(getError, StoreError)
      assert.include(getError.message, other.id)
      const listError = yield* Effect.flip(store.list({ workflow: other.workflow }))
      assert.include(listError.message, other.id)
      // a corrupt run never blocks claiming the others
      const fine = yield* claimNew(store)
      assert.strictEqual(fine.status, "running")
    }))

  it.scopedLive("LISTEN delivers hints across pools and survives a killed connection", () =>
    Effect.gen(function*() {
      const a = yield* storeOn()
      const b = yield* storeOn()
      const id = ns()
      const next = (workflow: string) =>
        b.store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === workflow),
          Stream.runHead,
          Effect.fork
        )
      const first = yield* next(`wf-${id}-1`)
      yield* Effect.sleep("300 millis")
      yield* a.store.create({ id: `run-${id}-1`, workflow: `wf-${id}-1`, payload: "{}" })
      assert.isTrue(Option.isSome(yield* Fiber.join(first).pipe(Effect.timeout("5 seconds"))))

      // kill the listening connection: the hub reconnects by itself
      const keep = yield* b.store.events.pipe(Stream.runDrain, Effect.fork)
      yield* Effect.sleep("300 millis")
      const killed = yield* a.sql<{ readonly n: number }>`SELECT count(pg_terminate_backend(pid))::int AS n
        FROM pg_stat_activity WHERE application_name = 'memento-listen' AND datname = current_database()`
      assert.isAbove(killed[0].n, 0)
      yield* Effect.sleep("500 millis")
      const second = yield* next(`wf-${id}-2`)
      yield* Effect.sleep("300 millis")
      yield* a.store.create({ id: `run-${id}-2`, workflow: `wf-${id}-2`, payload: "{}" })
      assert.isTrue(Option.isSome(yield* Fiber.join(second).pipe(Effect.timeout("5 seconds"))))
      yield* Fiber.interrupt(keep)
    }))

  it.scopedLive("layerPg and layerPgConfig build a client and a migrated store", () =>
    Effect.gen(function*() {
      const database = yield* Effect.promise(() => freshDatabase())
      const direct = yield* build(SqlStore.layerPg({ url: database, maxConnections: 2 }))
      assert.isTrue((yield* direct.store.create({ id: "a", workflow: "wf", payload: "{}" })).created)
      const fromConfig = yield* build(SqlStore.layerPgConfig({ maxConnections: 2 })).pipe(
        Effect.withConfigProvider(ConfigProvider.fromMap(new Map([["DATABASE_URL", database]])))
      )
      assert.isFalse((yield* fromConfig.store.create({ id: "a", workflow: "wf", payload: "{}" })).created)
    }))

  it.scopedLive("warns when the server may lose acknowledged commits (synchronous_commit off), not otherwise", () =>
    Effect.gen(function*() {
      const warningsOn = (database: string) =>
        Effect.gen(function*() {
          const warnings: Array<string> = []
          const logger = Logger.replace(
            Logger.defaultLogger,
            Logger.make(({ logLevel, message }) => {
              if (logLevel._tag === "Warning") {
                warnings.push((List.isList(message) ? List.toArray(message) : [message]).map(String).join(" "))
              }
            })
          )
          yield* build(SqlStore.layerPg({ url: database, maxConnections: 2 })).pipe(Effect.provide(logger))
          return warnings
        })
      assert.deepStrictEqual(yield* warningsOn(url), [])
      const lossy = yield* Effect.promise(() => freshDatabase())
      const { sql } = yield* build(SqlStore.layer().pipe(Layer.provideMerge(pgClient(lossy, { maxConnections: 1 }))))
      const [{ name }] = yield* sql<{ readonly name: string }>`SELECT current_database() AS name`
      yield* sql.unsafe(`ALTER DATABASE "${name}" SET synchronous_commit = off`)
      const warnings = yield* warningsOn(lossy)
      assert.strictEqual(warnings.length, 1, warnings.join("\n"))
      assert.include(warnings[0], "synchronous_commit is off")
    }))
})

/**
 * The store and its connection pool. An operation interrupted while it waits for a pooled
 * connection must not keep that connection once the pool hands it over (a connection taken with
 * `SqlClient.reserve` by a fiber interrupted during the wait is never released by `@effect/sql-pg`;
 * with a small pool a worker would then wait forever). And the hot statements are named prepared
 * statements that keep one generic plan: a text whose estimates depend on its parameter values can
 * make Postgres plan every execution anew, which cost more than the statement itself (the fenced
 * commit of one run took ~1 ms instead of ~0.5 ms that way once the runs table held a few thousand
 * analyzed rows).
 */
describe("SqlStore on Postgres: connections and plans", () => {
  it.scopedLive("an operation interrupted while it waits for a connection gives the connection back", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* storeOn({}, 1)
      const { run } = yield* store.create({ id: "pool-1", workflow: "pool", payload: "{}" })

      for (let round = 0; round < 3; round++) {
        // the pool's only connection is busy in a transaction
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sql.withTransaction(Effect.zipRight(sql`SELECT 1`, Deferred.await(release))))
        yield* Effect.sleep("50 millis")
        // a load waits for it, and is interrupted while it waits
        const waiting = yield* Effect.fork(store.load(run.id))
        yield* Effect.sleep("50 millis")
        yield* Fiber.interruptFork(waiting)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* Fiber.await(waiting).pipe(Effect.timeout("5 seconds"))
        // the connection the interrupted load was given goes back to the pool
        const after = yield* store.load(run.id).pipe(Effect.timeout("5 seconds"), Effect.either)
        assert.isTrue(Either.isRight(after), `round ${round}: the pool's connection was not given back`)
      }
    }))

  it.scopedLive("creates and commits keep one generic plan on a table of thousands of runs", () =>
    Effect.gen(function*() {
      // one connection: every statement below is prepared, planned and executed on it
      const { sql, store } = yield* storeOn({}, 1)
      yield* sql`INSERT INTO memento_runs (id, workflow, status, payload, created_at, updated_at, completed_at)
        SELECT 'finished-' || g, 'plans', 'succeeded', '{}', g, g, g FROM generate_series(1, 5000) g`
      yield* sql`ANALYZE memento_runs`

      const n = 40
      for (let i = 0; i < n; i++) {
        const { run } = yield* store.create({
          id: `plans-${i}`,
          workflow: "plans",
          payload: "{}",
          claim: { workerId: "w", leaseMs: 60_000 }
        })
        const startedAt = 1_000 + i
        // the first step's start marker
        const start: Pick<Commit, "leaseMs" | "entries" | "attempts"> = {
          leaseMs: 60_000,
          entries: [{
            key: "a",
            seq: 1,
            kind: "step",
            status: "started",
            output: null,
            error: null,
            meta: null,
            attempts: 1,
            startedAt,
            completedAt: null
          }],
          attempts: [{ key: "a", attempt: 1, outcome: "running", error: null, startedAt, endedAt: null }]
        }
        yield* store.commit({ runId: run.id, epoch: run.epoch, ...start })
        // a run created by its first commit (execute with a worker in the same process)
        yield* store.commit({
          runId: `plans-new-${i}`,
          epoch: 1,
          ...start,
          create: { workflow: "plans", payload: "{}", workerId: "w" }
        })
      }

      const plans = yield* sql<{ readonly statement: string; readonly generic: number; readonly custom: number }>`
        SELECT statement, generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements`
      const commit = plans.find((p) => p.statement.includes("fence AS") && !p.statement.includes("ins AS ("))
      const createCommit = plans.find((p) => p.statement.includes("fence AS") && p.statement.includes("ins AS ("))
      const create = plans.find((p) =>
        p.statement.includes("INSERT INTO memento_runs") && !p.statement.includes("fence AS")
      )
      assert.isDefined(commit, "the commit is a prepared statement")
      assert.isDefined(createCommit, "the commit that creates its run is a prepared statement")
      assert.isDefined(create, "the create is a prepared statement")
      // Postgres makes custom plans for the first five executions, then keeps the generic one
      for (
        const [name, p] of [["commit", commit!], ["commit with create", createCommit!], ["create", create!]] as const
      ) {
        assert.strictEqual(p.generic + p.custom, n, `${name}: executions`)
        assert.isAtMost(p.custom, 5, `${name}: planned ${p.custom} of ${n} executions anew`)
      }
    }))
})
