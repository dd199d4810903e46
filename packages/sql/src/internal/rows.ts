import type { SqlError } from "@effect/sql/SqlError"
import { StoreError } from "@memento/workflow/WorkflowError"
import type {
  AttemptRecord,
  JournalEntry,
  RunDetails,
  RunRecord,
  RunStatus,
  SignalRecord,
  StoreEvent
} from "@memento/workflow/WorkflowStore"
import type { Option } from "effect"
import { Effect, Either, ParseResult, Schema } from "effect"

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
    (error): error is SqlError => typeof error === "object" && error !== null && "_tag" in error && error._tag === "SqlError",
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
  Schema.transform(Schema.Literal(0, 1), Schema.Boolean, { strict: true, decode: (n) => n === 1, encode: (b) => b ? 1 : 0 })
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

const DetailsRow = Schema.Struct({
  ...RunRow.fields,
  entries: JsonArray(Entry),
  signals: JsonArray(Signal),
  attempts: Schema.optional(JsonArray(Attempt))
})

// The decoded types must be exactly the port's models.
const _run: Schema.Schema.Type<typeof RunRow> extends RunRecord ? true : false = true
const _status: RunStatus extends Schema.Schema.Type<typeof Status> ? true : false = true
const _entry: Schema.Schema.Type<typeof Entry> extends JournalEntry ? true : false = true
const _attempt: Schema.Schema.Type<typeof Attempt> extends AttemptRecord ? true : false = true
const _signal: Schema.Schema.Type<typeof Signal> extends SignalRecord ? true : false = true
void [_run, _status, _entry, _attempt, _signal]

const rowId = (row: unknown): string =>
  typeof row === "object" && row !== null && "id" in row && typeof row.id === "string" ? row.id : "?"

const corrupt = (operation: string, runId: string, error: ParseResult.ParseError) =>
  new StoreError({
    operation,
    message: `run "${runId}" has a corrupt row: ${ParseResult.TreeFormatter.formatErrorSync(error)}`
  })

const decodeRunEither = Schema.decodeUnknownEither(RunRow)
const decodeDetailsEither = Schema.decodeUnknownEither(DetailsRow)

/** @internal */
export const decodeRun = (operation: string) => (row: unknown): Effect.Effect<RunRecord, StoreError> =>
  Either.match(decodeRunEither(row), {
    onLeft: (error) => Effect.fail(corrupt(operation, rowId(row), error)),
    onRight: Effect.succeed
  })

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
 * A run row with its journal, signals and (for `inspect`) attempts as JSON arrays.
 *
 * @internal
 */
export const decodeDetails = (operation: string, runId: string) => (row: unknown): Effect.Effect<RunDetails, StoreError> =>
  Either.match(decodeDetailsEither(row), {
    onLeft: (error) => Effect.fail(corrupt(operation, runId, error)),
    onRight: ({ attempts, entries, signals, ...run }) =>
      Effect.succeed({ run, entries: bySeq(entries), signals: bySeq(signals), attempts: attempts ?? [] })
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
export const parseEvent: (payload: string) => Option.Option<StoreEvent> = decodeEvent

const Cursor = Schema.compose(Schema.StringFromBase64Url, Schema.parseJson(Schema.Tuple(Schema.Number, Schema.String)))

/** The opaque `list` cursor: (created_at, id) of the last row of a page. @internal */
export const encodeCursor = (run: RunRecord): string => Schema.encodeSync(Cursor)([run.createdAt, run.id])

/** @internal */
export const decodeCursor = (cursor: string): Effect.Effect<readonly [number, string], StoreError> =>
  Schema.decodeUnknown(Cursor)(cursor).pipe(
    Effect.mapError(() => new StoreError({ operation: "list", message: `invalid cursor "${cursor}"` }))
  )
