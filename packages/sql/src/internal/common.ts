import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Fragment } from "@effect/sql/Statement"
import type { LeaseLost, StoreError } from "@memento/workflow/WorkflowError"
import type {
  AttemptRecord,
  Commit,
  CommitResult,
  JournalEntry,
  ListFilter,
  RunPage,
  RunRecord,
  RunStatus,
  StoreEvent,
  WorkflowStore
} from "@memento/workflow/WorkflowStore"
import { alertStatuses, parkedStatuses, terminalStatuses } from "@memento/workflow/WorkflowStore"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { decodeCursor, decodeRuns, encodeCursor, mapSqlError, storeError } from "./rows.js"
import type { Tables } from "./tables.js"

/** @internal */
export type Store = WorkflowStore["Type"]

const runColumns = [
  "id",
  "workflow",
  "status",
  "payload",
  "output",
  "error",
  "epoch",
  "lease_owner",
  "lease_expires_at",
  "runnable_at",
  "cancel_requested",
  "recoveries",
  "parent_id",
  "created_at",
  "updated_at",
  "completed_at"
] as const

/** The columns of a `RunRecord`, optionally qualified by a table alias. @internal */
export const runColumnList = (alias?: string): string =>
  runColumns.map((column) => alias === undefined ? column : `${alias}.${column}`).join(", ")

/**
 * A JSON object of a run row with the row's own column names as keys (what `decodeRun` reads),
 * built with the dialect's JSON object function.
 *
 * @internal
 */
export const runJson = (jsonObject: string, alias: string): string =>
  jsonObjectSql(jsonObject, runColumns.map((column) => [column, `${alias}.${column}`]))

/** SQL keys and expressions of a JSON object. @internal */
export type JsonColumns = ReadonlyArray<readonly [key: string, expression: string]>

/**
 * A JSON object built in SQL with the dialect's function (`json_build_object` on Postgres,
 * `json_object` on SQLite).
 *
 * @internal
 */
export const jsonObjectSql = (jsonObject: string, columns: JsonColumns): string =>
  `${jsonObject}(${columns.map(([key, expression]) => `'${key}', ${expression}`).join(", ")})`

/** @internal */
export const sqlList = (values: ReadonlyArray<string>): string => values.map((value) => `'${value}'`).join(", ")

/** Statuses a run can be claimed in. @internal */
export const claimableStatuses = sqlList(["pending", "running", "sleeping", "waiting", "compensating"])

/** Statuses a claim (or a cancel request) moves to `running` (or makes runnable now). @internal */
export const idleStatuses = sqlList(["pending", "sleeping", "waiting"])

/** Terminal and parked statuses: the run is over until an operator acts. @internal */
export const endedStatuses = sqlList([...terminalStatuses, ...parkedStatuses])

/** @internal */
export const isEnded = (status: RunStatus): boolean =>
  terminalStatuses.includes(status) || parkedStatuses.includes(status)

/** Journal rows of one commit, de-duplicated by key (the last one wins). */
const uniqueEntries = (entries: ReadonlyArray<JournalEntry>): ReadonlyArray<JournalEntry> => {
  if (entries.length < 2) return entries
  const byKey = new Map<string, JournalEntry>()
  for (const entry of entries) byKey.set(entry.key, entry)
  return byKey.size === entries.length ? entries : Array.from(byKey.values())
}

/** Attempt rows of one commit, de-duplicated by (key, attempt) (the last one wins). */
const uniqueAttempts = (attempts: ReadonlyArray<AttemptRecord>): ReadonlyArray<AttemptRecord> => {
  if (attempts.length < 2) return attempts
  const byKey = new Map<string, AttemptRecord>()
  for (const attempt of attempts) byKey.set(`${attempt.key}\u0000${attempt.attempt}`, attempt)
  return byKey.size === attempts.length ? attempts : Array.from(byKey.values())
}

