/**
 * Guarantees 1, 3, 4 and 6 on the embedded default, SQLite, with real processes: the one worker
 * process (a service that also starts the runs, by ID, each time it boots) is killed with SIGKILL at
 * random moments and started again, over and over. Every run completes once, each `Step.transaction`
 * side effect happens exactly once, each external effect keyed by `Step.idempotencyKey` is applied
 * once, and no finished run is left claimed.
 *
 * The test reads the file only through short-lived connections, so that most kills leave no other
 * connection open: the next process then recovers the write-ahead log itself, as after a crash of a
 * service that is alone with its file.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer, Random } from "effect"
import { sqliteClient, tempSqliteFile } from "../utils/database.js"
import type { WorkerProcess } from "../utils/fault.js"
import { assertFiveSteps, checkFiveSteps, FiveSteps, makeFleet, statusCounts } from "../utils/fault.js"

const runs = 60
const minKills = 20

/** Runs `f` on a connection of its own to `file`, closed afterwards. */
const withFile = <A, E>(file: string, f: (sql: SqlClient.SqlClient) => Effect.Effect<A, E>) =>
  Effect.scoped(Effect.gen(function*() {
    const sql = Context.get(yield* Layer.build(sqliteClient(file)), SqlClient.SqlClient)
    yield* Effect.orDie(sql.unsafe("PRAGMA busy_timeout = 5000"))
    return yield* f(sql)
  }))

/** The side-effect tables of the five-step workload, in SQLite's dialect. */
const createTables = (sql: SqlClient.SqlClient) =>
  Effect.forEach([
    `CREATE TABLE IF NOT EXISTS fx_tx (run_id text NOT NULL, step text NOT NULL, worker_id text NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS fx_ext (key text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
      worker_id text NOT NULL, attempts integer NOT NULL)`
  ], (statement) =>
    sql.unsafe(statement), { discard: true }).pipe(Effect.orDie)

describe("fault: kill -9 on SQLite", () => {
  it.scopedLive(
    `${runs} five-step runs complete exactly once while the one worker process is killed at random`,
    () =>
      Effect.gen(function*() {
        const started = Date.now()
        const file = tempSqliteFile()
        yield* withFile(file, createTables)
        const fleet = yield* makeFleet({ sqliteFile: file })

        // each process starts the runs it is told about (more with every kill, so that runs arrive
        // while the kills go on), then serves; a start of an ID that exists returns that run
        let kills = 0
        let spawned = 0
        const boot = () =>
          fleet.start({
            workerId: `s${++spawned}`,
            concurrency: 8,
            leaseMs: 1_000,
            heartbeatMs: 300,
            maxRecoveries: 1_000,
            startFive: { prefix: "sqlite-kill", count: Math.min(runs, 10 + kills * 3), maxDelayMs: 300 }
          })
        let worker: WorkerProcess = yield* boot()

        // each process is killed at a random moment up to a second after it took runs (a process whose
        // runs are all still leased by the one before waits for that lease to expire first)
        const held = (holder: WorkerProcess) =>
          withFile(file, (sql) =>
            Effect.map(
              Effect.orDie(sql<{ readonly held: number }>`SELECT count(*) AS held FROM memento_runs
              WHERE lease_owner = ${holder.workerId}`),
              ([row]) => Number(row.held)
            ))
        let killsHoldingRuns = 0
        while (kills < minKills) {
          for (let i = 0; i < 50 && (yield* held(worker)) === 0; i++) yield* Effect.sleep("100 millis")
          yield* Effect.sleep(yield* Random.nextIntBetween(0, 1_000))
          const holding = (yield* held(worker)) > 0
          yield* fleet.stop(worker, "SIGKILL")
          kills++
          if (holding) killsHoldingRuns++
          worker = yield* boot()
        }

        // the last process finishes what is left, then shuts down gracefully
        const ids = Array.from({ length: runs }, (_, i) => `sqlite-kill-${i}`)
        const unfinished = withFile(
          file,
          (sql) => Effect.map(statusCounts(sql, FiveSteps.name), (counts) => runs - (counts.succeeded ?? 0))
        )
        while ((yield* unfinished) > 0) {
          if (Date.now() - started > 150_000) {
            const counts = JSON.stringify(yield* withFile(file, (sql) => statusCounts(sql, FiveSteps.name)))
            return assert.fail(`not finished after 150 s: ${counts}\n${fleet.tails()}`)
          }
          yield* Effect.sleep("200 millis")
        }
        yield* fleet.stop(worker, "SIGTERM")
        assert.strictEqual(worker.child.exitCode, 0, `graceful shutdown:\n${worker.tail()}`)

        const { problems, report } = yield* withFile(file, (sql) => checkFiveSteps(sql, ids))
        const seconds = ((Date.now() - started) / 1000).toFixed(1)
        console.log(
          `kill -9 fault test on SQLite: runs=${report.runs} kills=${kills} (of the process holding runs: ` +
            `${killsHoldingRuns}) duplicates=${report.duplicates} lost=${report.lost} claimed=${report.claimed} ` +
            `reclaims=${report.reclaims} idempotency-key-absorbed=${report.absorbed} processes=${spawned} ` +
            `wall=${seconds}s`
        )
        assertFiveSteps(report, problems)
        assert.isAtLeast(kills, minKills)
        assert.isAtLeast(killsHoldingRuns, minKills * 0.6, "kills of a process holding runs")
        assert.isAbove(report.reclaims, 0, "the killed processes' runs were taken over by the next one")
      }),
    240_000
  )
})
