/**
 * Checks of the SQL stores' behaviour inside a caller's transaction, shared by the Postgres and
 * SQLite tests.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { assert } from "@effect/vitest"
import type { StoreError } from "@memento/workflow/WorkflowError"
import type { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Effect } from "effect"

const ns = () => Math.random().toString(36).slice(2, 10)

/**
 * A create that asks for a claim (`NewRun.claim`) inside the caller's transaction creates the run
 * pending and unclaimed: nobody could commit to a run that is invisible until the transaction
 * commits. Outside a transaction the same request claims.
 */
export const claimedCreateInTransaction = (
  { sql, store }: { readonly sql: SqlClient.SqlClient; readonly store: WorkflowStore["Type"] }
): Effect.Effect<void, StoreError | SqlError> =>
  Effect.gen(function*() {
    const id = `tx-create-${ns()}`
    const { created, run } = yield* sql.withTransaction(
      store.create({ id, workflow: `wf-${ns()}`, payload: "{}", claim: { workerId: "local", leaseMs: 60_000 } })
    )
    assert.isTrue(created)
    assert.strictEqual(run.status, "pending")
    assert.strictEqual(run.epoch, 0)
    assert.isNull(run.leaseOwner)
    const claimed = yield* store.create({
      id: `${id}-2`,
      workflow: run.workflow,
      payload: "{}",
      claim: { workerId: "local", leaseMs: 60_000 }
    })
    assert.strictEqual(claimed.run.status, "running")
    assert.strictEqual(claimed.run.leaseOwner, "local")
  })