/**
 * A journal row as the store writes it. `impliedAttempt` says whether attempt 1 of the entry is
 * implied by the row instead of stored in the attempts table: `true` when this commit left out
 * the entry's attempt-1 record because the row says the same, `false` when this commit stores it,
 * absent (kept as it was) when this commit has no attempt-1 record for the entry.
 */
type StoredEntry = JournalEntry & { readonly impliedAttempt?: boolean }

/**
 * Whether the attempt record says nothing the journal entry does not: attempt 1, running while the
 * entry is `started` or succeeded when the entry succeeded at its first attempt, with the entry's
 * times and no error. `inspect` rebuilds such a record from the row (see `executionLogSql`).
 */
const isImplied = (entry: JournalEntry, attempt: AttemptRecord): boolean =>
  attempt.attempt === 1 && entry.attempts === 1 && attempt.error === null && attempt.startedAt === entry.startedAt &&
  (attempt.outcome === "running"
    ? entry.status === "started" && attempt.endedAt === null
    : attempt.outcome === "succeeded" && entry.status === "succeeded" && attempt.endedAt === entry.completedAt)

/**
 * The journal and attempt rows a commit writes: de-duplicated, and without the attempt-1 records
 * that the commit's own journal rows imply. Every step that succeeds at its first try writes two
 * such records (running, then succeeded), which the journal rows of the same commits already say;
 * leaving them out saves two of the four row writes a step costs. `inspect` puts them back.
 *
 * @internal
 */
export const storedRows = (
  commitEntries: ReadonlyArray<JournalEntry>,
  commitAttempts: ReadonlyArray<AttemptRecord>
): { readonly entries: ReadonlyArray<StoredEntry>; readonly attempts: ReadonlyArray<AttemptRecord> } => {
  const entries = uniqueEntries(commitEntries)
  const attempts = uniqueAttempts(commitAttempts)
  if (entries.length === 0 || attempts.length === 0) return { entries, attempts }
  // on the hot path of every commit: plain loops, and copies only when a record meets its entry
  let stored: Array<StoredEntry> | undefined
  const kept: Array<AttemptRecord> = []
  for (const attempt of attempts) {
    let index = -1
    if (attempt.attempt === 1) {
      for (let i = 0; i < entries.length; i++) {
        if (entries[i].key === attempt.key) {
          index = i
          break
        }
      }
    }
    if (index === -1) {
      kept.push(attempt)
      continue
    }
    const entry = entries[index]
    const impliedAttempt = isImplied(entry, attempt)
    stored ??= entries.slice()
    stored[index] = {
      key: entry.key,
      seq: entry.seq,
      kind: entry.kind,
      status: entry.status,
      output: entry.output,
      error: entry.error,
      attempts: entry.attempts,
      meta: entry.meta,
      startedAt: entry.startedAt,
      completedAt: entry.completedAt,
      impliedAttempt
    }
    if (!impliedAttempt) kept.push(attempt)
  }
  return stored === undefined ? { entries, attempts } : { entries: stored, attempts: kept }
}

/**
 * The SQL of a run's execution log (`r` is the run), as two JSON arrays, `attempts` and
 * `archivedAttempts` (the archive that `retry` fills, with `generation`): the stored attempts and
 * the attempt-1 records its journal rows imply (`implied_attempt`, see `storedRows`). The implied
 * record succeeded if the entry succeeded at its first attempt; otherwise attempt 1 was still
 * running when its worker stopped (a later attempt or an interruption stores a record of its own).
 * A row that implies its first attempt succeeded outranks a stored record of that attempt (the
 * success was written last); otherwise a stored record outranks the row.
 *
 * @internal
 */
