import type { SqlError } from "@effect/sql/SqlError"
import { JournalDecodeError, StoreError } from "@memento/workflow/WorkflowError"
import type {
  AlertRecord,
  ArchivedAttempt,
  ArchivedEntry,
  AttemptRecord,
  JournalEntry,
  RunCount,
  RunDetails,
  RunRecord,
  RunStatus,
  SignalRecord,
  StoreEvent
} from "@memento/workflow/WorkflowStore"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"

// -------------------------------------------------------------------------------------------------
// errors
// -------------------------------------------------------------------------------------------------

const causeMessage = (cause: unknown): string => {
  if (typeof cause === "object" && cause !== null && "message" in cause && typeof cause.message === "string") {
    return cause.message
  }
  return String(cause)
}

/**
 * Every `SqlError` leaves the store as a `StoreError` naming the operation.
 *
 * @internal
 */
export const storeError = (operation: string) => (error: SqlError): StoreError =>
  new StoreError({
    operation,
    message: error.cause === undefined ? error.message : `${error.message}: ${causeMessage(error.cause)}`
  })

/**
 * Maps the `SqlError`s of an effect to `StoreError`s, leaving its other errors alone.
 *
 * @internal
 */
export const mapSqlError = (operation: string) => <A, E, R>(effect: Effect.Effect<A, E | SqlError, R>) =>
  Effect.catchIf(
    effect,
    (error): error is SqlError =>
      typeof error === "object" && error !== null && "_tag" in error && error._tag === "SqlError",
    (error) => Effect.fail(storeError(operation)(error))
  ) as Effect.Effect<A, Exclude<E, SqlError> | StoreError, R>

// -------------------------------------------------------------------------------------------------
// row decoding
// -------------------------------------------------------------------------------------------------

/** Postgres returns `bigint` columns as strings; SQLite and JSON as numbers. */
const Millis = Schema.Union(Schema.Number, Schema.NumberFromString)

/** Postgres returns booleans; SQLite 0 or 1. */
const Bool = Schema.Union(
  Schema.Boolean,
  Schema.transform(Schema.Literal(0, 1), Schema.Boolean, {
    strict: true,
    decode: (n) => n === 1,
    encode: (b) => b ? 1 : 0
  })
)

const NullableString = Schema.NullOr(Schema.String)
const NullableMillis = Schema.NullOr(Millis)

const column = <S extends Schema.Schema.Any>(schema: S, key: string) =>
  Schema.propertySignature(schema).pipe(Schema.fromKey(key))

const Status = Schema.Literal(
  "pending",
  "running",
  "sleeping",
  "waiting",
  "succeeded",
  "failed",
  "compensating",
  "compensated",
  "cancelled",
  "needs_attention",
  "dead"
)

const RunRow = Schema.Struct({
  id: Schema.String,
  workflow: Schema.String,
  status: Status,
  payload: Schema.String,
  output: NullableString,
  error: NullableString,
  epoch: Millis,
  leaseOwner: column(NullableString, "lease_owner"),
  leaseExpiresAt: column(NullableMillis, "lease_expires_at"),
  runnableAt: column(NullableMillis, "runnable_at"),
  cancelRequested: column(Bool, "cancel_requested"),
  recoveries: Millis,
  parentId: column(NullableString, "parent_id"),
  createdAt: column(Millis, "created_at"),
  updatedAt: column(Millis, "updated_at"),
  completedAt: column(NullableMillis, "completed_at")
})

const Entry = Schema.Struct({
  key: Schema.String,
  seq: Millis,
  kind: Schema.Literal("step", "transaction", "compensation", "sleep", "signal", "patch", "child"),
  status: Schema.Literal("started", "succeeded", "failed"),
  output: NullableString,
  error: NullableString,
  attempts: Millis,
  meta: NullableString,
  startedAt: Millis,
  completedAt: NullableMillis
})

const Attempt = Schema.Struct({
  key: Schema.String,
  attempt: Millis,
  outcome: Schema.Literal("running", "succeeded", "failed", "retrying", "interrupted"),
  error: NullableString,
  startedAt: Millis,
  endedAt: NullableMillis
})

const Signal = Schema.Struct({
  name: Schema.String,
  signalId: Schema.String,
  payload: Schema.String,
  seq: Millis,
  receivedAt: Millis
})

