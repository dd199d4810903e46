/**
 * The storage port of Memento. The replay engine needs nothing else from a database; `MemoryStore`
 * and `@memento/sql`'s `SqlStore` implement it and pass the same conformance suite.
 *
 * The port is shaped for one round trip per step on the happy path: a run's whole journal loads
 * with `load`, and every journal change of a step (its start marker, the previous step's result,
 * execution-log rows, a status change) goes to the database as one fenced `commit`.
 *
 * All values (payloads, outputs, errors, signal payloads) cross the port as JSON text already
 * encoded with the workflow's Schemas. Times are epoch milliseconds.
 *
 * @since 0.1.0
 */
import type { Effect, Option, Stream } from "effect"
import * as Context from "effect/Context"
import type { InvalidRunState, JournalDecodeError, LeaseLost, RunNotFound, StoreError } from "./WorkflowError.js"

/**
 * @since 0.1.0
 * @category models
 */
export type RunStatus =
  | "pending"
  | "running"
  | "sleeping"
  | "waiting"
  | "succeeded"
  | "failed"
  | "compensating"
  | "compensated"
  | "cancelled"
  | "needs_attention"
  | "dead"

/**
 * Statuses after which a run never executes again (unless retried by an operator).
 *
 * @since 0.1.0
 * @category models
 */
export const terminalStatuses: ReadonlyArray<RunStatus> = ["succeeded", "failed", "compensated", "cancelled"]

/**
 * Statuses of runs that need an operator (`resume`).
 *
 * @since 0.1.0
 * @category models
 */
export const parkedStatuses: ReadonlyArray<RunStatus> = ["needs_attention", "dead"]

/**
 * Every status, in lifecycle order.
 *
 * @since 0.1.0
 * @category models
 */
export const allStatuses: ReadonlyArray<RunStatus> = [
  "pending",
  "running",
  "sleeping",
  "waiting",
  "compensating",
  "succeeded",
  "failed",
  "compensated",
  "cancelled",
  "needs_attention",
  "dead"
]

/**
 * One workflow run. `runnableAt` is when the run may next be claimed (`null`: not claimable, e.g.
 * finished or waiting for a signal without timeout); a run is claimable when `runnableAt <= now`
 * and it has no live lease. `epoch` increases with every claim and fences every write.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunRecord {
  readonly id: string
  readonly workflow: string
  readonly status: RunStatus
  readonly payload: string
  readonly output: string | null
  readonly error: string | null
  readonly epoch: number
  readonly leaseOwner: string | null
  readonly leaseExpiresAt: number | null
  readonly runnableAt: number | null
  readonly cancelRequested: boolean
  readonly recoveries: number
  readonly parentId: string | null
  readonly createdAt: number
  readonly updatedAt: number
  readonly completedAt: number | null
}

/**
 * @since 0.1.0
 * @category models
 */
export type EntryKind = "step" | "transaction" | "compensation" | "sleep" | "signal" | "patch" | "child"

/**
 * @since 0.1.0
 * @category models
 */
export type EntryStatus = "started" | "succeeded" | "failed"

/**
 * One journal row, keyed by (run ID, `key`). `seq` orders entries by first start. A `started`
 * entry marks a step whose body began but whose result was never journaled (a crash or a
 * suspension); `succeeded` and `failed` entries are results replayed without running the step.
 * `meta` holds kind-specific JSON (a sleep's wake time, the signal a wait consumed, ...).
 *
 * @since 0.1.0
 * @category models
 */
export interface JournalEntry {
  readonly key: string
  readonly seq: number
  readonly kind: EntryKind
  readonly status: EntryStatus
  readonly output: string | null
  readonly error: string | null
  readonly attempts: number
  readonly meta: string | null
  readonly startedAt: number
  readonly completedAt: number | null
}

/**
 * @since 0.1.0
 * @category models
 */
export type AttemptOutcome = "running" | "succeeded" | "failed" | "retrying" | "interrupted"

/**
 * One execution-log row: an attempt of a step, keyed by (run ID, `key`, `attempt`). Attempts
 * whose worker died keep the outcome `running` forever; `inspect` reports them as they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface AttemptRecord {
  readonly key: string
  readonly attempt: number
  readonly outcome: AttemptOutcome
  readonly error: string | null
  readonly startedAt: number
  readonly endedAt: number | null
}

/**
 * A signal stored for a run. `(runId, signalId)` is unique: a repeated signal ID is ignored.
 *
 * @since 0.1.0
 * @category models
 */
