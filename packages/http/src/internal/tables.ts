import * as Migrator from "@effect/sql/Migrator"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

/** @internal */
export interface Tables {
  readonly prefix: string
  /** Idempotency-Key records: one row per (principal, key). */
  readonly idempotencyKeys: string
  /** Received webhook events: one row per (source, event ID). */
  readonly webhookEvents: string
  /** The Migrator's table of this package (apart from the store's, whose migration IDs it would share). */
  readonly migrations: string
}

/** @internal */
export const defaultPrefix = "memento_"

const validPrefix = /^[a-z_][a-z0-9_]{0,39}$/

/** The same rule as `@memento/sql`'s table prefix. @internal */
export const isValidPrefix = (prefix: string): boolean => validPrefix.test(prefix)

/** @internal */
export const tables = (prefix: string = defaultPrefix): Tables => ({
  prefix,
  idempotencyKeys: `${prefix}idempotency_keys`,
  webhookEvents: `${prefix}webhook_events`,
  migrations: `${prefix}http_migrations`
})

/** @internal */
export const resolve = (prefix: string | undefined): Effect.Effect<Tables> =>
  Effect.suspend(() => {
    const p = prefix ?? defaultPrefix
    return isValidPrefix(p)
      ? Effect.succeed(tables(p))
      : Effect.dieMessage(`@memento/http: invalid table prefix "${p}" (lower-case letters, digits and _)`)
  })

const pgSchema = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.idempotencyKeys} (
    principal text COLLATE "C" NOT NULL,
    idempotency_key text COLLATE "C" NOT NULL,
    fingerprint text NOT NULL,
    state text NOT NULL,
    token text,
    method text NOT NULL,
    path text NOT NULL,
    lease_expires_at bigint,
    status integer,
    headers text,
    body bytea,
    created_at bigint NOT NULL,
    completed_at bigint,
    expires_at bigint NOT NULL,
    PRIMARY KEY (principal, idempotency_key)
  )`,
  `CREATE INDEX ${t.idempotencyKeys}_expires ON ${t.idempotencyKeys} (expires_at)`,
  `CREATE TABLE ${t.webhookEvents} (
    source text COLLATE "C" NOT NULL,
    event_id text COLLATE "C" NOT NULL,
    received_at bigint NOT NULL,
    PRIMARY KEY (source, event_id)
  )`,
  `CREATE INDEX ${t.webhookEvents}_received ON ${t.webhookEvents} (received_at)`
]

const sqliteSchema = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.idempotencyKeys} (
    principal TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    token TEXT,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    lease_expires_at INTEGER,
    status INTEGER,
    headers TEXT,
    body BLOB,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (principal, idempotency_key)
  ) STRICT, WITHOUT ROWID`,
  `CREATE INDEX ${t.idempotencyKeys}_expires ON ${t.idempotencyKeys} (expires_at)`,
  `CREATE TABLE ${t.webhookEvents} (
    source TEXT NOT NULL,
    event_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (source, event_id)
  ) STRICT, WITHOUT ROWID`,
  `CREATE INDEX ${t.webhookEvents}_received ON ${t.webhookEvents} (received_at)`
]

const dialectMigration = (
  pg: () => ReadonlyArray<string>,
  sqlite: () => ReadonlyArray<string>
): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const statements = sql.onDialectOrElse({ pg, sqlite, orElse: () => [] })
    if (statements.length === 0) return yield* Effect.dieMessage("@memento/http supports Postgres and SQLite only")
    yield* Effect.forEach(statements, (statement) => sql.unsafe(statement).raw, { discard: true })
  })

/** @internal */
export const migrations = (t: Tables): Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> => ({
  "1_idempotency_and_webhooks": dialectMigration(() => pgSchema(t), () => sqliteSchema(t))
})

const migrator = Migrator.make({})

/**
 * Applies the package's migrations, like `@memento/sql` does its own: on Postgres the migrations
 * table is created with `IF NOT EXISTS` first, the Migrator serialises the migrations with a table
 * lock, and a lost race between processes is retried.
 *
 * @internal
 */
export const migrate = (
  t: Tables
): Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, SqlError | MigrationError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = (yield* SqlClient.SqlClient).withoutTransforms()
    yield* sql.onDialectOrElse({
      pg: () =>
        sql.unsafe(`CREATE TABLE IF NOT EXISTS ${t.migrations} (
          migration_id integer PRIMARY KEY,
          created_at timestamp with time zone NOT NULL DEFAULT now(),
          name text NOT NULL
        )`).raw,
      orElse: () => Effect.void
    })
    return yield* migrator({ loader: Migrator.fromRecord(migrations(t)), table: t.migrations }).pipe(
      Effect.provideService(SqlClient.SqlClient, sql)
    )
  }).pipe(Effect.retry({ times: 3, schedule: Schedule.spaced("50 millis") }))