/** A JSON array column: parsed by the driver (Postgres `json`) or text (SQLite). */
const JsonArray = <A, I>(item: Schema.Schema<A, I>) =>
  Schema.Union(Schema.Array(item), Schema.parseJson(Schema.Array(item)))

const ArchivedEntryRow = Schema.Struct({ ...Entry.fields, generation: Millis, archivedAt: Millis })
const ArchivedAttemptRow = Schema.Struct({ ...Attempt.fields, generation: Millis })

const DetailsRow = Schema.Struct({
  ...RunRow.fields,
  entries: JsonArray(Entry),
  signals: JsonArray(Signal),
  attempts: Schema.optional(JsonArray(Attempt)),
  archivedEntries: Schema.optional(JsonArray(ArchivedEntryRow)).pipe(Schema.fromKey("archived_entries")),
  archivedAttempts: Schema.optional(JsonArray(ArchivedAttemptRow)).pipe(Schema.fromKey("archived_attempts")),
  children: Schema.optional(JsonArray(RunRow))
})

const AlertRow = Schema.Struct({
  id: Schema.String,
  runId: column(Schema.String, "run_id"),
  workflow: Schema.String,
  status: Status,
  error: NullableString,
  createdAt: column(Millis, "created_at"),
  attempts: Millis,
  deliveredAt: column(NullableMillis, "delivered_at")
})

const CountRow = Schema.Struct({ workflow: Schema.String, status: Status, count: Millis })

// The decoded types must be exactly the port's models.
const _run: Schema.Schema.Type<typeof RunRow> extends RunRecord ? true : false = true
const _status: RunStatus extends Schema.Schema.Type<typeof Status> ? true : false = true
const _entry: Schema.Schema.Type<typeof Entry> extends JournalEntry ? true : false = true
const _attempt: Schema.Schema.Type<typeof Attempt> extends AttemptRecord ? true : false = true
const _signal: Schema.Schema.Type<typeof Signal> extends SignalRecord ? true : false = true
const _archivedEntry: Schema.Schema.Type<typeof ArchivedEntryRow> extends ArchivedEntry ? true : false = true
const _archivedAttempt: Schema.Schema.Type<typeof ArchivedAttemptRow> extends ArchivedAttempt ? true : false = true
const _alert: Schema.Schema.Type<typeof AlertRow> extends AlertRecord ? true : false = true
const _count: Schema.Schema.Type<typeof CountRow> extends RunCount ? true : false = true
void [_run, _status, _entry, _attempt, _signal, _archivedEntry, _archivedAttempt, _alert, _count]

const rowId = (row: unknown): string =>
  typeof row === "object" && row !== null && "id" in row && typeof row.id === "string" ? row.id : "?"

