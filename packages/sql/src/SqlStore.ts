/**
 * The SQL implementation of Memento's `WorkflowStore` port, on `@effect/sql`: Postgres (through
 * `@effect/sql-pg`, the production store, any number of worker processes on any number of
 * machines) and SQLite (through `@effect/sql-sqlite-node`, the embedded store for one process).
 *
 * The store owns its tables (runs, journal, attempts, signals; prefixed, `memento_` by default)
 * and migrates them with `@effect/sql`'s Migrator when the layer is built. Every write is fenced by
 * the run's lease epoch and lease expiry is judged by the database clock. On Postgres every
 * operation is one statement on the happy path: a step's commit is one round trip, a run's journal
 * loads with one query, claiming is one `FOR UPDATE SKIP LOCKED` statement, and wake-up hints are
 * sent with `pg_notify` inside the statement that changes the run and received with `LISTEN`.
 *
 * The store requires a `SqlClient` and builds no pool of its own; `layerPg`, `layerPgConfig` and
 * `layerSqlite` are conveniences that build the client too. Use the same `SqlClient` for your own
 * SQL so that `Step.transaction` commits it atomically with the step's journal write.
 *
 * @since 0.1.0
 */
import type * as PgClient from "@effect/sql-pg/PgClient"
import type * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import type { ConfigError, Scope } from "effect"
import * as Cause from "effect/Cause"
import * as Config from "effect/Config"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Stream from "effect/Stream"
import { makePgEvents, pgConfig } from "./internal/listen.js"
import * as Pg from "./internal/pg.js"
import * as Sqlite from "./internal/sqlite.js"
import * as Tables from "./internal/tables.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * Prefix of the store's tables, indexes and notification channel: lower-case letters, digits
   * and `_`. Default `memento_`. Several stores with different prefixes can share a database.
   */
  readonly tablePrefix?: string | undefined
  /** Apply the migrations when the store is built (default `true`). */
  readonly migrate?: boolean | undefined
  /**
   * Postgres: run the hot statements as named prepared statements, parsed and planned once per
   * connection (default `true`). Turn off behind a connection pooler that cannot keep prepared
   * statements (PgBouncer in transaction mode before 1.21).
   */
  readonly preparedStatements?: boolean | undefined
}

const resolveTables = (options: Options | undefined) =>
  Effect.suspend(() => {
    const prefix = options?.tablePrefix ?? Tables.defaultPrefix
    return Tables.isValidPrefix(prefix)
      ? Effect.succeed(Tables.tables(prefix))
      : Effect.dieMessage(`SqlStore: invalid table prefix "${prefix}" (lower-case letters, digits and _)`)
  })

/**
 * Applies the store's migrations (idempotent; safe when several processes start at once). Run by
 * `make` and `layer` unless `migrate: false`.
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate: (
  options?: Options | undefined
) => Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, SqlError | MigrationError, SqlClient.SqlClient> =
  Effect.fn("SqlStore.migrate")(function*(options?: Options | undefined) {
    return yield* Tables.migrate(yield* resolveTables(options))
  })

/**
 * Builds the store on the `SqlClient` in context, after applying its migrations. The dialect
 * (Postgres or SQLite) is the client's. On Postgres, `events` listens on a connection of its own
 * while someone subscribes (when the client is a `PgClient`; otherwise workers only poll), and a
 * warning is logged when the server has `fsync` or `synchronous_commit` off: it may then lose
 * commits it acknowledged.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: (
  options?: Options | undefined
) => Effect.Effect<WorkflowStore["Type"], SqlError | MigrationError, SqlClient.SqlClient | Scope.Scope> = Effect.fn(
  "SqlStore.make"
)(function*(options?: Options | undefined) {
  const client = yield* SqlClient.SqlClient
  const tables = yield* resolveTables(options)
  if (options?.migrate !== false) yield* Tables.migrate(tables)
  const sql = client.withoutTransforms()
  return yield* client.onDialectOrElse({
    pg: () =>
      Effect.zipRight(
        Pg.warnIfNotDurable(sql),
        Effect.flatMap(
          Option.match(pgConfig(client), {
            onNone: () => Effect.succeed(Stream.never),
            onSome: (config) => makePgEvents(config, tables.channel)
          }),
          (events) => Pg.make(sql, tables, events, { prepare: options?.preparedStatements !== false })
        )
      ),
    sqlite: () => Sqlite.make(sql, tables),
    orElse: () => Effect.dieMessage("SqlStore supports Postgres and SQLite only")
  })
})

/**
 * The store as a layer on the `SqlClient` in context; migrations are applied when it is built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: Options | undefined
): Layer.Layer<WorkflowStore, SqlError | MigrationError, SqlClient.SqlClient> =>
  Layer.scoped(WorkflowStore, make(options))

/**
 * @since 0.1.0
 * @category models
 */
