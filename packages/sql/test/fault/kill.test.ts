/**
 * Guarantees 3, 4 and 6 with real processes: worker processes are killed with SIGKILL at random
 * moments (and replaced) while 200 five-step workflows run. Every run completes, each
 * `Step.transaction` side effect happens exactly once, each external effect keyed by
 * `Step.idempotencyKey` is applied once, and no finished run is left claimed.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Random } from "effect"
import { freshDatabase } from "../utils/database.js"
import type { WorkerProcess } from "../utils/fault.js"
import { assertFiveSteps, checkFiveSteps, connect, FiveSteps, makeFleet, statusCounts } from "../utils/fault.js"

const url = await freshDatabase()

const runs = 200
const workers = 5
const minKills = 50

describe("fault: kill -9", () => {
  it.scopedLive(
    `${runs} five-step runs complete exactly once while workers are killed at random`,
    () =>
      Effect.gen(function*() {
        const started = Date.now()
        const { client, sql } = yield* connect(url)
        const fleet = yield* makeFleet(url)
        let spawned = 0
        const spawn = () =>
          fleet.spawn({
            workerId: `w${++spawned}`,
            concurrency: 6,
            leaseMs: 1_000,
            heartbeatMs: 300,
            maxRecoveries: 1_000
          })
        for (let i = 0; i < workers; i++) spawn()
        yield* Effect.promise(() => Promise.all(fleet.all.map((worker) => worker.ready)))

        // runs arrive over ~25 s (8 a second, each taking about a second), so the kills below land while
        // runs are in flight; the last 8 arrive only after the 50th kill, so the workload cannot end first
        let kills = 0
        const ids = Array.from({ length: runs }, (_, i) => `kill-${i}`)
        const creating = yield* Effect.forEach(ids, (id, i) =>
          Effect.gen(function*() {
            if (i > 0 && i % 8 === 0) yield* Effect.sleep("1 second")
            while (i >= runs - 8 && kills < minKills) yield* Effect.sleep("100 millis")
            yield* client.start(FiveSteps, { n: i, maxDelayMs: 300 }, { id })
          }), { discard: true }).pipe(Effect.fork)

        // each worker is due for kill -9 at a random moment 0.3-1.5 s after it started serving, and is
        // replaced: the kill rate follows how fast this machine starts workers
        const lifetimes = new Map<string, number>()
        let killsHoldingRuns = 0
        const unfinished = Effect.map(statusCounts(sql, FiveSteps.name), (counts) => runs - (counts.succeeded ?? 0))
        while ((yield* unfinished) > 0) {
          if (Date.now() - started > 200_000) {
            const counts = JSON.stringify(yield* statusCounts(sql, FiveSteps.name))
            return assert.fail(`not finished after 200 s: ${counts}\n${fleet.tails()}`)
          }
          yield* Effect.sleep("100 millis")
          const due: Array<WorkerProcess> = []
          for (const worker of fleet.alive) {
            if (worker.readyAt === undefined) continue
            if (!lifetimes.has(worker.workerId)) {
              lifetimes.set(worker.workerId, yield* Random.nextIntBetween(300, 1_500))
            }
            if (Date.now() - worker.readyAt >= lifetimes.get(worker.workerId)!) {
              due.push(worker)
            }
          }
          if (due.length === 0) continue
          // a worker in the middle of runs, preferably: one holding none is killed only once it has been
          // due for a second (on a busy machine, workers take longer to claim after they start)
          const rows = yield* Effect.orDie(sql<{ readonly owner: string; readonly held: number }>`SELECT
              lease_owner AS owner, count(*)::int AS held FROM memento_runs
              WHERE lease_owner IN ${sql.in(due.map((worker) => worker.workerId))} GROUP BY lease_owner`)
          const held = new Map(rows.map((row) => [row.owner, row.held]))
          const holding = due.filter((worker) => (held.get(worker.workerId) ?? 0) > 0)
          const candidates = holding.length > 0 ?
            holding :
            due.filter((worker) => Date.now() - worker.readyAt! >= lifetimes.get(worker.workerId)! + 1_000)
          if (candidates.length === 0) continue
          const victim = candidates[yield* Random.nextIntBetween(0, candidates.length)]
          yield* fleet.stop(victim, "SIGKILL")
          kills++
          if ((held.get(victim.workerId) ?? 0) > 0) killsHoldingRuns++
          spawn()
        }
        yield* Effect.orDie(creating.await)

        const { problems, report } = yield* checkFiveSteps(sql, ids)
        const seconds = ((Date.now() - started) / 1000).toFixed(1)
        console.log(
          `kill -9 fault test: runs=${report.runs} kills=${kills} (of workers holding runs: ${killsHoldingRuns}) ` +
            `duplicates=${report.duplicates} lost=${report.lost} ` +
            `claimed=${report.claimed} reclaims=${report.reclaims} idempotency-key-absorbed=${report.absorbed} ` +
            `workers=${spawned} wall=${seconds}s`
        )
        assertFiveSteps(report, problems)
        assert.isAtLeast(kills, minKills)
        assert.isAtLeast(killsHoldingRuns, minKills * 0.8, "kills of workers holding runs")
        assert.isAbove(report.reclaims, 0, "killed workers' runs were recovered by others")
      }),
    300_000
  )
})
