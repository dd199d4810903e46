/**
 * JSON views of runs for the admin API and the dashboard: stored JSON text parsed, times as
 * ISO 8601, and the run's error put into words.
 */
import type { WorkflowStore } from "@memento/workflow"
import { WorkflowError } from "@memento/workflow"

/** Parses stored JSON text; text that is not JSON (a corrupt row) is returned as it is. */
export const parseJson = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

export const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

/** An encoded error in words: `Tag: message`, or `Tag {fields}` when it has no `message`. */
export const describeValue: (value: unknown) => string = WorkflowError.describeEncoded

/** A run's `error` column (a RunError: Failure, Cancelled or Parked) in words. */
export const describeRunError: (text: string | null) => string | null = WorkflowError.describeRunError

/**
 * A run as the admin API returns it.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunView {
  readonly id: string
  readonly workflow: string
  readonly status: WorkflowStore.RunStatus
  readonly payload: unknown
  readonly output: unknown
  readonly error: unknown
  readonly errorMessage: string | null
  readonly epoch: number
  readonly leaseOwner: string | null
  readonly leaseExpiresAt: string | null
  readonly runnableAt: string | null
  readonly cancelRequested: boolean
  readonly recoveries: number
  readonly parentId: string | null
  readonly createdAt: string
  readonly updatedAt: string
  readonly completedAt: string | null
}

export const runView = (run: WorkflowStore.RunRecord): RunView => ({
  id: run.id,
  workflow: run.workflow,
  status: run.status,
  payload: parseJson(run.payload),
  output: parseJson(run.output),
  error: parseJson(run.error),
  errorMessage: describeRunError(run.error),
  epoch: run.epoch,
  leaseOwner: run.leaseOwner,
  leaseExpiresAt: iso(run.leaseExpiresAt),
  runnableAt: iso(run.runnableAt),
  cancelRequested: run.cancelRequested,
  recoveries: run.recoveries,
  parentId: run.parentId,
  createdAt: iso(run.createdAt)!,
  updatedAt: iso(run.updatedAt)!,
  completedAt: iso(run.completedAt)
})

const entryView = (entry: WorkflowStore.JournalEntry) => ({
  key: entry.key,
  seq: entry.seq,
  kind: entry.kind,
  status: entry.status,
  output: parseJson(entry.output),
  error: parseJson(entry.error),
  errorMessage: entry.error === null ? null : describeValue(parseJson(entry.error)),
  attempts: entry.attempts,
  meta: parseJson(entry.meta),
  startedAt: iso(entry.startedAt)!,
  completedAt: iso(entry.completedAt),
  durationMs: entry.completedAt === null ? null : entry.completedAt - entry.startedAt
})

const attemptView = (attempt: WorkflowStore.AttemptRecord) => ({
  key: attempt.key,
  attempt: attempt.attempt,
  outcome: attempt.outcome,
  error: attempt.error,
  startedAt: iso(attempt.startedAt)!,
  endedAt: iso(attempt.endedAt),
  durationMs: attempt.endedAt === null ? null : attempt.endedAt - attempt.startedAt
})

/**
 * A journal entry as the admin API returns it.
 *
 * @since 0.1.0
 * @category models
 */
export type EntryView = ReturnType<typeof entryView>

/**
 * An execution-log row (one attempt of a step) as the admin API returns it.
 *
 * @since 0.1.0
 * @category models
 */
export type AttemptView = ReturnType<typeof attemptView>

/**
 * Everything about one run as `GET /api/runs/:id` returns it.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunDetailsView {
  readonly run: RunView
  readonly entries: ReadonlyArray<EntryView>
  readonly attempts: ReadonlyArray<AttemptView>
  readonly archivedEntries: ReadonlyArray<EntryView & { readonly generation: number; readonly archivedAt: string }>
  readonly archivedAttempts: ReadonlyArray<AttemptView & { readonly generation: number }>
  readonly signals: ReadonlyArray<{
    readonly name: string
    readonly signalId: string
    readonly payload: unknown
    readonly seq: number
    readonly receivedAt: string
  }>
  readonly children: ReadonlyArray<RunView>
}

const bySeq = <A extends { readonly seq: number }>(items: ReadonlyArray<A>): Array<A> =>
  [...items].sort((a, b) => a.seq - b.seq)

const byAttempt = <A extends { readonly key: string; readonly attempt: number; readonly startedAt: number }>(
  items: ReadonlyArray<A>
): Array<A> => [...items].sort((a, b) => a.startedAt - b.startedAt || a.attempt - b.attempt)

export const detailsView = (details: WorkflowStore.RunDetails): RunDetailsView => ({
  run: runView(details.run),
  entries: bySeq(details.entries).map(entryView),
  attempts: byAttempt(details.attempts).map(attemptView),
  archivedEntries: [...details.archivedEntries]
    .sort((a, b) => a.generation - b.generation || a.seq - b.seq)
    .map((entry) => ({ ...entryView(entry), generation: entry.generation, archivedAt: iso(entry.archivedAt)! })),
  archivedAttempts: byAttempt(details.archivedAttempts).map((attempt) => ({
    ...attemptView(attempt),
    generation: attempt.generation
  })),
  signals: bySeq(details.signals).map((signal) => ({
    name: signal.name,
    signalId: signal.signalId,
    payload: parseJson(signal.payload),
    seq: signal.seq,
    receivedAt: iso(signal.receivedAt)!
  })),
  children: details.children.map(runView)
})