export interface PgOptions extends Options, Omit<PgClient.PgClientConfig, "url"> {
  /** A `postgres://` connection URL. */
  readonly url?: string | Redacted.Redacted | undefined
}

/**
 * A Postgres store with its own `PgClient` pool, which it also provides (use it for your own SQL,
 * so `Step.transaction` can commit it with the journal). Needs `@effect/sql-pg` installed.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPg = (
  options: PgOptions
): Layer.Layer<WorkflowStore | SqlClient.SqlClient | PgClient.PgClient, SqlError | MigrationError> => {
  const { migrate, preparedStatements, tablePrefix, url, ...config } = options
  return Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-pg/PgClient")),
      (PgClientModule) =>
        layer({ migrate, preparedStatements, tablePrefix }).pipe(
          Layer.provideMerge(PgClientModule.layer({
            ...config,
            url: typeof url === "string" ? Redacted.make(url) : url
          }))
        )
    )
  )
}

/**
 * `layerPg` with the connection URL read from `DATABASE_URL`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerPgConfig = (
  options: Omit<PgOptions, "url"> = {}
): Layer.Layer<
  WorkflowStore | SqlClient.SqlClient | PgClient.PgClient,
  SqlError | MigrationError | ConfigError.ConfigError
> => Layer.unwrapEffect(Effect.map(Config.redacted("DATABASE_URL"), (url) => layerPg({ ...options, url })))

/**
 * @since 0.1.0
 * @category models
 */
export interface SqliteOptions extends Options {
  /** The database file (created if missing; its folder must exist). */
  readonly filename: string
  /** How long a write waits for a lock held by another connection (default 5000 ms). */
  readonly busyTimeoutMs?: number | undefined
  /**
   * When a commit is on disk (`PRAGMA synchronous`). `"full"` (the default) syncs the write-ahead log
   * at every commit, so what a commit wrote (a journaled step, a created run, a stored HTTP
   * response) survives a power loss or an operating-system crash. `"normal"` syncs only at
   * checkpoints: commits are faster and still survive a crash of the process (kill -9), but the
   * last ones can be lost with the machine, and with them the record that a step or a request was
   * already done. (better-sqlite3 defaults to `"normal"` in WAL mode.)
   */
  readonly synchronous?: "full" | "normal" | undefined
}

/**
 * The client's layer, with a file that cannot be opened as a database (not a SQLite file, a folder,
 * no permission) failing with a `SqlError` that names it: better-sqlite3 throws while the client is
 * made, which would otherwise be a defect.
 */
const openSqlite = <A, E>(client: Layer.Layer<A, E>, filename: string): Layer.Layer<A, SqlError> =>
  Layer.catchAllCause(client, (cause) => {
    if (Cause.isInterruptedOnly(cause)) return Layer.failCause(cause as Cause.Cause<never>)
    return Layer.fail(new SqlError({ cause: Cause.squash(cause), message: `cannot open the SQLite file ${filename}` }))
  })

/**
 * A SQLite store in one file, in WAL mode with a busy timeout and every commit synced to disk
 * (`synchronous`), with its own `SqliteClient`, which it also provides. For one process. Needs
 * `@effect/sql-sqlite-node` installed.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerSqlite = (
  options: SqliteOptions
): Layer.Layer<WorkflowStore | SqlClient.SqlClient | SqliteClient.SqliteClient, SqlError | MigrationError> => {
  const { busyTimeoutMs = 5_000, filename, migrate, synchronous = "full", tablePrefix } = options
  const pragmas = Layer.effectDiscard(Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.unsafe(`PRAGMA busy_timeout = ${Math.max(0, Math.floor(busyTimeoutMs))}`)
    yield* sql.unsafe(`PRAGMA synchronous = ${synchronous === "normal" ? "NORMAL" : "FULL"}`)
    yield* sql.unsafe("PRAGMA foreign_keys = ON")
  }))
  return Layer.unwrapEffect(
    Effect.map(
      Effect.promise(() => import("@effect/sql-sqlite-node/SqliteClient")),
      (SqliteClientModule) =>
        layer({ migrate, tablePrefix }).pipe(
          Layer.provideMerge(
            pragmas.pipe(Layer.provideMerge(openSqlite(SqliteClientModule.layer({ filename }), filename)))
          )
        )
    )
  )
}
