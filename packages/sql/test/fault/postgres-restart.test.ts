/**
 * The database fails under running workers: every client connection is killed
 * (`pg_terminate_backend`), later the server itself is stopped and started again on the same port
 * and data folder. The worker processes reconnect by themselves (pool, LISTEN connection, retried
 * commits; runs whose commit or lease failed are abandoned and recovered) and every run completes
 * with each side effect exactly once. Runs on an embedded Postgres of its own.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { waitUntil } from "../utils/engine.js"
import { assertFiveSteps, checkFiveSteps, connect, FiveSteps, makeFleet, retrying } from "../utils/fault.js"
import { restartablePostgres } from "../utils/restartablePostgres.js"

const runs = 150

describe("fault: Postgres connections killed and the server restarted mid-run", () => {
  it.scopedLive("workers reconnect and every run completes exactly once", () =>
    Effect.gen(function*() {
      const started = Date.now()
      const server = yield* restartablePostgres
      const { client, sql } = yield* connect(server.url)
      const fleet = yield* makeFleet(server.url)
      const workers = yield* Effect.forEach(
        ["w1", "w2", "w3"],
        (workerId) => fleet.start({ workerId, concurrency: 8, leaseMs: 1_000, heartbeatMs: 300, maxRecoveries: 1_000 }),
        { concurrency: "unbounded" }
      )
      const ids = Array.from({ length: runs }, (_, i) => `restart-${i}`)
      yield* Effect.forEach(ids, (id, n) => client.start(FiveSteps, { n, maxDelayMs: 300 }, { id }), { discard: true })

      const succeeded = retrying(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM memento_runs
        WHERE workflow = ${FiveSteps.name} AND status = 'succeeded'`).pipe(Effect.map(([row]) => row.n), Effect.orDie)
      const progress = (n: number, what: string) =>
        waitUntil(Effect.map(succeeded, (done) => done >= n), { what, timeoutMs: 120_000, intervalMs: 100 })

      yield* progress(runs * 0.2, "a fifth of the runs")
      const terminated = yield* server.terminateConnections
      const atTermination = yield* succeeded

      yield* progress(runs * 0.5, "half of the runs")
      const atRestart = yield* succeeded
      yield* server.stop
      yield* Effect.sleep("2 seconds")
      yield* server.start
      yield* progress(runs, "every run")

      const { problems, report } = yield* retrying(checkFiveSteps(sql, ids))
      console.log(
        `Postgres fault test: runs=${report.runs} connections terminated=${terminated} (at ${atTermination} done), ` +
          `server down 2 s (at ${atRestart} done); duplicates=${report.duplicates} lost=${report.lost} ` +
          `claimed=${report.claimed} reclaims=${report.reclaims} idempotency-key-absorbed=${report.absorbed} ` +
          `wall=${((Date.now() - started) / 1000).toFixed(1)}s`
      )
      assertFiveSteps(report, problems)
      assert.isAbove(terminated, 3, "the workers' connections were killed")
      assert.isBelow(atRestart, runs, "the server restarted while runs were unfinished")
      for (const worker of workers) assert.isTrue(worker.alive, `${worker.workerId} died:\n${worker.tail()}`)
    }), 240_000)
})
