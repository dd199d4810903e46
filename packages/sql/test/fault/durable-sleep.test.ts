/**
 * Guarantee 8 with real processes: a run sleeps durably for 30 seconds; every worker is killed -9,
 * a signal is sent (and repeated with the same signalId) while no worker runs, new workers start,
 * are shut down with SIGTERM, and others start again. The run wakes about 30 s after its sleep
 * began, not earlier, and receives the signal once.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { freshDatabase } from "../utils/database.js"
import { waitUntil } from "../utils/engine.js"
import { connect, makeFleet, Sleeper } from "../utils/fault.js"

const url = await freshDatabase()

const sleepMs = 30_000

describe("fault: a durable sleep and a pending signal across restarts of every worker", () => {
  it.scopedLive(
    "the run wakes 30 s after it fell asleep and receives the signal sent while no worker ran",
    () =>
      Effect.gen(function*() {
        const started = Date.now()
        const { client } = yield* connect(url)
        const fleet = yield* makeFleet(url)
        const settings = { leaseMs: 1_000, heartbeatMs: 300, pollMs: 100 }
        const generation = (name: string) =>
          Effect.forEach([`${name}-1`, `${name}-2`], (workerId) => fleet.start({ workerId, ...settings }), {
            concurrency: "unbounded"
          })
        const status = Effect.map(Effect.orDie(client.get("sleeper")), (run) => run.status)

        const first = yield* generation("first")
        const run = yield* client.start(Sleeper, { sleepMs }, { id: "sleeper" })
        yield* waitUntil(Effect.map(status, (s) => s === "sleeping"), { what: "the run to sleep", timeoutMs: 20_000 })
        for (const worker of first) yield* fleet.stop(worker, "SIGKILL")

        // no worker runs: the signal is kept for the wait that comes after the sleep; its repeat is ignored
        assert.deepStrictEqual(yield* client.signal(run.id, "go", "hello", { signalId: "evt-1" }), { duplicate: false })
        assert.deepStrictEqual(yield* client.signal(run.id, "go", "again", { signalId: "evt-1" }), { duplicate: true })

        yield* Effect.sleep("3 seconds")
        const second = yield* generation("second")
        yield* Effect.sleep("4 seconds")
        assert.strictEqual(yield* status, "sleeping", "neither the signal nor new workers wake a sleeping run early")
        for (const worker of second) yield* fleet.stop(worker, "SIGTERM")
        yield* Effect.sleep("2 seconds")
        const third = yield* generation("third")

        const result = yield* client.result(Sleeper, run.id).pipe(Effect.timeout("60 seconds"))
        const { entries, run: finished } = yield* client.inspect(run.id)
        const wakeAt = JSON.parse(entries.find((entry) => entry.key === "nap")!.meta!).wakeAt as number
        console.log(
          `durable sleep fault test: slept ${result.woke - result.before} ms (asked ${sleepMs}), woke ` +
            `${result.woke - wakeAt} ms after its wake time, signal=${JSON.stringify(result.signal)}, ` +
            `signals stored=${(yield* client.inspect(run.id)).signals.length}, claims=${finished.epoch}, ` +
            `wall=${((Date.now() - started) / 1000).toFixed(1)}s`
        )
        assert.strictEqual(result.signal, "hello")
        assert.isAtLeast(wakeAt - result.before, sleepMs, "the wake time is journaled when the sleep begins")
        assert.isBelow(wakeAt - result.before, sleepMs + 1_000)
        assert.isAtLeast(result.woke, wakeAt, "never woken before its time")
        assert.isBelow(result.woke - wakeAt, 3_000, "woken on time")
        assert.strictEqual(finished.status, "succeeded")
        assert.isNull(finished.leaseOwner, "no lease left")
        assert.deepStrictEqual(
          entries.map((entry) => `${entry.key}:${entry.kind}:${entry.status}`),
          ["before:step:succeeded", "nap:sleep:succeeded", "woke:step:succeeded", "go:signal:succeeded"]
        )
        for (const worker of third) assert.isTrue(worker.alive)
      }),
    120_000
  )
})
