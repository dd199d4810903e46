/**
 * Commit batching on Postgres: commits of concurrent runs share one statement, yet each stays
 * fenced on its own run (a lost lease fails only that run's commit), a commit that breaks the
 * statement fails alone, the commits of one run never share a batch, and a commit whose caller is
 * interrupted while it waits for a batch is dropped.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { LeaseLost, StoreError } from "@memento/workflow/WorkflowError"
import type { Commit, JournalEntry, RunRecord } from "@memento/workflow/WorkflowStore"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Context, Deferred, Effect, Either, Fiber, Layer } from "effect"
import { countingPgClient, freshDatabase } from "./utils/database.js"

const url = await freshDatabase()

const ns = () => Math.random().toString(36).slice(2, 10)

const build = Effect.gen(function*() {
  const { client, log } = countingPgClient(url)
  const context = yield* Layer.build(SqlStore.layer().pipe(Layer.provideMerge(client)))
  return { store: Context.get(context, WorkflowStore), sql: Context.get(context, SqlClient.SqlClient), log }
})

const entry = (key: string, seq: number, output = "\"ok\""): JournalEntry => ({
  key,
  seq,
  kind: "step",
  status: "succeeded",
  output,
  error: null,
  attempts: 1,
  meta: null,
  startedAt: 1_000 + seq,
  completedAt: 2_000 + seq
})

const commitOf = (run: RunRecord, entries: ReadonlyArray<JournalEntry>, epoch = run.epoch): Commit => ({
  runId: run.id,
  epoch,
  leaseMs: 60_000,
  entries,
  attempts: []
})

const claimMany = (store: WorkflowStore["Type"], n: number) =>
  Effect.gen(function*() {
    const workflow = `wf-${ns()}`
    for (let i = 0; i < n; i++) yield* store.create({ id: `${workflow}-${i}`, workflow, payload: "{}" })
    const runs = yield* store.claim({ workerId: "w", workflows: [workflow], limit: n, leaseMs: 60_000 })
    assert.strictEqual(runs.length, n)
    return runs
  })

describe("commit batching on Postgres", () => {
  it.scopedLive("concurrent commits share statements; a stale epoch fails only its own run", () =>
    Effect.gen(function*() {
      const { log, store } = yield* build
      const runs = yield* claimMany(store, 40)
      const stale = 17
      const [results, statements] = yield* log.count(Effect.all(
        runs.map((run, i) =>
          Effect.either(store.commit(commitOf(run, [entry(`step-${i}`, 1)], i === stale ? run.epoch + 1 : run.epoch)))
        ),
        { concurrency: "unbounded" }
      ))
      results.forEach((result, i) => {
        if (i === stale) assert.isTrue(Either.isLeft(result) && result.left instanceof LeaseLost, `run ${i}`)
        else assert.isTrue(Either.isRight(result), `run ${i}`)
      })
      assert.isBelow(statements.length, 10, "40 concurrent commits took " + statements.length + " statements")
      for (const [i, run] of runs.entries()) {
        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.entries.map((e) => e.key), i === stale ? [] : [`step-${i}`])
      }
    }))

  it.scopedLive("a commit that breaks the statement fails alone; the rest of its batch commits", () =>
    Effect.gen(function*() {
      const { store } = yield* build
      const runs = yield* claimMany(store, 12)
      const broken = 6
      // Postgres text cannot hold NUL: this commit makes the statement fail.
      const results = yield* Effect.all(
        runs.map((run, i) =>
          Effect.either(store.commit(commitOf(run, [entry("a", 1, i === broken ? "\u0000" : "\"ok\"")])))
        ),
        { concurrency: "unbounded" }
      )
      results.forEach((result, i) => {
        if (i === broken) assert.isTrue(Either.isLeft(result) && result.left instanceof StoreError, `run ${i}`)
        else assert.isTrue(Either.isRight(result), `run ${i}`)
      })
      for (const [i, run] of runs.entries()) {
        const details = yield* store.inspect(run.id)
        assert.strictEqual(details.entries.length, i === broken ? 0 : 1, `run ${i}`)
      }
    }))

  it.scopedLive("a commit whose caller is interrupted while it is queued is dropped; the others complete", () =>
    Effect.gen(function*() {
      const { sql, store } = yield* build
      const [a, b, c, d] = yield* claimMany(store, 4)
      // Another transaction holds the rows of a and b: their commits, one per batch slot (two), wait
      // for it, so the commits of c and d queue up behind them.
      const locked = yield* Deferred.make<void>()
      const release = yield* Deferred.make<void>()
      const holder = yield* Effect.fork(sql.withTransaction(Effect.gen(function*() {
        yield* sql`SELECT id FROM memento_runs WHERE id IN (${a.id}, ${b.id}) FOR UPDATE`
        yield* Deferred.succeed(locked, undefined)
        yield* Deferred.await(release)
      })))
      yield* Deferred.await(locked)
      const busy = yield* Effect.forEach([a, b], (run) => Effect.fork(store.commit(commitOf(run, [entry("x", 1)]))))
      yield* Effect.sleep("200 millis")
      const queued = yield* Effect.forEach([c, d], (run) => Effect.fork(store.commit(commitOf(run, [entry("x", 1)]))))
      yield* Effect.sleep("200 millis")
      yield* Fiber.interrupt(queued[0])
      yield* Deferred.succeed(release, undefined)
      yield* Fiber.join(holder)
      for (const fiber of busy) yield* Fiber.join(fiber)
      yield* Fiber.join(queued[1])
      assert.deepStrictEqual((yield* store.inspect(a.id)).entries.map((e) => e.key), ["x"])
      assert.deepStrictEqual((yield* store.inspect(b.id)).entries.map((e) => e.key), ["x"])
      assert.deepStrictEqual((yield* store.inspect(c.id)).entries, [], "the interrupted commit was not sent")
      assert.deepStrictEqual((yield* store.inspect(d.id)).entries.map((e) => e.key), ["x"])
    }))

  it.scopedLive("commits of one run keep their order and never share a batch", () =>
    Effect.gen(function*() {
      const { log, store } = yield* build
      const runs = yield* claimMany(store, 8)
      const [first] = runs
      // every commit of `first` rewrites the same entry: the last one submitted must win
      const commits = [
        ...runs.map((run) => commitOf(run, [entry("a", 1, "\"0\"")])),
        ...[1, 2, 3, 4].map((k) => commitOf(first, [entry("a", 1, `"${k}"`)]))
      ]
      const [, statements] = yield* log.countWithValues(
        Effect.all(commits.map((c) => store.commit(c)), { concurrency: "unbounded" })
      )
      const details = yield* store.inspect(first.id)
      assert.strictEqual(details.entries[0].output, "\"4\"")
      for (const statement of statements) {
        const input = JSON.parse(String(statement.values[0])) as ReadonlyArray<{ readonly run_id: string }>
        const ids = input.map((row) => row.run_id)
        assert.strictEqual(new Set(ids).size, ids.length, "a run twice in one batch")
      }
    }))
})
