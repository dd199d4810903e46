/**
 * `npm start` as a user runs it: the built service (`dist/main.js`, which `npm test` builds first)
 * in an empty folder. On first start it drives the scenario — a good order, a declined card, and a
 * worker process killed with SIGKILL mid-saga whose run the API process recovers — prints the
 * dashboard's address and serves; SIGTERM stops it with exit code 0; a second start finds the
 * checkouts and skips the scenario.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { existsSync, mkdtempSync, rmSync } from "node:fs"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"

const script = fileURLToPath(new URL("../dist/main.js", import.meta.url))

const freePort = () =>
  Effect.async<number>((resume) => {
    const server = createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resume(Effect.succeed(port)))
    })
  })

/** Starts the service in `cwd`; resolves once it printed `until`, with the output so far. Stopped with the scope. */
const start = (cwd: string, port: number, until: string) =>
  Effect.tap(started(cwd, port, until), ({ child }) =>
    Effect.addFinalizer(() =>
      Effect.sync(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM")
      })
    ))

const started = (cwd: string, port: number, until: string) =>
  Effect.async<{ readonly child: ChildProcess; readonly output: () => string }, Error>((resume) => {
    const env: NodeJS.ProcessEnv = { ...process.env, PORT: String(port) }
    delete env.DATABASE_URL
    delete env.SQLITE_FILE
    const child = spawn(process.execPath, [script], { cwd, env, stdio: ["ignore", "pipe", "pipe"] })
    let output = ""
    let done = false
    const onData = (chunk: Buffer) => {
      output += chunk.toString("utf8")
      if (!done && output.includes(until)) {
        done = true
        resume(Effect.succeed({ child, output: () => output }))
      }
    }
    child.stdout.on("data", onData)
    child.stderr.on("data", onData)
    child.on("exit", (code) => {
      if (!done) {
        done = true
        resume(Effect.fail(new Error(`the service exited (${code}) before printing "${until}":\n${output}`)))
      }
    })
    // interrupted: SIGTERM lets the service stop the scenario's worker process
    return Effect.sync(() => {
      child.kill("SIGTERM")
      setTimeout(() => child.kill("SIGKILL"), 10_000).unref()
    })
  })

const stop = (child: ChildProcess) =>
  Effect.async<number | null>((resume) => {
    child.on("exit", (code) => resume(Effect.succeed(code)))
    child.kill("SIGTERM")
  })

describe("npm start", () => {
  it.live(
    "first start: the scenario with a crash and recovery mid-saga, then the API and dashboard",
    () =>
      Effect.gen(function*() {
        assert.isTrue(existsSync(script), `${script} is missing: build first (npx tsc -b examples/checkout-saga)`)
        const cwd = mkdtempSync(join(tmpdir(), "checkout-start-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => rmSync(cwd, { recursive: true, force: true })))
        const port = yield* freePort()

        const first = yield* start(cwd, port, "Try:")
        const output = first.output()
        assert.include(output, `dashboard on http://localhost:${port}/admin/`)
        assert.match(output, /demo-good-1, a good order, pm_card_visa: succeeded/)
        assert.match(output, /demo-declined-1, a declined card, pm_card_declined: compensated \(card-declined/)
        assert.match(output, /killed with SIGKILL in the middle of the saga/)
        assert.match(output, /demo-crash-1, its worker killed mid-saga, pm_card_visa: succeeded/)
        assert.match(
          output,
          /demo-crash-1 at the providers: 1 charge .* 1 shipment, 1 email — the card was charged once/
        )
        assert.match(output, /webhooks: {2}the payment provider POSTed \d+ signed confirmations/)
        assert.include(output, "invariants hold")
        assert.notInclude(output, "scenario failed")

        const base = `http://127.0.0.1:${port}`
        const health = yield* Effect.promise(() => fetch(`${base}/health`))
        assert.strictEqual(health.status, 200)
        const dashboard = yield* Effect.promise(() => fetch(`${base}/admin/`))
        assert.strictEqual(dashboard.status, 200)
        assert.include(yield* Effect.promise(() => dashboard.text()), "demo-crash-1")
        const ledger = yield* Effect.promise(() => fetch(`${base}/ledger`).then((r) => r.json()))
        assert.isTrue((ledger as any).invariants.hold)

        assert.strictEqual(yield* stop(first.child), 0)

        const second = yield* start(cwd, port, "Try:")
        assert.include(second.output(), "Checkouts exist in the database already; the first-start scenario is skipped.")
        assert.strictEqual(yield* stop(second.child), 0)
      }).pipe(Effect.scoped),
    120_000
  )
})