export const executionLogSql = (t: Tables, dialect: {
  readonly jsonObject: string
  readonly aggregate: (value: string, order: string) => string
}): { readonly attempts: string; readonly archivedAttempts: string } => {
  const object = (columns: JsonColumns) => jsonObjectSql(dialect.jsonObject, columns)
  const succeeded = `(j.status = 'succeeded' AND j.attempts = 1)`
  const query = (attempts: string, journal: string, generation: boolean) => {
    const stored: JsonColumns = [
      ["key", "a.key"],
      ["attempt", "a.attempt"],
      ["outcome", "a.outcome"],
      ["error", "a.error"],
      ["startedAt", "a.started_at"],
      ["endedAt", "a.ended_at"],
      ...(generation ? [["generation", "a.generation"] as const] : [])
    ]
    const implied: JsonColumns = [
      ["key", "j.key"],
      ["attempt", "1"],
      ["outcome", `CASE WHEN ${succeeded} THEN 'succeeded' ELSE 'running' END`],
      ["error", "NULL"],
      ["startedAt", "j.started_at"],
      ["endedAt", `CASE WHEN ${succeeded} THEN j.completed_at END`],
      ...(generation ? [["generation", "j.generation"] as const] : [])
    ]
    const same = (a: string, b: string) => generation ? ` AND ${a}.generation = ${b}.generation` : ""
    const g = (alias: string) => generation ? `${alias}.generation AS generation, ` : ""
    return `(SELECT ${
      dialect.aggregate("x.o", `${generation ? "x.generation, " : ""}x.seq NULLS LAST, x.key, x.attempt`)
    }
      FROM (
        SELECT ${object(stored)} AS o, ${g("a")}j.seq AS seq, a.key AS key, a.attempt AS attempt
        FROM ${attempts} a LEFT JOIN ${journal} j ON j.run_id = a.run_id${same("j", "a")} AND j.key = a.key
        WHERE a.run_id = r.id AND (a.attempt <> 1 OR j.implied_attempt IS NOT TRUE OR NOT ${succeeded})
        UNION ALL
        SELECT ${object(implied)} AS o, ${g("j")}j.seq AS seq, j.key AS key, 1 AS attempt
        FROM ${journal} j
        WHERE j.run_id = r.id AND j.implied_attempt
          AND (${succeeded} OR NOT EXISTS (SELECT 1 FROM ${attempts} a
            WHERE a.run_id = j.run_id${same("a", "j")} AND a.key = j.key AND a.attempt = 1))
      ) x)`
  }
  return {
    attempts: query(t.attempts, t.journal, false),
    archivedAttempts: query(t.attemptsArchive, t.journalArchive, true)
  }
}

/** Whether a commit's transition writes an alert to the outbox. @internal */
export const isAlerting = (status: RunStatus): boolean => alertStatuses.includes(status)

/** The outbox ID of the alert a transition writes: one per (run, epoch, status). @internal */
export const alertId = (runId: string, epoch: number, status: RunStatus): string => `${runId}/${epoch}/${status}`

/** The statuses `purge` may delete: the requested ones that are terminal. @internal */
export const purgeable = (statuses: ReadonlyArray<RunStatus>): ReadonlyArray<RunStatus> =>
  statuses.filter((status) => terminalStatuses.includes(status))

/** Whether a commit holds a finished entry (which resets the recovery count). @internal */
export const hasFinishedEntry = (entries: ReadonlyArray<JournalEntry>): boolean =>
  entries.some((entry) => entry.status !== "started")

/** The events a successful commit announces. @internal */
export const commitEvents = (
  commit: Commit,
  run: { readonly workflow: string; readonly runnableAt: number | null }
): ReadonlyArray<StoreEvent> => {
  const t = commit.transition
  if (t === undefined) return []
  const events: Array<StoreEvent> = []
  if (isEnded(t.status)) events.push({ _tag: "RunFinished", runId: commit.runId })
  if (t.release && run.runnableAt !== null) events.push({ _tag: "RunnableChanged", workflow: run.workflow })
  return events
}

/**
 * `list` is the same query on both dialects: newest first, keyset pagination on (created_at, id).
 *
 * @internal
 */
