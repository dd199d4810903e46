/**
 * The Postgres store's hot statements are named prepared statements: each connection plans them
 * once and reuses that generic plan. A text whose estimates depend on its parameter values can make
 * Postgres plan every execution anew (a "custom plan"), which costs more than the statement itself:
 * the fenced commit of one run took ~1 ms instead of ~0.5 ms that way once the runs table held a
 * few thousand analyzed rows.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Context, Effect, Layer } from "effect"
import { freshDatabase, pgClient } from "./utils/database.js"

const url = await freshDatabase()

describe("Postgres store: statement plans", () => {
  it.scopedLive("creates and commits keep one generic plan on a table of thousands of runs", () =>
    Effect.gen(function*() {
      // one connection: every statement below is prepared, planned and executed on it
      const context = yield* Layer.build(SqlStore.layer().pipe(Layer.provideMerge(pgClient(url, { maxConnections: 1 }))))
      const store = Context.get(context, WorkflowStore)
      const sql = Context.get(context, SqlClient.SqlClient)
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
        yield* store.commit({
          runId: run.id,
          epoch: run.epoch,
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
        })
      }

      const plans = yield* sql<{ readonly statement: string; readonly generic: number; readonly custom: number }>`
        SELECT statement, generic_plans::int AS generic, custom_plans::int AS custom FROM pg_prepared_statements`
      const commit = plans.find((p) => p.statement.includes("fence AS"))
      const create = plans.find((p) => p.statement.includes("INSERT INTO memento_runs"))
      assert.isDefined(commit, "the commit is a prepared statement")
      assert.isDefined(create, "the create is a prepared statement")
      // Postgres makes custom plans for the first five executions, then keeps the generic one
      for (const [name, p] of [["commit", commit!], ["create", create!]] as const) {
        assert.strictEqual(p.generic + p.custom, n, `${name}: executions`)
        assert.isAtMost(p.custom, 5, `${name}: planned ${p.custom} of ${n} executions anew`)
      }
    }))
})
