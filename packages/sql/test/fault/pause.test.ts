/**
 * Guarantee 5 with real processes: a worker is paused with SIGSTOP inside a step — a `Step.run` in
 * one run, a `Step.transaction` (its transaction open, its INSERT not committed) in another — until
 * its leases expire; another worker takes both runs over and finishes them; then the paused worker
 * is resumed with SIGCONT. It writes nothing: the journal, execution log, runs and side-effect
 * tables are unchanged, its transaction's INSERT is rolled back, and it starts no further step.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { freshDatabase } from "../utils/database.js"
import { waitUntil } from "../utils/engine.js"
import { connect, makeFleet, Pause } from "../utils/fault.js"

const url = await freshDatabase()

describe("fault: SIGSTOP until the lease expires, SIGCONT after another worker finished the run", () => {
  it.scopedLive("the paused worker writes nothing and starts no further step", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const { client, sql } = yield* connect(url)
      const fleet = yield* makeFleet(url)
      const settings = { leaseMs: 1_000, heartbeatMs: 300, pollMs: 100 }
      const paused = yield* fleet.start({ workerId: "paused", concurrency: 2, ...settings })
      const inHold = yield* client.start(Pause, { holdMs: 2_500, txMs: 0 }, { id: "pause-in-run-step" })
      const inTransaction = yield* client.start(Pause, { holdMs: 0, txMs: 2_500 }, { id: "pause-in-transaction" })
      const ids = sql.in([inHold.id, inTransaction.id])

      const entered = Effect.orDie(sql<{ readonly run_id: string; readonly step: string; readonly worker_id: string }>`
        SELECT run_id, step, worker_id FROM pause_enter WHERE run_id IN ${ids} ORDER BY at`)
      const isInside = (runId: string, step: string) =>
        Effect.map(
          entered,
          (rows) => rows.some((row) => row.run_id === runId && row.step === step && row.worker_id === "paused")
        )
      yield* waitUntil(
        Effect.zipWith(isInside(inHold.id, "hold"), isInside(inTransaction.id, "write"), (a, b) => a && b),
        { what: "the worker inside both steps", timeoutMs: 30_000 }
      )
      paused.signal("SIGSTOP")

      // the leases expire by the database clock; another worker takes over and finishes both runs
      yield* waitUntil(
        Effect.map(
          Effect.orDie(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM memento_runs WHERE id IN ${ids}
            AND lease_expires_at < (extract(epoch from clock_timestamp()) * 1000)::bigint`),
          ([row]) => row.n === 2
        ),
        { what: "the paused worker's leases to expire", timeoutMs: 10_000 }
      )
      yield* fleet.start({ workerId: "rescuer", concurrency: 2, ...settings })
      yield* waitUntil(
        Effect.map(
          Effect.orDie(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM memento_runs WHERE id IN ${ids}
            AND status = 'succeeded'`),
          ([row]) => row.n === 2
        ),
        { what: "the rescuer to finish both runs", timeoutMs: 30_000 }
      )

      const snapshot = Effect.orDie(Effect.all({
        runs: sql`SELECT * FROM memento_runs WHERE id IN ${ids} ORDER BY id`,
        journal: sql`SELECT * FROM memento_journal WHERE run_id IN ${ids} ORDER BY run_id, key`,
        attempts: sql`SELECT * FROM memento_attempts WHERE run_id IN ${ids} ORDER BY run_id, key, attempt`,
        transactionRows: sql`SELECT run_id, step, worker_id FROM fx_tx WHERE run_id IN ${ids} ORDER BY run_id, step`,
        entered
      }))
      const before = yield* snapshot
      paused.signal("SIGCONT")
      // its step timers are long overdue: the step bodies end at once and it tries to go on
      yield* Effect.sleep("3 seconds")
      const after = yield* snapshot

      assert.isTrue(paused.alive, `the resumed worker died:\n${paused.tail()}`)
      assert.deepStrictEqual(after, before, `the resumed worker wrote something:\n${paused.tail()}`)
      assert.deepStrictEqual(
        after.transactionRows.map((row) => `${row.run_id}/${row.step}/${row.worker_id}`),
        [`${inHold.id}/write/rescuer`, `${inTransaction.id}/write/rescuer`],
        "the paused transaction's INSERT was rolled back"
      )
      assert.deepStrictEqual(
        after.entered.filter((row) => row.worker_id === "paused").map((row) => `${row.run_id}/${row.step}`).sort(),
        [`${inHold.id}/hold`, `${inTransaction.id}/hold`, `${inTransaction.id}/write`].sort(),
        "the paused worker started no further step"
      )
      for (const run of [inHold, inTransaction]) {
        assert.deepStrictEqual(yield* client.result(Pause, run.id), ["hold", "write", "after"])
      }
      console.log(
        `SIGSTOP/SIGCONT fault test: writes after resume=0, steps started after resume=0, ` +
          `wall=${((Date.now() - started) / 1000).toFixed(1)}s; the resumed worker logged:\n` +
          paused.output.filter((line) => !line.includes("\"event\"")).slice(-12).join("\n")
      )
    }), 60_000)
})
