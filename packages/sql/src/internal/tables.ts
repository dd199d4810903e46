import * as Migrator from "@effect/sql/Migrator"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Schedule from "effect/Schedule"

/** @internal */
export interface Tables {
  readonly prefix: string
  readonly runs: string
  readonly journal: string
  readonly attempts: string
  readonly signals: string
  /** Journal entries set aside by `retry`, by generation. */
  readonly journalArchive: string
  /** Attempts of archived journal entries. */
  readonly attemptsArchive: string
  /** The alert outbox. */
  readonly alerts: string
  /** Cron cursors: the last tick each schedule started. */
  readonly schedules: string
  readonly migrations: string
  /** The LISTEN/NOTIFY channel of this store (Postgres). */
  readonly channel: string
}

/** @internal */
export const defaultPrefix = "memento_"

const validPrefix = /^[a-z_][a-z0-9_]{0,39}$/

/** @internal */
export const isValidPrefix = (prefix: string): boolean => validPrefix.test(prefix)

/** @internal */
export const tables = (prefix: string = defaultPrefix): Tables => {
  return {
    prefix,
    runs: `${prefix}runs`,
    journal: `${prefix}journal`,
    attempts: `${prefix}attempts`,
    signals: `${prefix}signals`,
    journalArchive: `${prefix}journal_archive`,
    attemptsArchive: `${prefix}attempts_archive`,
    alerts: `${prefix}alerts`,
    schedules: `${prefix}schedules`,
    migrations: `${prefix}migrations`,
    channel: `${prefix}events`
  }
}