export interface SignalRecord {
  readonly name: string
  readonly signalId: string
  readonly payload: string
  readonly seq: number
  readonly receivedAt: number
}

/**
 * A run with its whole journal and its signals: what a replay needs, loaded in one call.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunSnapshot {
  readonly run: RunRecord
  readonly entries: ReadonlyArray<JournalEntry>
  readonly signals: ReadonlyArray<SignalRecord>
}

/**
 * A journal entry set aside by `retry`: it no longer replays, but stays in the execution log.
 * `generation` numbers the retries of the run (1 for entries archived by the first retry).
 *
 * @since 0.1.0
 * @category models
 */
export interface ArchivedEntry extends JournalEntry {
  readonly generation: number
  readonly archivedAt: number
}

/**
 * An attempt of an archived entry, kept with the same `generation`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ArchivedAttempt extends AttemptRecord {
  readonly generation: number
}

/**
 * Everything about one run, for people: journal, execution log (current and archived by retries),
 * signals and child runs.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunDetails extends RunSnapshot {
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly archivedEntries: ReadonlyArray<ArchivedEntry>
  readonly archivedAttempts: ReadonlyArray<ArchivedAttempt>
  /** Runs whose `parentId` is this run, oldest first. */
  readonly children: ReadonlyArray<RunRecord>
}

/**
 * A change of a run's status, written in the same fenced commit as the journal rows.
 * `release: true` drops the lease (the run sleeps, waits, finishes or is parked).
 * `output` and `error`, when present, replace the stored ones; `completedAt` is set by the store
 * for terminal and parked statuses.
 *
 * @since 0.1.0
 * @category models
 */
