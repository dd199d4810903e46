/**
 * Idempotency keys the way Stripe honours them, for the simulated providers. The first request
 * with a key runs, and its response — a success or a business error such as a declined card — is
 * stored under the key in the same database transaction as the request's own writes. A repeat with
 * the same key and the same request gets the stored response and changes nothing; the same key
 * with another request is a bug in the caller and dies. A request that fails on the provider's
 * side (a database error) stores nothing, so a retry runs it afresh.
 */
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Either } from "effect"
import { Clock, Effect, Schedule, Schema } from "effect"
import { createHash } from "node:crypto"

/** The DDL of a provider's idempotency table (plain SQL for SQLite and Postgres). */
export const tableDdl = (table: string): string =>
  `CREATE TABLE IF NOT EXISTS ${table} (
    idempotency_key TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at BIGINT NOT NULL
  )`

export interface Options<A, I, E, EI> {
  readonly sql: SqlClient
  readonly table: string
  readonly operation: string
  readonly idempotencyKey: string
  /** The request's parameters; compared with the stored ones on a repeat. */
  readonly request: unknown
  readonly success: Schema.Schema<A, I>
  readonly error: Schema.Schema<E, EI>
}

/** What an idempotent request returned, and whether it was a stored response. */
export interface Outcome<A, E> {
  readonly response: Either.Either<A, E>
  readonly replayed: boolean
}

/**
 * Runs `execute` once per idempotency key, inside one transaction with the stored response.
 * `execute` returns a business outcome (`Either`); it fails only for provider-side problems,
 * which roll everything back.
 */
export const run = <A, I, E, EI, E2, R>(
  options: Options<A, I, E, EI>,
  execute: Effect.Effect<Either.Either<A, E>, E2, R>
): Effect.Effect<Outcome<A, E>, E2 | SqlError, R> => {
  const { idempotencyKey, operation, sql } = options
  const table = sql.literal(options.table)
  const Response = Schema.parseJson(Schema.Either({ right: options.success, left: options.error }))
  const request = JSON.stringify(options.request)
  return sql.withTransaction(Effect.gen(function*() {
    const stored = yield* sql<{ readonly operation: string; readonly request: string; readonly response: string }>`
      SELECT operation, request, response FROM ${table} WHERE idempotency_key = ${idempotencyKey}`
    if (stored.length > 0) {
      const row = stored[0]!
      if (row.operation !== operation || row.request !== request) {
        return yield* Effect.dieMessage(
          `idempotency key ${idempotencyKey} was used for ${row.operation} ${row.request}, ` +
            `now for ${operation} ${request}`
        )
      }
      const response = yield* Effect.orDie(Schema.decode(Response)(row.response))
      return { response, replayed: true }
    }
    const response = yield* execute
    const encoded = yield* Effect.orDie(Schema.encode(Response)(response))
    const now = yield* Clock.currentTimeMillis
    // A concurrent request with the same key (Postgres) fails here on the primary key and rolls
    // back; its retry reads the stored response.
    yield* sql`INSERT INTO ${table} (idempotency_key, operation, request, response, created_at)
      VALUES (${idempotencyKey}, ${operation}, ${request}, ${encoded}, ${now})`
    return { response, replayed: false }
  }))
}

/** A provider's object ID derived from the idempotency key of the request that created it. */
export const idFor = (prefix: string, idempotencyKey: string): string =>
  `${prefix}_${createHash("sha256").update(idempotencyKey).digest("hex").slice(0, 20)}`

/** Creates a provider's tables; retried because concurrent `CREATE TABLE IF NOT EXISTS` can race on Postgres. */
export const createTables = (sql: SqlClient, statements: ReadonlyArray<string>): Effect.Effect<void, SqlError> =>
  Effect.forEach(statements, (statement) => sql.unsafe(statement), { discard: true }).pipe(
    Effect.retry(Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(3))))
  )