const corrupt = (operation: string, runId: string, error: ParseResult.ParseError) =>
  new StoreError({
    operation,
    message: `run "${runId}" has a corrupt row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
  })

const decodeRunEither = Schema.decodeUnknownEither(RunRow)
const decodeDetailsEither = Schema.decodeUnknownEither(DetailsRow)

// Fast paths: rows as the drivers return them are checked and converted by hand, which is an order
// of magnitude cheaper than the Schemas above (a 1,000-step journal decodes in well under a
// millisecond instead of several). They accept exactly what the Schemas accept and build the same
// values; anything unexpected falls back to the Schemas, which also word the error.

const statuses: ReadonlySet<unknown> = new Set(Status.literals)
const kinds: ReadonlySet<unknown> = new Set(Entry.fields.kind.literals)
const entryStatuses: ReadonlySet<unknown> = new Set(Entry.fields.status.literals)
const outcomes: ReadonlySet<unknown> = new Set(Attempt.fields.outcome.literals)

/** `Millis`: a number, or a numeric string (Postgres `bigint`). `undefined` when not fast-decodable. */
const millis = (u: unknown): number | undefined => {
  if (typeof u === "number") return u
  if (typeof u !== "string" || u.trim() === "") return undefined
  const n = Number(u)
  return Number.isFinite(n) ? n : undefined
}
const nullableMillis = (u: unknown): number | null | undefined => u === null ? null : millis(u)
const isNullableString = (u: unknown): u is string | null => u === null || typeof u === "string"
const bool = (u: unknown): boolean | undefined =>
  typeof u === "boolean" ? u : u === 1 ? true : u === 0 ? false : undefined

type Row = Record<string, unknown>
const isRow = (u: unknown): u is Row => typeof u === "object" && u !== null

const fastRun = (row: Row): RunRecord | undefined => {
  const epoch = millis(row.epoch)
  const leaseExpiresAt = nullableMillis(row.lease_expires_at)
  const runnableAt = nullableMillis(row.runnable_at)
  const cancelRequested = bool(row.cancel_requested)
  const recoveries = millis(row.recoveries)
  const createdAt = millis(row.created_at)
  const updatedAt = millis(row.updated_at)
  const completedAt = nullableMillis(row.completed_at)
  if (
    typeof row.id !== "string" || typeof row.workflow !== "string" || !statuses.has(row.status) ||
    typeof row.payload !== "string" || !isNullableString(row.output) || !isNullableString(row.error) ||
    epoch === undefined || !isNullableString(row.lease_owner) || leaseExpiresAt === undefined ||
    runnableAt === undefined || cancelRequested === undefined || recoveries === undefined ||
    !isNullableString(row.parent_id) || createdAt === undefined || updatedAt === undefined || completedAt === undefined
  ) return undefined
  return {
    id: row.id,
    workflow: row.workflow,
    status: row.status as RunStatus,
    payload: row.payload,
    output: row.output,
    error: row.error,
    epoch,
    leaseOwner: row.lease_owner,
    leaseExpiresAt,
    runnableAt,
    cancelRequested,
    recoveries,
    parentId: row.parent_id,
    createdAt,
    updatedAt,
    completedAt
  }
}

const fastEntry = (u: unknown): JournalEntry | undefined => {
  if (!isRow(u)) return undefined
  const seq = millis(u.seq)
  const attempts = millis(u.attempts)
  const startedAt = millis(u.startedAt)
  const completedAt = nullableMillis(u.completedAt)
  if (
    typeof u.key !== "string" || seq === undefined || !kinds.has(u.kind) || !entryStatuses.has(u.status) ||
    !isNullableString(u.output) || !isNullableString(u.error) || attempts === undefined ||
    !isNullableString(u.meta) || startedAt === undefined || completedAt === undefined
  ) return undefined
  return {
    key: u.key,
    seq,
    kind: u.kind as JournalEntry["kind"],
    status: u.status as JournalEntry["status"],
    output: u.output,
    error: u.error,
    attempts,
    meta: u.meta,
    startedAt,
    completedAt
  }
}

const fastSignal = (u: unknown): SignalRecord | undefined => {
  if (!isRow(u)) return undefined
  const seq = millis(u.seq)
  const receivedAt = millis(u.receivedAt)
  if (
    typeof u.name !== "string" || typeof u.signalId !== "string" || typeof u.payload !== "string" ||
    seq === undefined || receivedAt === undefined
  ) return undefined
  return { name: u.name, signalId: u.signalId, payload: u.payload, seq, receivedAt }
}

const fastAttempt = (u: unknown): AttemptRecord | undefined => {
  if (!isRow(u)) return undefined
  const attempt = millis(u.attempt)
  const startedAt = millis(u.startedAt)
  const endedAt = nullableMillis(u.endedAt)
  if (
    typeof u.key !== "string" || attempt === undefined || !outcomes.has(u.outcome) || !isNullableString(u.error) ||
    startedAt === undefined || endedAt === undefined
  ) return undefined
  return {
    key: u.key,
    attempt,
    outcome: u.outcome as AttemptRecord["outcome"],
    error: u.error,
    startedAt,
    endedAt
  }
}

const parseJsonText = (text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** A JSON array column: parsed by the driver (Postgres `json`) or text (SQLite). */
const fastArray = <A>(column: unknown, item: (u: unknown) => A | undefined): Array<A> | undefined => {
  const u = typeof column === "string" ? parseJsonText(column) : column
  if (!Array.isArray(u)) return undefined
  const out = new Array<A>(u.length)
  for (let i = 0; i < u.length; i++) {
    const value = item(u[i])
    if (value === undefined) return undefined
    out[i] = value
  }
  return out
}

const fastArchivedEntry = (u: unknown): ArchivedEntry | undefined => {
  const entry = fastEntry(u)
  if (entry === undefined || !isRow(u)) return undefined
  const generation = millis(u.generation)
  const archivedAt = millis(u.archivedAt)
  return generation === undefined || archivedAt === undefined ? undefined : { ...entry, generation, archivedAt }
}

const fastArchivedAttempt = (u: unknown): ArchivedAttempt | undefined => {
  const attempt = fastAttempt(u)
  if (attempt === undefined || !isRow(u)) return undefined
  const generation = millis(u.generation)
  return generation === undefined ? undefined : { ...attempt, generation }
}

const fastChild = (u: unknown): RunRecord | undefined => isRow(u) ? fastRun(u) : undefined

/** An optional JSON array column (`inspect` only): empty when the query did not select it. */
const optionalArray = <A>(column: unknown, item: (u: unknown) => A | undefined): Array<A> | undefined =>
  column === undefined ? [] : fastArray(column, item)

const fastDetails = (row: Row) => {
  const run = fastRun(row)
  if (run === undefined) return undefined
  const entries = fastArray(row.entries, fastEntry)
  const signals = fastArray(row.signals, fastSignal)
  const attempts = optionalArray(row.attempts, fastAttempt)
  const archivedEntries = optionalArray(row.archived_entries, fastArchivedEntry)
  const archivedAttempts = optionalArray(row.archived_attempts, fastArchivedAttempt)
  const children = optionalArray(row.children, fastChild)
  if (
    entries === undefined || signals === undefined || attempts === undefined || archivedEntries === undefined ||
    archivedAttempts === undefined || children === undefined
  ) return undefined
  return { run, entries, signals, attempts, archivedEntries, archivedAttempts, children }
}

/** @internal */
export const decodeRun = (operation: string) => (row: unknown): Effect.Effect<RunRecord, StoreError> => {
  const fast = isRow(row) ? fastRun(row) : undefined
  return fast !== undefined ? Effect.succeed(fast) : Either.match(decodeRunEither(row), {
    onLeft: (error) => Effect.fail(corrupt(operation, rowId(row), error)),
    onRight: Effect.succeed
  })
}

/** @internal */
export const decodeRuns = (operation: string) => (rows: ReadonlyArray<unknown>) =>
  Effect.forEach(rows, decodeRun(operation))

const bySeq = <A extends { readonly seq: number }>(values: ReadonlyArray<A>): ReadonlyArray<A> => {
  for (let i = 1; i < values.length; i++) {
    if (values[i - 1].seq > values[i].seq) return [...values].sort((a, b) => a.seq - b.seq)
  }
  return values
}

/**
 * A run row with its journal, signals and (for `inspect`) attempts, archive and children as JSON
 * arrays (the archive and the children ordered by the query).
 *
 * @internal
 */
export const decodeDetails =
  (operation: string, runId: string) => (row: unknown): Effect.Effect<RunDetails, StoreError> => {
    const fast = isRow(row) ? fastDetails(row) : undefined
    if (fast !== undefined) {
      return Effect.succeed({
        run: fast.run,
        entries: bySeq(fast.entries),
        signals: bySeq(fast.signals),
        attempts: fast.attempts,
        archivedEntries: fast.archivedEntries,
        archivedAttempts: fast.archivedAttempts,
        children: fast.children
      })
    }
    return Either.match(decodeDetailsEither(row), {
      onLeft: (error) => Effect.fail(corrupt(operation, runId, error)),
      onRight: ({ archivedAttempts, archivedEntries, attempts, children, entries, signals, ...run }) =>
        Effect.succeed({
          run,
          entries: bySeq(entries),
          signals: bySeq(signals),
          attempts: attempts ?? [],
          archivedEntries: archivedEntries ?? [],
          archivedAttempts: archivedAttempts ?? [],
          children: children ?? []
        })
    })
  }

/** The first journal row of `row` that does not decode: its key when it has one. */
const corruptEntryKey = (row: unknown): string => {
  if (!isRow(row) || fastRun(row) === undefined) return "(run)"
  const entries = typeof row.entries === "string" ? parseJsonText(row.entries) : row.entries
  if (!Array.isArray(entries)) return "(journal)"
  for (const u of entries) {
    if (fastEntry(u) === undefined) return isRow(u) && typeof u.key === "string" ? u.key : "(journal)"
  }
  return fastArray(row.signals, fastSignal) === undefined ? "(signals)" : "(journal)"
}

/**
 * A run's snapshot for the engine (`load`). A row that does not decode is damaged data, which no
 * retry and no recovery mends: it fails with the `JournalDecodeError` the engine parks the run
 * `needs_attention` with (naming the run and the journal key), not with a `StoreError`, which the
 * engine treats as the database failing and retries.
 *
 * @internal
 */
export const decodeSnapshot = (runId: string) => (row: unknown): Effect.Effect<RunDetails, JournalDecodeError> =>
  Effect.catchTag(
    decodeDetails("load", runId)(row),
    "StoreError",
    (error) =>
      Effect.fail(new JournalDecodeError({ workflowId: runId, stepKey: corruptEntryKey(row), message: error.message }))
  )

const decodeAlertEither = Schema.decodeUnknownEither(AlertRow)

/**
 * Alert outbox rows, oldest first.
 *
 * @internal
 */
export const decodeAlerts =
  (operation: string) => (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<AlertRecord>, StoreError> =>
    Effect.map(
      Effect.forEach(rows, (row) =>
        Either.match(decodeAlertEither(row), {
          onLeft: (error) =>
            Effect.fail(
              new StoreError({
                operation,
                message: `alert "${rowId(row)}" has a corrupt row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
              })
            ),
          onRight: Effect.succeed
        })),
      (alerts) => [...alerts].sort((a, b) => a.createdAt - b.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
    )