export interface RunTransition {
  readonly status: RunStatus
  readonly runnableAt: number | null
  readonly release: boolean
  readonly output?: string | null | undefined
  readonly error?: string | null | undefined
  /**
   * For a run that starts waiting for a signal: the highest signal `seq` the engine has seen. If
   * the run has a signal with a greater `seq` when the commit applies (it arrived meanwhile), the
   * store sets `runnableAt` to now instead, so no wake-up is lost.
   */
  readonly signalSeenSeq?: number | undefined
  /**
   * A signal delivered in the same atomic write (a child run telling its parent it finished):
   * stored unless its `signalId` exists for the target run, and the target is woken if it waits
   * (with a `RunnableChanged` event for its workflow), exactly as `signal` does. Nothing is
   * delivered when the commit fails; a target that does not exist (e.g. purged) is ignored.
   */
  readonly signal?: SignalDelivery | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface SignalDelivery {
  readonly runId: string
  readonly name: string
  readonly signalId: string
  readonly payload: string
}

/**
 * Statuses whose transition writes an alert to the store's outbox, in the same atomic write as the
 * transition. The `Alerts` dispatcher delivers them (and chooses which statuses it reports).
 *
 * @since 0.1.0
 * @category models
 */
export const alertStatuses: ReadonlyArray<RunStatus> = ["failed", "compensated", "needs_attention", "dead"]

/**
 * An outbox row: written when a commit moves a run into one of `alertStatuses`. Its `id` is
 * `${runId}/${epoch}/${status}`, so a repeated commit writes it once. `deliveredAt` is set by
 * `completeAlert`; `attempts` counts claims.
 *
 * @since 0.1.0
 * @category models
 */
export interface AlertRecord {
  readonly id: string
  readonly runId: string
  readonly workflow: string
  readonly status: RunStatus
  /** The run's error (RunError JSON) at the transition. */
  readonly error: string | null
  readonly createdAt: number
  readonly attempts: number
  readonly deliveredAt: number | null
}

/**
 * One atomic, fenced write: applied only if the run's epoch is still `epoch` and its lease has not
 * expired by the store's clock; otherwise nothing is written and the commit fails with
 * `LeaseLost`. Entries and attempts are upserts, so repeating a commit is harmless. A commit that
 * holds a finished (`succeeded`/`failed`) entry resets the run's recovery count; unless it
 * releases the lease, it extends it by `leaseMs`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Commit {
  readonly runId: string
  readonly epoch: number
  readonly leaseMs: number
  readonly entries: ReadonlyArray<JournalEntry>
  readonly attempts: ReadonlyArray<AttemptRecord>
  readonly transition?: RunTransition | undefined
  /**
   * The run is not stored yet: the same atomic write creates it, as `create` with `claim` would
   * (status `running`, lease held by `workerId`, `epoch` which must be 1, no parent), and applies
   * the rest of the commit to it. If a run with this ID exists, nothing is written and the commit
   * fails with `LeaseLost`. It saves a worker of the caller's process the create's round trip: the
   * create is written with the run's first journal write, before any step runs.
   */
  readonly create?: CommitCreate | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface CommitCreate {
  readonly workflow: string
  readonly payload: string
  readonly workerId: string
}

/**
 * What a commit tells the engine back: whether an operator asked to cancel the run.
 *
 * @since 0.1.0
 * @category models
 */
export interface CommitResult {
  readonly cancelRequested: boolean
}

/**
 * @since 0.1.0
 * @category models
 */
export interface NewRun {
  readonly id: string
  readonly workflow: string
  readonly payload: string
  readonly parentId?: string | null | undefined
  /**
   * Creates the run already claimed by this worker (status `running`, epoch 1, lease of `leaseMs`):
   * a worker in the caller's process starts it at once, with no claim and no wake-up. No
   * `RunnableChanged` event is announced; if that worker dies, the lease expires and the run is
   * claimable like any other (its `recoveries` counted). Ignored when the run already exists, and
   * by SQL stores inside a transaction of the caller (nobody else sees the run before it commits):
   * the run is then created `pending`, unclaimed (check `run.leaseOwner`).
   */
  readonly claim?: { readonly workerId: string; readonly leaseMs: number } | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ClaimRequest {
  readonly workerId: string
  readonly workflows: ReadonlyArray<string>
  readonly limit: number
  readonly leaseMs: number
}

/**
 * Filter for `list`, newest first, with keyset pagination: pass the previous page's `nextCursor`.
 *
 * @since 0.1.0
 * @category models
 */
export interface ListFilter {
  readonly status?: RunStatus | ReadonlyArray<RunStatus> | undefined
  readonly workflow?: string | undefined
  readonly parentId?: string | undefined
  readonly createdAfter?: number | undefined
  readonly createdBefore?: number | undefined
  readonly limit?: number | undefined
  readonly cursor?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RunPage {
  readonly runs: ReadonlyArray<RunRecord>
  readonly nextCursor: string | null
}

/**
 * Wake-up hints. They may be lost or repeated; workers and waiters also poll.
 *
 * @since 0.1.0
 * @category models
 */
export type StoreEvent =
  | { readonly _tag: "RunnableChanged"; readonly workflow: string }
  | { readonly _tag: "RunFinished"; readonly runId: string }

/**
 * The storage port.
 *
 * @since 0.1.0
 * @category tags
 */
export class WorkflowStore extends Context.Tag("@memento/workflow/WorkflowStore")<WorkflowStore, {
  /** Creates the run unless one with this ID exists; returns the stored run either way. */
  readonly create: (run: NewRun) => Effect.Effect<{ readonly run: RunRecord; readonly created: boolean }, StoreError>
  /** Claims up to `limit` claimable runs of the given workflows: owner, epoch + 1, lease. */
  readonly claim: (request: ClaimRequest) => Effect.Effect<ReadonlyArray<RunRecord>, StoreError>
  /** Extends the leases the worker still holds; returns the IDs of those it still holds. */
  readonly heartbeat: (request: {
    readonly workerId: string
    readonly runs: ReadonlyArray<{ readonly id: string; readonly epoch: number }>
    readonly leaseMs: number
  }) => Effect.Effect<ReadonlyArray<string>, StoreError>
  /** Drops a lease without changing the run (graceful shutdown): another worker may claim it. */
  readonly release: (runId: string, epoch: number) => Effect.Effect<void, StoreError>
  /**
   * The run, its journal and its signals in one call. A stored row that does not decode fails with
   * `JournalDecodeError` (damaged data: the engine parks the run), not `StoreError` (the store
   * failing: retried).
   */
  readonly load: (runId: string) => Effect.Effect<RunSnapshot, RunNotFound | JournalDecodeError | StoreError>
  /** One fenced, atomic write. */
  readonly commit: (commit: Commit) => Effect.Effect<CommitResult, LeaseLost | StoreError>
  /**
   * Runs `effect` and the fenced commit it produces in one transaction where the store can
   * (guarantee 4). A store without transactions runs the effect, then commits.
   */
  readonly transaction: <A, E, R>(
    effect: Effect.Effect<A, E, R>,
    commit: (a: A) => Commit
  ) => Effect.Effect<readonly [A, CommitResult], E | LeaseLost | StoreError, R>
  /** Stores a signal (ignored when its `signalId` was seen) and wakes a waiting run. */
  readonly signal: (signal: {
    readonly runId: string
    readonly name: string
    readonly signalId: string
    readonly payload: string
  }) => Effect.Effect<{ readonly duplicate: boolean }, RunNotFound | StoreError>
  /** Marks the run for cancellation and makes a sleeping or waiting run runnable now. */
  readonly requestCancel: (runId: string) => Effect.Effect<RunRecord, RunNotFound | StoreError>
  /** Makes a `needs_attention` or `dead` run runnable again, with its recovery count reset. */
  readonly resume: (runId: string) => Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError>
  readonly get: (runId: string) => Effect.Effect<Option.Option<RunRecord>, StoreError>
  readonly list: (filter: ListFilter) => Effect.Effect<RunPage, StoreError>
  readonly inspect: (runId: string) => Effect.Effect<RunDetails, RunNotFound | StoreError>
  /**
   * Sets aside the journal entries with the given keys (and their attempts) as a new archive
   * generation and makes the run runnable from its journal's remainder: status `pending`,
   * runnable now, output, error, completion time, lease, cancel request and recovery count
   * cleared. The epoch is unchanged: the next claim increments it. The archive generation is the
   * run's highest so far plus one; keys the journal does not hold are ignored. Applied only while
   * the run's status is one of `from`; otherwise `InvalidRunState` (operation `"retry"`) and
   * nothing changes. Atomic. Emits `RunnableChanged`.
   */
  readonly retry: (request: {
    readonly runId: string
    readonly archiveKeys: ReadonlyArray<string>
    readonly from: ReadonlyArray<RunStatus>
  }) => Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError>
  /**
   * Deletes up to `limit` runs (with their journal, attempts, archive, signals and alerts) whose
   * status is one of `statuses` (only terminal statuses are ever deleted, whatever is passed) and
   * that completed before `completedBefore`, in no particular order. Returns how many runs it
   * deleted; callers repeat it until it returns less than `limit`. One short transaction per call;
   * runs another transaction holds are skipped, not waited for.
   */
  readonly purge: (request: {
    readonly completedBefore: number
    readonly statuses: ReadonlyArray<RunStatus>
    readonly limit: number
  }) => Effect.Effect<number, StoreError>
  /** Run counts by workflow and status (statuses without runs are absent), by workflow, then status. */
  readonly stats: Effect.Effect<ReadonlyArray<RunCount>, StoreError>
  /**
   * Claims up to `limit` undelivered alerts whose claim lease (if any) expired: sets the lease to
   * now + `leaseMs` and increments `attempts`. Oldest first. Concurrent callers never claim the
   * same alert while its lease holds; an alert not completed before its lease expires is claimed
   * again (delivery is at least once).
   */
  readonly claimAlerts: (request: {
    readonly limit: number
    readonly leaseMs: number
  }) => Effect.Effect<ReadonlyArray<AlertRecord>, StoreError>
  /** Marks an alert delivered; it is never claimed again. */
  readonly completeAlert: (id: string) => Effect.Effect<void, StoreError>
  /** Alerts of a run (delivered or not), oldest first. */
  readonly alerts: (runId: string) => Effect.Effect<ReadonlyArray<AlertRecord>, StoreError>
  /** The last cron tick (epoch ms) a schedule started, if any. */
  readonly scheduleCursor: (name: string) => Effect.Effect<Option.Option<number>, StoreError>
  /** Records that a schedule started the tick `tick`; never moves the cursor backwards. */
  readonly advanceSchedule: (name: string, tick: number) => Effect.Effect<void, StoreError>
  /** Wake-up hints for workers and result waiters. */
  readonly events: Stream.Stream<StoreEvent>
}>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface RunCount {
  readonly workflow: string
  readonly status: RunStatus
  readonly count: number
}
