/**
 * The worker process of the fault tests: a plain Node service running `Worker.layer` against Postgres
 * (or, with SQLITE_FILE, a SQLite file: the embedded default, one process at a time) with
 * `NodeRuntime.runMain` (SIGTERM shuts it down gracefully; the tests also kill -9, SIGSTOP and
 * SIGCONT it).
 *
 * Plain ESM JavaScript on the BUILT packages (`@memento/*` resolve to packages/*\/dist, which
 * `tsc -b` writes and `npm test` runs first), so it starts with plain `node` in about half a second.
 * The workflow declarations match `test/utils/fault.ts` (names and Schemas), which starts the runs.
 *
 * Configuration (environment): DATABASE_URL or SQLITE_FILE, WORKER_ID, CONCURRENCY, LEASE_MS,
 * HEARTBEAT_MS, POLL_MS, MAX_RECOVERIES, STALL_STEP (a `fault-race` step key this worker hangs in,
 * holding its transaction, until it is killed), START_FIVE (`prefix,count,maxDelayMs`: once it serves,
 * this process starts the `fault-five` runs `prefix-0` .. `prefix-<count-1>` itself, as a service
 * would; a start of an existing ID returns that run). Prints one JSON line `{"event":"ready"}` once it
 * serves (and has made those starts).
 */