const pgSchema = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.runs} (
    id text COLLATE "C" PRIMARY KEY,
    workflow text NOT NULL,
    status text NOT NULL,
    payload text NOT NULL,
    output text,
    error text,
    epoch bigint NOT NULL DEFAULT 0,
    lease_owner text,
    lease_expires_at bigint,
    runnable_at bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    last_signal_seq bigint NOT NULL DEFAULT 0,
    recoveries integer NOT NULL DEFAULT 0,
    parent_id text COLLATE "C",
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    completed_at bigint
  )`,
  // claim: the claimable predicate (finished runs have no runnable_at)
  `CREATE INDEX ${t.runs}_claimable ON ${t.runs} (workflow, runnable_at, created_at) WHERE runnable_at IS NOT NULL`,
  // list: newest first, optionally by status or workflow; keyset on (created_at, id)
  `CREATE INDEX ${t.runs}_created ON ${t.runs} (created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_status_created ON ${t.runs} (status, created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_workflow_created ON ${t.runs} (workflow, created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_parent ON ${t.runs} (parent_id) WHERE parent_id IS NOT NULL`,
  `CREATE TABLE ${t.journal} (
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    key text NOT NULL,
    seq integer NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    output text,
    error text,
    attempts integer NOT NULL,
    meta text,
    started_at bigint NOT NULL,
    completed_at bigint,
    PRIMARY KEY (run_id, key)
  )`,
  `CREATE TABLE ${t.attempts} (
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    key text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    error text,
    started_at bigint NOT NULL,
    ended_at bigint,
    PRIMARY KEY (run_id, key, attempt)
  )`,
  `CREATE TABLE ${t.signals} (
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    name text NOT NULL,
    signal_id text NOT NULL,
    payload text NOT NULL,
    received_at bigint NOT NULL,
    UNIQUE (run_id, signal_id)
  )`,
  `CREATE INDEX ${t.signals}_run ON ${t.signals} (run_id, seq)`
]

const sqliteSchema = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.runs} (
    id TEXT PRIMARY KEY NOT NULL,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    payload TEXT NOT NULL,
    output TEXT,
    error TEXT,
    epoch INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_expires_at INTEGER,
    runnable_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    last_signal_seq INTEGER NOT NULL DEFAULT 0,
    recoveries INTEGER NOT NULL DEFAULT 0,
    parent_id TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    completed_at INTEGER
  ) STRICT`,
  `CREATE INDEX ${t.runs}_claimable ON ${t.runs} (workflow, runnable_at, created_at) WHERE runnable_at IS NOT NULL`,
  `CREATE INDEX ${t.runs}_created ON ${t.runs} (created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_status_created ON ${t.runs} (status, created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_workflow_created ON ${t.runs} (workflow, created_at DESC, id DESC)`,
  `CREATE INDEX ${t.runs}_parent ON ${t.runs} (parent_id) WHERE parent_id IS NOT NULL`,
  `CREATE TABLE ${t.journal} (
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    meta TEXT,
    started_at INTEGER NOT NULL,
    completed_at INTEGER,
    PRIMARY KEY (run_id, key)
  ) STRICT, WITHOUT ROWID`,
  `CREATE TABLE ${t.attempts} (
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    PRIMARY KEY (run_id, key, attempt)
  ) STRICT, WITHOUT ROWID`,
  `CREATE TABLE ${t.signals} (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    signal_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    UNIQUE (run_id, signal_id)
  ) STRICT`,
  `CREATE INDEX ${t.signals}_run ON ${t.signals} (run_id, seq)`
]

/**
 * Version 2: retry archive, alert outbox, cron cursors, and the index `purge` selects its victims
 * with. The archive and the outbox belong to their run (`ON DELETE CASCADE`), so deleting a run
 * deletes them. `${runs}_finished` holds only finished runs (those with `completed_at`), by
 * (status, completed_at): a purge batch reads only runs it may delete, never unfinished ones.
 */
const pgOperations = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.journalArchive} (
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    generation integer NOT NULL,
    key text NOT NULL,
    seq integer NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    output text,
    error text,
    attempts integer NOT NULL,
    meta text,
    started_at bigint NOT NULL,
    completed_at bigint,
    archived_at bigint NOT NULL,
    PRIMARY KEY (run_id, generation, key)
  )`,
  `CREATE TABLE ${t.attemptsArchive} (
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    generation integer NOT NULL,
    key text NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    error text,
    started_at bigint NOT NULL,
    ended_at bigint,
    PRIMARY KEY (run_id, generation, key, attempt)
  )`,
  `CREATE TABLE ${t.alerts} (
    id text COLLATE "C" PRIMARY KEY,
    run_id text COLLATE "C" NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    workflow text NOT NULL,
    status text NOT NULL,
    error text,
    created_at bigint NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    lease_expires_at bigint,
    delivered_at bigint
  )`,
  `CREATE INDEX ${t.alerts}_undelivered ON ${t.alerts} (created_at, id) WHERE delivered_at IS NULL`,
  `CREATE INDEX ${t.alerts}_run ON ${t.alerts} (run_id)`,
  `CREATE TABLE ${t.schedules} (
    name text COLLATE "C" PRIMARY KEY,
    last_tick bigint NOT NULL,
    updated_at bigint NOT NULL
  )`,
  `CREATE INDEX ${t.runs}_finished ON ${t.runs} (status, completed_at) WHERE completed_at IS NOT NULL`
]

const sqliteOperations = (t: Tables): ReadonlyArray<string> => [
  `CREATE TABLE ${t.journalArchive} (
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    key TEXT NOT NULL,
    seq INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    attempts INTEGER NOT NULL,
    meta TEXT,
    started_at INTEGER NOT NULL,
    completed_at INTEGER,
    archived_at INTEGER NOT NULL,
    PRIMARY KEY (run_id, generation, key)
  ) STRICT, WITHOUT ROWID`,
  `CREATE TABLE ${t.attemptsArchive} (
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    generation INTEGER NOT NULL,
    key TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    started_at INTEGER NOT NULL,
    ended_at INTEGER,
    PRIMARY KEY (run_id, generation, key, attempt)
  ) STRICT, WITHOUT ROWID`,
  `CREATE TABLE ${t.alerts} (
    id TEXT PRIMARY KEY NOT NULL,
    run_id TEXT NOT NULL REFERENCES ${t.runs} (id) ON DELETE CASCADE,
    workflow TEXT NOT NULL,
    status TEXT NOT NULL,
    error TEXT,
    created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    delivered_at INTEGER
  ) STRICT`,
  `CREATE INDEX ${t.alerts}_undelivered ON ${t.alerts} (created_at, id) WHERE delivered_at IS NULL`,
  `CREATE INDEX ${t.alerts}_run ON ${t.alerts} (run_id)`,
  `CREATE TABLE ${t.schedules} (
    name TEXT PRIMARY KEY NOT NULL,
    last_tick INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
  ) STRICT`,
  `CREATE INDEX ${t.runs}_finished ON ${t.runs} (status, completed_at) WHERE completed_at IS NOT NULL`
]

/**
 * Version 3: `implied_attempt` on journal rows (and their archive), see `storedRows`. Rows written
 * before it have NULL there and all their attempts in the attempts table, which is what NULL means.
 */
const impliedAttempts = (t: Tables, type: string): ReadonlyArray<string> => [
  `ALTER TABLE ${t.journal} ADD COLUMN implied_attempt ${type}`,
  `ALTER TABLE ${t.journalArchive} ADD COLUMN implied_attempt ${type}`
]

const dialectMigration = (
  pg: () => ReadonlyArray<string>,
  sqlite: () => ReadonlyArray<string>
): Effect.Effect<void, SqlError, SqlClient.SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const statements = sql.onDialectOrElse({ pg, sqlite, orElse: () => [] })
    if (statements.length === 0) {
      return yield* Effect.dieMessage("SqlStore supports Postgres and SQLite only")
    }
    yield* Effect.forEach(statements, (statement) => sql.unsafe(statement).raw, { discard: true })
  })

/**
 * The library's migrations, one record per version. Each runs the statements of its dialect one
 * by one (SQLite prepares one statement at a time).
 *
 * @internal
 */
export const migrations = (t: Tables): Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> => ({
  "1_create_tables": dialectMigration(() => pgSchema(t), () => sqliteSchema(t)),
  "2_operations": dialectMigration(() => pgOperations(t), () => sqliteOperations(t)),
  "3_implied_attempts": dialectMigration(() => impliedAttempts(t, "boolean"), () => impliedAttempts(t, "INTEGER"))
})

const migrator = Migrator.make({})

/**
 * Applies the migrations. Several processes may start at once: on Postgres the migrations table is
 * created first with `IF NOT EXISTS` (the Migrator's own check-then-create races), the Migrator
 * then serialises the migrations themselves with a table lock, and a lost race is retried.
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
