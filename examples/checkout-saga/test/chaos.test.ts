/**
 * `npm run chaos` in small: 30 orders through POST /checkout and worker processes on Postgres, at
 * least 20 workers killed with SIGKILL, faults in every provider, confirmations as signed webhooks.
 * Runs the built driver (`dist/chaos.js`, which `npm test` builds first) as a child process, as a
 * user would, and checks its exit code and the invariants it printed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"

const script = fileURLToPath(new URL("../dist/chaos.js", import.meta.url))

const invariants = [
  "each order charged at most once",
  "refunds equal the charges of failed orders",
  "inventory conserved",
  "no run stuck or unfinished",
  "every succeeded order has one shipment and one email",
  "no duplicate side effects",
  "declined, out-of-stock and unconfirmed orders took their paths",
  "each payment confirmation signalled its run once",
  "repeated POST /checkout (same Idempotency-Key) replayed the stored response"
]

const runChaos = (args: ReadonlyArray<string>) =>
  Effect.async<{ readonly code: number | null; readonly output: string }>((resume) => {
    const child = spawn(process.execPath, [script, ...args], {
      env: { ...process.env, CHAOS_MIN_KILLS: "20", CHAOS_TIMEOUT_MS: "180000" },
      stdio: ["ignore", "pipe", "pipe"]
    })
    let output = ""
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString("utf8")))
    const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()))
    child.on("exit", (code) => resume(Effect.succeed({ code, output })))
    // interrupted (a timeout): SIGTERM lets the driver kill its workers and stop its Postgres
    return Effect.promise(async () => {
      child.kill("SIGTERM")
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000)
      await exited
      clearTimeout(timer)
    })
  })

describe("chaos", () => {
  it.live("30 orders, at least 20 workers killed with SIGKILL: every invariant holds", () =>
    Effect.gen(function*() {
      assert.isTrue(existsSync(script), `${script} is missing: build first (npx tsc -b examples/checkout-saga)`)
      const { code, output } = yield* runChaos(["--orders=30"])
      console.log(output)
      assert.strictEqual(code, 0, output)
      for (const invariant of invariants) {
        assert.match(output, new RegExp(`✓ ${invariant.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`), invariant)
      }
      assert.notInclude(output, "✗")
      const line = output.split("\n").find((l) => l.startsWith("chaos result: "))
      assert.isDefined(line, "no result line")
      const result = JSON.parse(line!.slice("chaos result: ".length))
      assert.isTrue(result.passed)
      assert.strictEqual(result.orders, 30)
      assert.isAtLeast(result.kills, 20)
      assert.isAbove(result.killsHoldingRuns, 0, "some kills hit workers in the middle of sagas")
      const statuses = result.statuses as Record<string, number>
      assert.strictEqual((statuses.succeeded ?? 0) + (statuses.compensated ?? 0) + (statuses.failed ?? 0), 30)
      assert.isAbove(statuses.succeeded ?? 0, 0)
      assert.isAbove(statuses.compensated ?? 0, 0)
      assert.isAbove(statuses.failed ?? 0, 0)
      // confirmations came as signed webhooks, some of them more than once
      assert.isAtLeast(result.webhookDeliveries, statuses.succeeded ?? 0)
      assert.isAbove(result.webhookDuplicates, 0)
      assert.isAbove(result.replays, 0)
    }), 240_000)
})