const decodeCountsEither = Schema.decodeUnknownEither(Schema.Array(CountRow))

/**
 * `stats` rows, by workflow, then status.
 *
 * @internal
 */
export const decodeCounts = (rows: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<RunCount>, StoreError> =>
  Either.match(decodeCountsEither(rows), {
    onLeft: (error) =>
      Effect.fail(
        new StoreError({ operation: "stats", message: ParseResult.TreeFormatter.formatErrorSync(error) })
      ),
    onRight: (counts) =>
      Effect.succeed(
        [...counts].sort((a, b) =>
          a.workflow < b.workflow
            ? -1
            : a.workflow > b.workflow
            ? 1
            : a.status < b.status
            ? -1
            : a.status > b.status
            ? 1
            : 0
        )
      )
  })

// -------------------------------------------------------------------------------------------------
// events and cursors
// -------------------------------------------------------------------------------------------------

const Event = Schema.Union(
  Schema.Struct({ _tag: Schema.Literal("RunnableChanged"), workflow: Schema.String }),
  Schema.Struct({ _tag: Schema.Literal("RunFinished"), runId: Schema.String })
)

const decodeEvent = Schema.decodeUnknownOption(Schema.parseJson(Event))

/**
 * A notification payload, or none when it is not one of ours.
 *
 * @internal
 */
export const parseEvent = (payload: string): Option.Option<StoreEvent> => {
  // Fast path for the two shapes the store sends; anything else goes through the Schema.
  try {
    const u: unknown = JSON.parse(payload)
    if (isRow(u) && Object.keys(u).length === 2) {
      if (u._tag === "RunFinished" && typeof u.runId === "string") {
        return Option.some({ _tag: "RunFinished", runId: u.runId })
      }
      if (u._tag === "RunnableChanged" && typeof u.workflow === "string") {
        return Option.some({ _tag: "RunnableChanged", workflow: u.workflow })
      }
    }
  } catch {
    // not JSON: the Schema says so
  }
  return decodeEvent(payload)
}

const Cursor = Schema.compose(Schema.StringFromBase64Url, Schema.parseJson(Schema.Tuple(Schema.Number, Schema.String)))

/** The opaque `list` cursor: (created_at, id) of the last row of a page. @internal */
export const encodeCursor = (run: RunRecord): string => Schema.encodeSync(Cursor)([run.createdAt, run.id])

/** @internal */
export const decodeCursor = (cursor: string): Effect.Effect<readonly [number, string], StoreError> =>
  Schema.decodeUnknown(Cursor)(cursor).pipe(
    Effect.mapError(() => new StoreError({ operation: "list", message: `invalid cursor "${cursor}"` }))
  )
