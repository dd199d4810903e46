import type { Scope } from "effect"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"
import * as Tracing from "../Tracing.js"
import type { StoreError } from "../WorkflowError.js"
import type { RunStatus } from "../WorkflowStore.js"
import { terminalStatuses, WorkflowStore } from "../WorkflowStore.js"

export interface PurgeRequest {
  readonly olderThan: Duration.DurationInput
  readonly statuses?: ReadonlyArray<RunStatus> | undefined
  readonly batchSize?: number | undefined
}

export interface PeriodicPurge extends PurgeRequest {
  readonly every: Duration.DurationInput
}

export const defaultBatchSize = 1_000

/**
 * Deletes finished runs that completed more than `olderThan` ago, one store transaction per batch,
 * until a batch deletes fewer runs than `batchSize`. The cut-off is fixed when the purge starts, so
 * runs that finish meanwhile are left for the next purge. Other fibers run between batches.
 */
export const purgeAll = (
  store: WorkflowStore["Type"],
  request: PurgeRequest
): Effect.Effect<number, StoreError> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const completedBefore = now - Duration.toMillis(Duration.decode(request.olderThan))
    const statuses = request.statuses ?? terminalStatuses
    const limit = Math.max(1, Math.floor(request.batchSize ?? defaultBatchSize))
    let total = 0
    while (true) {
      const deleted = yield* store.purge({ completedBefore, statuses, limit })
      total += deleted
      if (deleted < limit) return total
      yield* Effect.yieldNow()
    }
  }).pipe(Tracing.withSpan("memento.purge"))

/**
 * The worker's periodic purge: one `purgeAll` when the worker starts, then one every `every`.
 * A failed purge is logged and tried again at the next period; it never stops the worker.
 */
export const periodic = (
  options: PeriodicPurge | undefined
): Effect.Effect<void, never, Scope.Scope | WorkflowStore> =>
  options === undefined ? Effect.void : Effect.gen(function*() {
    const store = yield* WorkflowStore
    yield* purgeAll(store, options).pipe(
      Effect.tap((deleted) => deleted > 0 ? Effect.logInfo(`purged ${deleted} finished runs`) : Effect.void),
      Effect.catchAll((error) => Effect.logWarning(`periodic purge failed: ${error.message}`)),
      Effect.repeat(Schedule.spaced(options.every)),
      Effect.annotateLogs("memento.purge", "periodic"),
      Effect.forkScoped
    )
  })
