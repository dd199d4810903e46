/**
 * Per-file databases on the Postgres started by `globalSetup.ts`, and layers for tests.
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { Effect, Layer, Redacted } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { afterAll, inject } from "vitest"

/** The URL of the test server's maintenance database. */
export const serverUrl = (): string => inject("databaseUrl")

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

const adminQuery = async (url: string, query: (client: pg.Client) => string) => {
  const client = new pg.Client({ connectionString: url })
  client.on("error", () => {})
  await client.connect()
  try {
    await client.query(query(client))
  } finally {
    await client.end()
  }
}

/** Databases created on a server we did not start (`DATABASE_URL`): dropped after the file's tests. */
const created: Array<{ readonly url: string; readonly name: string }> = []
afterAll(async () => {
  for (const { name, url } of created.splice(0)) {
    await adminQuery(url, (client) => `DROP DATABASE IF EXISTS ${client.escapeIdentifier(name)} WITH (FORCE)`).catch(
      () => {}
    )
  }
})

/** Creates `memento_test_<random>` on the test server and returns its URL. */
export const freshDatabase = async (url: string = serverUrl()): Promise<string> => {
  const name = `memento_test_${Math.random().toString(36).slice(2, 10)}`
  await adminQuery(url, (client) => `CREATE DATABASE ${client.escapeIdentifier(name)}`)
  if (!inject("databaseEmbedded")) created.push({ url, name })
  return withDatabase(url, name)
}

/** A `PgClient` pool on `url`. */
export const pgClient = (url: string, options: { readonly maxConnections?: number } = {}) =>
  PgClient.layer({ url: Redacted.make(url), maxConnections: options.maxConnections ?? 10 })

const sqliteDirs: Array<string> = []
afterAll(() => {
  for (const dir of sqliteDirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A fresh temporary SQLite file, removed after the test file's tests. */
export const tempSqliteFile = (): string => {
  const dir = mkdtempSync(join(tmpdir(), "memento-sqlite-"))
  sqliteDirs.push(dir)
  return join(dir, "store.db")
}

/** A `SqliteClient` on `filename` (WAL mode). */
export const sqliteClient = (filename: string) => SqliteClient.layer({ filename }).pipe(Layer.orDie)

export interface LoggedStatement {
  readonly text: string
  readonly values: ReadonlyArray<unknown>
}

export interface StatementLog {
  readonly statements: Array<LoggedStatement>
  /** Statements sent while running `effect` (their text, whitespace collapsed). */
  readonly count: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<readonly [A, ReadonlyArray<string>], E, R>
  /** Statements sent while running `effect`, with their parameters. */
  readonly countWithValues: <A, E, R>(
    effect: Effect.Effect<A, E, R>
  ) => Effect.Effect<readonly [A, ReadonlyArray<LoggedStatement>], E, R>
}

/**
 * A `PgClient` whose pool records every statement each connection sends to the server (including
 * BEGIN and COMMIT): the round trips of an operation, counted at the driver.
 */
export const countingPgClient = (url: string, options: { readonly maxConnections?: number } = {}) => {
  const log: StatementLog = {
    statements: [],
    count: (effect) => Effect.map(log.countWithValues(effect), ([a, statements]) => [a, statements.map((s) => s.text)]),
    countWithValues: (effect) =>
      Effect.suspend(() => {
        const start = log.statements.length
        return Effect.map(effect, (a) => [a, log.statements.slice(start)] as const)
      })
  }
  const client = PgClient.layerFromPool({
    acquire: Effect.acquireRelease(
      Effect.sync(() => {
        const pool = new pg.Pool({ connectionString: url, max: options.maxConnections ?? 10 })
        pool.on("connect", (connection) => {
          const query = connection.query.bind(connection) as (...args: Array<unknown>) => unknown
          ;(connection as unknown as { query: (...args: Array<unknown>) => unknown }).query = (...args) => {
            const first = args[0]
            const text = typeof first === "string"
              ? first
              : typeof first === "object" && first !== null && "text" in first
              ? String(first.text)
              : "?"
            const values = Array.isArray(args[1])
              ? args[1]
              : typeof first === "object" && first !== null && "values" in first && Array.isArray(first.values)
              ? first.values
              : []
            log.statements.push({ text: text.replace(/\s+/g, " ").trim(), values })
            return query(...args)
          }
        })
        return pool
      }),
      (pool) => Effect.promise(() => pool.end())
    )
  })
  return { client, log }
}

/** The `SqlClient` of the context, for raw SQL in tests. */
export const sqlClient = SqlClient.SqlClient