export const makeList = (sql: SqlClient.SqlClient, tables: Tables) => {
  const runs = sql.literal(tables.runs)
  const columns = sql.literal(runColumnList())
  const decode = decodeRuns("list")
  return (filter: ListFilter): Effect.Effect<RunPage, StoreError> =>
    Effect.gen(function*() {
      const after = filter.cursor === undefined ? undefined : yield* decodeCursor(filter.cursor)
      const statuses = filter.status === undefined
        ? undefined
        : typeof filter.status === "string"
        ? [filter.status]
        : filter.status
      const limit = Math.min(Math.max(Math.floor(filter.limit ?? 50), 1), 1000)
      const clauses: Array<Fragment> = []
      if (statuses !== undefined) clauses.push(sql.in("status", statuses))
      if (filter.workflow !== undefined) clauses.push(sql`workflow = ${filter.workflow}`)
      if (filter.parentId !== undefined) clauses.push(sql`parent_id = ${filter.parentId}`)
      if (filter.createdAfter !== undefined) clauses.push(sql`created_at >= ${filter.createdAfter}`)
      if (filter.createdBefore !== undefined) clauses.push(sql`created_at < ${filter.createdBefore}`)
      if (after !== undefined) {
        clauses.push(sql`(created_at < ${after[0]} OR (created_at = ${after[0]} AND id < ${after[1]}))`)
      }
      const rows = yield* sql`SELECT ${columns} FROM ${runs} WHERE ${sql.and(clauses)}
        ORDER BY created_at DESC, id DESC LIMIT ${limit + 1}`.pipe(mapSqlError("list"))
      const page = yield* decode(rows.slice(0, limit))
      const last = page[page.length - 1]
      return { runs: page, nextCursor: rows.length > limit && last !== undefined ? encodeCursor(last) : null }
    })
}

class UserFailure extends Data.TaggedError("UserFailure")<{ readonly error: unknown }> {}

/** @internal */
export const isSqlError = (u: unknown): u is SqlError =>
  typeof u === "object" && u !== null && "_tag" in u && u._tag === "SqlError"

/**
 * `WorkflowStore.transaction` on a SQL database: the user's effect and the fenced commit it
 * produces run in one `sql.withTransaction`, so the effect's own SQL on the same `SqlClient`
 * commits or rolls back with the journal write. A lost lease rolls everything back. The commit's
 * events are published only after the transaction committed.
 *
 * @internal
 */
export const makeTransaction = (
  sql: SqlClient.SqlClient,
  commitInTransaction: (
    commit: Commit
  ) => Effect.Effect<readonly [CommitResult, Effect.Effect<void>], LeaseLost | SqlError>
): Store["transaction"] =>
<A, E, R>(effect: Effect.Effect<A, E, R>, f: (a: A) => Commit) =>
  Effect.suspend(() => {
    let publish: Effect.Effect<void> = Effect.void
    const body = Effect.flatMap(
      Effect.mapError(effect, (error) => new UserFailure({ error })),
      (a) =>
        Effect.map(commitInTransaction(f(a)), ([result, after]) => {
          publish = after
          return [a, result] as const
        })
    )
    return sql.withTransaction(body).pipe(
      // `withTransaction` turns a failed COMMIT or ROLLBACK into a defect: it is a storage failure.
      Effect.catchAllDefect((defect) => isSqlError(defect) ? Effect.fail(defect) : Effect.die(defect)),
      Effect.catchAll((error): Effect.Effect<never, E | LeaseLost | StoreError> =>
        error instanceof UserFailure
          ? Effect.fail(error.error as E)
          : isSqlError(error)
          ? Effect.fail(storeError("transaction")(error))
          : Effect.fail(error)
      ),
      Effect.tap(() => publish)
    )
  })

/** Claim order: runnable_at, then created_at, then id (the claim statement's `ORDER BY`). @internal */
export const claimOrder = (a: RunRecord, b: RunRecord): number =>
  (a.runnableAt ?? 0) - (b.runnableAt ?? 0) || a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