import { NodeRuntime } from "@effect/platform-node"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlStore } from "@memento/sql"
import { Step, Worker, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import { Effect, Layer, Random, Schedule, Schema } from "effect"
import pg from "pg"

const env = process.env
const url = env.DATABASE_URL
const sqliteFile = env.SQLITE_FILE
const workerId = env.WORKER_ID ?? `worker-${process.pid}`
const number = (name, fallback) => (env[name] === undefined || env[name] === "" ? fallback : Number(env[name]))

// ---------------------------------------------------------------------------------------------------
// side effects
// ---------------------------------------------------------------------------------------------------

/** A step's SQL failed (the database restarted, a connection was killed): retried by the step. */
class Transient extends Schema.TaggedError()("Transient", { message: Schema.String }) {}

const transient = (effect) =>
  Effect.mapError(effect, (error) => new Transient({ message: String(error.message ?? error) }))

/** Retries of a step whose SQL failed: for a database restart of several seconds. */
const stepRetry = Schedule.spaced("200 millis").pipe(Schedule.intersect(Schedule.recurs(100)))

/** A pool of its own for writes outside any step transaction (they are never rolled back). */
let outsidePool
const outside = (text, values) =>
  Effect.promise(() => {
    if (outsidePool === undefined) {
      outsidePool = new pg.Pool({ connectionString: url, max: 2 })
      outsidePool.on("error", () => {})
    }
    return outsidePool.query(text, values)
  })

const randomSleep = (maxMs) => Effect.flatMap(Random.nextIntBetween(0, Math.max(1, maxMs)), (ms) => Effect.sleep(ms))

// ---------------------------------------------------------------------------------------------------
// workflows
// ---------------------------------------------------------------------------------------------------

/**
 * Five steps: two `Step.transaction`s writing a row to `fx_tx` (exactly once), two `Step.run`s
 * applying an external effect keyed by `Step.idempotencyKey` to `fx_ext` (a repeat only counts an
 * attempt), one pure step. Every step sleeps a random time, so kills land anywhere.
 */
const FiveSteps = Workflow.make({
  name: "fault-five",
  payload: Schema.Struct({ n: Schema.Number, maxDelayMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

const FiveStepsLive = FiveSteps.implement(({ maxDelayMs, n }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const runId = yield* Workflow.workflowId
    const half = Math.floor(maxDelayMs / 2)
    const inTransaction = (step) =>
      Step.transaction(
        step,
        { success: Schema.String, error: Transient, retry: stepRetry },
        Effect.gen(function*() {
          yield* randomSleep(half)
          yield* transient(sql`INSERT INTO fx_tx (run_id, step, worker_id) VALUES (${runId}, ${step}, ${workerId})`)
          yield* randomSleep(half)
          return `${step}:${n}`
        })
      )
    const external = (step) =>
      Step.run(
        step,
        { success: Schema.String, error: Transient, retry: stepRetry },
        Effect.gen(function*() {
          const key = yield* Step.idempotencyKey
          yield* randomSleep(half)
          yield* transient(sql`INSERT INTO fx_ext (key, run_id, step, worker_id, attempts)
            VALUES (${key}, ${runId}, ${step}, ${workerId}, 1)
            ON CONFLICT (key) DO UPDATE SET attempts = fx_ext.attempts + 1`)
          yield* randomSleep(half)
          return `${step}:${n}`
        })
      )
    const reserve = yield* inTransaction("reserve")
    const charge = yield* external("charge")
    const compute = yield* Step.run(
      "compute",
      { success: Schema.String },
      Effect.as(randomSleep(maxDelayMs), `compute:${n * 2}`)
    )
    const ledger = yield* inTransaction("ledger")
    const notify = yield* external("notify")
    return [reserve, charge, compute, ledger, notify]
  })
)

/**
 * Five steps, each inside a transaction of its own that holds a Postgres advisory lock on
 * (run, step) while the step runs: a worker that finds the lock taken records a violation (two
 * workers inside one step at once) outside the transaction. Every completed execution leaves a row
 * in `race_exec`.
 */
const Race = Workflow.make({
  name: "fault-race",
  payload: Schema.Struct({ n: Schema.Number, stepMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

const RaceLive = Race.implement(({ n, stepMs }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const runId = yield* Workflow.workflowId
    const results = []
    for (const step of ["s1", "s2", "s3", "s4", "s5"]) {
      const body = sql.withTransaction(Effect.gen(function*() {
        const [{ locked }] = yield* sql`SELECT
          pg_try_advisory_xact_lock(hashtext(${runId}), hashtext(${step})) AS locked`
        if (!locked) {
          yield* outside(
            "INSERT INTO race_violation (run_id, step, worker_id) VALUES ($1, $2, $3)",
            [runId, step, workerId]
          )
        }
        yield* sql`INSERT INTO race_exec (run_id, step, worker_id) VALUES (${runId}, ${step}, ${workerId})`
        yield* Effect.sleep(env.STALL_STEP === step ? 3_600_000 : stepMs)
        return `${step}:${n}`
      }))
      results.push(yield* Step.run(step, { success: Schema.String }, Effect.orDie(body)))
    }
    return results
  })
)

/**
 * `hold` (a `Step.run` that sleeps), `write` (a `Step.transaction` that writes `fx_tx`, then sleeps)
 * and `after`. Every step body first records that this worker entered it, outside any transaction.
 */
const Pause = Workflow.make({
  name: "fault-pause",
  payload: Schema.Struct({ holdMs: Schema.Number, txMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

const PauseLive = Pause.implement(({ holdMs, txMs }) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const runId = yield* Workflow.workflowId
    const enter = (step) =>
      outside("INSERT INTO pause_enter (run_id, step, worker_id) VALUES ($1, $2, $3)", [runId, step, workerId])
    const hold = yield* Step.run(
      "hold",
      { success: Schema.String },
      Effect.zipRight(enter("hold"), Effect.as(Effect.sleep(holdMs), "hold"))
    )
    const write = yield* Step.transaction(
      "write",
      { success: Schema.String },
      Effect.gen(function*() {
        yield* enter("write")
        yield* Effect.orDie(sql`INSERT INTO fx_tx (run_id, step, worker_id) VALUES (${runId}, 'write', ${workerId})`)
        yield* Effect.sleep(txMs)
        return "write"
      })
    )
    const after = yield* Step.run("after", { success: Schema.String }, Effect.as(enter("after"), "after"))
    return [hold, write, after]
  })
)

/** A durable sleep, then a signal: `{ before, woke, signal }` with times from the worker's clock. */
const Sleeper = Workflow.make({
  name: "fault-sleep",
  payload: Schema.Struct({ sleepMs: Schema.Number }),
  success: Schema.Struct({ before: Schema.Number, woke: Schema.Number, signal: Schema.String })
})

const SleeperLive = Sleeper.implement(({ sleepMs }) =>
  Effect.gen(function*() {
    const before = yield* Step.run("before", { success: Schema.Number }, Effect.sync(() => Date.now()))
    yield* Workflow.sleep("nap", sleepMs)
    const woke = yield* Step.run("woke", { success: Schema.Number }, Effect.sync(() => Date.now()))
    const signal = yield* Effect.orDie(Workflow.awaitSignal("go", Schema.String))
    return { before, woke, signal }
  })
)

// ---------------------------------------------------------------------------------------------------
// the service
// ---------------------------------------------------------------------------------------------------

const concurrency = number("CONCURRENCY", 10)

// a connection for every run (transaction steps hold one while they run) and some for the worker
const StoreLive = sqliteFile
  ? SqlStore.layerSqlite({ filename: sqliteFile })
  : SqlStore.layerPg({ url, maxConnections: concurrency + 4 })

const WorkerLive = Worker.layer({
  workflows: [FiveSteps, Race, Pause, Sleeper],
  concurrency,
  workerId
}).pipe(
  Layer.provide(Layer.mergeAll(FiveStepsLive, RaceLive, PauseLive, SleeperLive)),
  Layer.provide(WorkflowConfig.layer({
    leaseMs: number("LEASE_MS", 1_000),
    heartbeatMs: number("HEARTBEAT_MS", 300),
    pollMs: number("POLL_MS", 100),
    maxRecoveries: number("MAX_RECOVERIES", 5),
    shutdownGraceMs: 1_000
  }))
)

// the worker, and a client for START_FIVE, on one store
const ServiceLive = Layer.merge(WorkerLive, WorkflowClient.layer).pipe(Layer.provide(StoreLive))

/** The runs START_FIVE asks for, started (idempotently) by this process. */
const startFive = Effect.gen(function*() {
  if (!env.START_FIVE) return
  const [prefix, count, maxDelayMs] = env.START_FIVE.split(",")
  const client = yield* WorkflowClient.WorkflowClient
  for (let n = 0; n < Number(count); n++) {
    yield* client.start(FiveSteps, { n, maxDelayMs: Number(maxDelayMs) }, { id: `${prefix}-${n}` })
  }
})

const main = Effect.gen(function*() {
  const context = yield* Layer.build(ServiceLive)
  yield* Effect.provide(startFive, context)
  yield* Effect.sync(() => process.stdout.write(JSON.stringify({ event: "ready", workerId, pid: process.pid }) + "\n"))
  return yield* Effect.never
}).pipe(Effect.scoped, Effect.annotateLogs("worker", workerId))

NodeRuntime.runMain(main)
