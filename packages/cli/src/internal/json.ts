/**
 * Machine-readable output of the CLI (`--json`): stored JSON text parsed, times as ISO strings.
 */
import type {
  ArchivedEntry,
  AttemptRecord,
  JournalEntry,
  RunDetails,
  RunPage,
  RunRecord,
  SignalRecord
} from "@memento/workflow/WorkflowStore"
import { parseJson } from "./format.js"

const iso = (ms: number | null): string | null => ms === null ? null : new Date(ms).toISOString()

export const run = (run: RunRecord) => ({
  id: run.id,
  workflow: run.workflow,
  status: run.status,
  payload: parseJson(run.payload),
  output: parseJson(run.output),
  error: parseJson(run.error),
  epoch: run.epoch,
  leaseOwner: run.leaseOwner,
  leaseExpiresAt: iso(run.leaseExpiresAt),
  runnableAt: iso(run.runnableAt),
  cancelRequested: run.cancelRequested,
  recoveries: run.recoveries,
  parentId: run.parentId,
  createdAt: iso(run.createdAt),
  updatedAt: iso(run.updatedAt),
  completedAt: iso(run.completedAt)
})

const attempt = (attempt: AttemptRecord) => ({
  attempt: attempt.attempt,
  outcome: attempt.outcome,
  error: attempt.error,
  startedAt: iso(attempt.startedAt),
  endedAt: iso(attempt.endedAt),
  durationMs: attempt.endedAt === null ? null : attempt.endedAt - attempt.startedAt
})

const entry = (entry: JournalEntry, attempts: ReadonlyArray<AttemptRecord>) => ({
  key: entry.key,
  seq: entry.seq,
  kind: entry.kind,
  status: entry.status,
  output: parseJson(entry.output),
  error: parseJson(entry.error),
  meta: parseJson(entry.meta),
  startedAt: iso(entry.startedAt),
  completedAt: iso(entry.completedAt),
  durationMs: entry.completedAt === null ? null : entry.completedAt - entry.startedAt,
  attempts: attempts
    .filter((a) => a.key === entry.key)
    .sort((a, b) => a.attempt - b.attempt)
    .map(attempt)
})

const signal = (signal: SignalRecord) => ({
  name: signal.name,
  signalId: signal.signalId,
  payload: parseJson(signal.payload),
  seq: signal.seq,
  receivedAt: iso(signal.receivedAt)
})

export const page = (page: RunPage) => ({ runs: page.runs.map(run), nextCursor: page.nextCursor })

/** A run's details: entries in `seq` order with their attempts; archived entries grouped by generation. */
export const details = (details: RunDetails) => {
  const bySeq = <E extends JournalEntry>(entries: ReadonlyArray<E>) => [...entries].sort((a, b) => a.seq - b.seq)
  const generations = [...new Set(details.archivedEntries.map((e) => e.generation))].sort((a, b) => a - b)
  return {
    run: run(details.run),
    entries: bySeq(details.entries).map((e) => entry(e, details.attempts)),
    archived: generations.map((generation) => {
      const entries: ReadonlyArray<ArchivedEntry> = details.archivedEntries.filter((e) => e.generation === generation)
      const attempts = details.archivedAttempts.filter((a) => a.generation === generation)
      return {
        generation,
        archivedAt: iso(Math.min(...entries.map((e) => e.archivedAt))),
        entries: bySeq(entries).map((e) => entry(e, attempts))
      }
    }),
    signals: [...details.signals].sort((a, b) => a.seq - b.seq).map(signal),
    children: details.children.map(run)
  }
}
