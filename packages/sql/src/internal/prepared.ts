import * as SqlClient from "@effect/sql/SqlClient"
import type { Connection } from "@effect/sql/SqlConnection"
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import { createHash } from "node:crypto"

/** The part of a `pg` client a named statement needs. */
interface PgQueryable {
  readonly processID?: number | undefined
  readonly query: (
    config: { readonly name: string; readonly text: string; readonly values: ReadonlyArray<unknown> },
    callback: (error: Error | undefined, result: { readonly rows: ReadonlyArray<unknown> }) => void
  ) => unknown
}

/** The `pg` client behind an `@effect/sql-pg` connection, when the connection exposes it. */
const pgOf = (connection: Connection): PgQueryable | undefined => {
  const pg = (connection as { readonly pg?: unknown }).pg
  return typeof pg === "object" && pg !== null && "query" in pg && typeof pg.query === "function"
    ? pg as PgQueryable
    : undefined
}

/** Distinct statement texts that get a name; others run unnamed (every session keeps what it prepared). */
const maxNamed = 256

/**
 * Runs fixed statement texts as named prepared statements: each pooled connection parses and
 * plans a text once and then only binds and executes it, which saves the parse and plan of every
 * call (a third to a half of a short statement's time on the server for the store's CTEs).
 *
 * `@effect/sql` has no prepared-statement API, so the statement goes to the `pg` client of the
 * connection that `SqlClient.reserve` (or the current transaction) hands out: the same pool and
 * the same transaction as every other statement. A client whose connections do not expose their
 * `pg` client (not `@effect/sql-pg`) runs the same text as an ordinary statement.
 *
 * @internal
 */
export const makePrepared = (sql: SqlClient.SqlClient, prepare: boolean = true) => {
  const names = new Map<string, string>()
  const nameOf = (text: string): string | undefined => {
    const known = names.get(text)
    if (!prepare || known !== undefined || names.size >= maxNamed) return known
    const name = "memento_" + createHash("sha1").update(text).digest("base64url").slice(0, 20)
    names.set(text, name)
    return name
  }

  const cancel = (pid: number | undefined): Effect.Effect<void> =>
    pid === undefined
      ? Effect.void
      : sql.unsafe(`SELECT pg_cancel_backend(${Math.floor(pid)})`).pipe(
        Effect.ignore,
        Effect.timeout(5_000),
        Effect.ignore
      )

  const onConnection = <A>(
    connection: Connection,
    text: string,
    values: ReadonlyArray<unknown>
  ): Effect.Effect<ReadonlyArray<A>, SqlError> => {
    const pg = pgOf(connection)
    const name = pg === undefined ? undefined : nameOf(text)
    if (pg === undefined || name === undefined) {
      return connection.execute(text, values, undefined) as Effect.Effect<ReadonlyArray<A>, SqlError>
    }
    return Effect.async<ReadonlyArray<A>, SqlError>((resume) => {
      pg.query({ name, text, values }, (error, result) => {
        resume(
          error === undefined || error === null
            ? Effect.succeed(result.rows as ReadonlyArray<A>)
            : Effect.fail(new SqlError({ cause: error, message: "Failed to execute statement" }))
        )
      })
      // Like @effect/sql-pg: an interrupted statement is cancelled on the server (best effort).
      return cancel(pg.processID)
    })
  }

  /** Runs `text` (placeholders `$1`, `$2`, ...) with `values`; in the current transaction if any. */
  return <A extends object = Record<string, unknown>>(
    text: string,
    values: ReadonlyArray<unknown>
  ): Effect.Effect<ReadonlyArray<A>, SqlError> =>
    Effect.flatMap(Effect.serviceOption(SqlClient.TransactionConnection), (transaction) =>
      Option.isSome(transaction)
        ? onConnection<A>(transaction.value[0], text, values)
        : Effect.scoped(
          // Uninterruptible: `@effect/sql-pg` never gives back a connection that the pool hands to a
          // fiber interrupted while it waited for one; this fiber instead takes it, then its scope
          // closes and releases it (an interrupt waits at most until a connection is free).
          Effect.flatMap(Effect.uninterruptible(sql.reserve), (connection) => onConnection<A>(connection, text, values))
        ))
}

/** @internal */
export type Prepared = ReturnType<typeof makePrepared>
