/**
 * The test side of the fault tests: worker child processes (`fault/worker.mjs`) spawned, killed,
 * paused and resumed; the workflow declarations they execute (names and Schemas match the worker
 * script); the side-effect tables their steps write; and the checks of the five-step workload.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import type { Scope } from "effect"
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import type { ChildProcess } from "node:child_process"
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { pgClient } from "./database.js"

// -------------------------------------------------------------------------------------------------
// workflows (implemented in fault/worker.mjs)
// -------------------------------------------------------------------------------------------------

/** reserve (transaction), charge (idempotency key), compute, ledger (transaction), notify (idempotency key). */
export const FiveSteps = Workflow.make({
  name: "fault-five",
  payload: Schema.Struct({ n: Schema.Number, maxDelayMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

export const fiveStepsOutput = (n: number): ReadonlyArray<string> => [
  `reserve:${n}`,
  `charge:${n}`,
  `compute:${n * 2}`,
  `ledger:${n}`,
  `notify:${n}`
]

/** s1..s5, each holding an advisory lock on (run, step) while it runs. */
export const Race = Workflow.make({
  name: "fault-race",
  payload: Schema.Struct({ n: Schema.Number, stepMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

/** hold (Step.run, sleeps holdMs), write (Step.transaction, sleeps txMs), after. */
export const Pause = Workflow.make({
  name: "fault-pause",
  payload: Schema.Struct({ holdMs: Schema.Number, txMs: Schema.Number }),
  success: Schema.Array(Schema.String)
})

/** before, a durable sleep of sleepMs, woke, then awaits the signal "go". */
export const Sleeper = Workflow.make({
  name: "fault-sleep",
  payload: Schema.Struct({ sleepMs: Schema.Number }),
  success: Schema.Struct({ before: Schema.Number, woke: Schema.Number, signal: Schema.String })
})

/** The side-effect tables the worker script writes. */
export const createFaultTables = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const statements = [
    `CREATE TABLE IF NOT EXISTS fx_tx (run_id text NOT NULL, step text NOT NULL, worker_id text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    `CREATE TABLE IF NOT EXISTS fx_ext (key text PRIMARY KEY, run_id text NOT NULL, step text NOT NULL,
      worker_id text NOT NULL, attempts integer NOT NULL)`,
    `CREATE TABLE IF NOT EXISTS race_exec (run_id text NOT NULL, step text NOT NULL, worker_id text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    `CREATE TABLE IF NOT EXISTS race_violation (run_id text NOT NULL, step text NOT NULL, worker_id text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp())`,
    `CREATE TABLE IF NOT EXISTS pause_enter (run_id text NOT NULL, step text NOT NULL, worker_id text NOT NULL,
      at timestamptz NOT NULL DEFAULT clock_timestamp())`
  ]
  yield* Effect.forEach(statements, (statement) => sql.unsafe(statement), { discard: true })
}).pipe(Effect.orDie)

// -------------------------------------------------------------------------------------------------
// the test's own client and SQL
// -------------------------------------------------------------------------------------------------

/**
 * The test's `WorkflowClient` and `SqlClient` on `url` (migrating the store), with the side-effect
 * tables created, built in the test's scope.
 */
export const connect = (url: string) =>
  Effect.gen(function*() {
    const context = yield* Layer.build(
      Layer.mergeAll(WorkflowClient.layer, WorkflowConfig.layer({ resultPollMs: 200 })).pipe(
        Layer.provideMerge(SqlStore.layer()),
        Layer.provideMerge(pgClient(url, { maxConnections: 4 }))
      )
    )
    const sql = Context.get(context, SqlClient.SqlClient)
    yield* Effect.provideService(createFaultTables, SqlClient.SqlClient, sql)
    return { sql, client: Context.get(context, WorkflowClient.WorkflowClient) }
  }).pipe(Effect.orDie)

/** Retries an effect of the test across a database restart. */
export const retrying = <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  Effect.retry(effect, Schedule.spaced("250 millis").pipe(Schedule.intersect(Schedule.recurs(240))))

/** Runs of `workflow` per status (Postgres or SQLite). */
export const statusCounts = (sql: SqlClient.SqlClient, workflow: string) =>
  Effect.map(
    sql<{ readonly status: string; readonly n: number | string }>`SELECT status, count(*) AS n FROM memento_runs
      WHERE workflow = ${workflow} GROUP BY status`,
    (rows) => Object.fromEntries(rows.map((row) => [row.status, Number(row.n)])) as Record<string, number>
  ).pipe(Effect.orDie)

// -------------------------------------------------------------------------------------------------
// worker processes
// -------------------------------------------------------------------------------------------------

const script = fileURLToPath(new URL("../fault/worker.mjs", import.meta.url))
const builtPackages = [
  fileURLToPath(new URL("../../dist/index.js", import.meta.url)),
  fileURLToPath(new URL("../../../workflow/dist/index.js", import.meta.url))
]

export interface WorkerProcessOptions {
  readonly workerId: string
  /** `fault-five` runs the process starts itself once it serves (idempotently, by ID). */
  readonly startFive?: { readonly prefix: string; readonly count: number; readonly maxDelayMs: number } | undefined
  readonly concurrency?: number | undefined
  readonly leaseMs?: number | undefined
  readonly heartbeatMs?: number | undefined
  readonly pollMs?: number | undefined
  readonly maxRecoveries?: number | undefined
  /** A `fault-race` step this worker hangs in (inside its transaction) until it is killed. */
  readonly stallStep?: string | undefined
}

/** One worker process: its last output lines, readiness and exit. */
export class WorkerProcess {
  readonly output: Array<string> = []
  /** When it printed that it serves (epoch ms). */
  readyAt: number | undefined = undefined
  readonly ready: Promise<void>
  readonly exited: Promise<void>
  constructor(readonly workerId: string, readonly child: ChildProcess) {
    let markReady: () => void = () => {}
    let failReady: (error: Error) => void = () => {}
    this.ready = new Promise<void>((resolve, reject) => {
      markReady = resolve
      failReady = reject
    })
    this.ready.catch(() => {})
    let pending = ""
    const collect = (chunk: Buffer) => {
      pending += chunk.toString("utf8")
      const lines = pending.split("\n")
      pending = lines.pop() ?? ""
      for (const line of lines) {
        if (line.includes("\"event\":\"ready\"")) {
          this.readyAt = Date.now()
          markReady()
        }
        this.output.push(line)
        if (this.output.length > 300) this.output.shift()
      }
    }
    child.stdout?.on("data", collect)
    child.stderr?.on("data", collect)
    this.exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        failReady(new Error(`worker ${workerId} exited (${code ?? signal}) before it was ready:\n${this.tail()}`))
        resolve()
      })
    })
  }
  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }
  signal(signal: NodeJS.Signals): void {
    if (this.alive) this.child.kill(signal)
  }
  tail(lines = 40): string {
    return this.output.slice(-lines).join("\n")
  }
}

const everyChild = new Set<ChildProcess>()
process.once("exit", () => {
  for (const child of everyChild) child.kill("SIGKILL")
})

/** Where the workers' store is: a Postgres URL, or a SQLite file (one worker process at a time). */
export type FleetStore = string | { readonly sqliteFile: string }

/**
 * Spawns worker processes on `store`; every one still running is killed (-9) when the scope closes.
 */
export const makeFleet = (store: FleetStore): Effect.Effect<Fleet, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const missing = builtPackages.filter((file) => !existsSync(file))
      if (missing.length > 0) {
        throw new Error(
          `the fault tests run the built packages: run \`npx tsc -b\` first (missing ${missing.join(", ")})`
        )
      }
      return new Fleet(store)
    }),
    (fleet) => fleet.close
  )

export class Fleet {
  readonly all: Array<WorkerProcess> = []
  constructor(readonly store: FleetStore) {}

  spawn(options: WorkerProcessOptions): WorkerProcess {
    const setting = (value: number | string | undefined) => value === undefined ? "" : String(value)
    const child = spawn(process.execPath, [script], {
      env: {
        ...process.env,
        ...(typeof this.store === "string" ? { DATABASE_URL: this.store } : { SQLITE_FILE: this.store.sqliteFile }),
        WORKER_ID: options.workerId,
        CONCURRENCY: setting(options.concurrency),
        LEASE_MS: setting(options.leaseMs),
        HEARTBEAT_MS: setting(options.heartbeatMs),
        POLL_MS: setting(options.pollMs),
        MAX_RECOVERIES: setting(options.maxRecoveries),
        STALL_STEP: setting(options.stallStep),
        START_FIVE: options.startFive === undefined
          ? ""
          : [options.startFive.prefix, options.startFive.count, options.startFive.maxDelayMs].join(",")
      },
      stdio: ["ignore", "pipe", "pipe"]
    })
    everyChild.add(child)
    child.once("exit", () => everyChild.delete(child))
    const worker = new WorkerProcess(options.workerId, child)
    this.all.push(worker)
    return worker
  }

  /** Spawns a worker and waits until it serves. */
  start(options: WorkerProcessOptions): Effect.Effect<WorkerProcess> {
    return Effect.suspend(() => {
      const worker = this.spawn(options)
      return Effect.as(Effect.promise(() => worker.ready), worker)
    })
  }

  get alive(): Array<WorkerProcess> {
    return this.all.filter((worker) => worker.alive)
  }

  /** Sends `signal` to a worker and waits until it exited. */
  stop(worker: WorkerProcess, signal: NodeJS.Signals = "SIGKILL"): Effect.Effect<void> {
    return Effect.suspend(() => {
      worker.signal(signal)
      return Effect.promise(() => worker.exited)
    })
  }

  /** Every worker's last output lines, for a failing test's message. */
  tails(lines = 15): string {
    return this.all.map((worker) => `--- ${worker.workerId}\n${worker.tail(lines)}`).join("\n")
  }

  readonly close: Effect.Effect<void> = Effect.promise(async () => {
    for (const worker of this.all) worker.signal("SIGKILL")
    await Promise.all(this.all.map((worker) => worker.exited))
  })
}

// -------------------------------------------------------------------------------------------------
// the five-step workload's checks
// -------------------------------------------------------------------------------------------------

export interface FiveStepsReport {
  readonly runs: number
  readonly succeeded: number
  /** Runs not succeeded, with a wrong output, or missing a side effect. */
  readonly lost: number
  /** Side effects applied more than once: extra `fx_tx` rows, extra `fx_ext` rows for one step. */
  readonly duplicates: number
  /** Finished runs still holding a lease. */
  readonly claimed: number
  /** Repeated calls of the external effect that its idempotency key absorbed. */
  readonly absorbed: number
  /** Claims after the first (recoveries of orphaned or lost runs). */
  readonly reclaims: number
}

/**
 * Checks every run of the five-step workload: succeeded with the right output and journal, no
 * lease left, each transactional side effect once, each keyed external effect applied once. Plain
 * reads, counted here, so that it runs on Postgres and SQLite alike.
 */
export const checkFiveSteps = (sql: SqlClient.SqlClient, ids: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const runs = yield* sql<{
      readonly id: string
      readonly status: string
      readonly output: string | null
      readonly lease_owner: string | null
      readonly lease_expires_at: string | number | null
      readonly epoch: string | number
    }>`SELECT id, status, output, lease_owner, lease_expires_at, epoch FROM memento_runs WHERE workflow = 'fault-five'`
    const journal = yield* sql<{ readonly run_id: string; readonly key: string; readonly status: string }>`SELECT
        run_id, key, status FROM memento_journal ORDER BY run_id, seq`
    const tx = yield* sql<{ readonly run_id: string; readonly step: string }>`SELECT run_id, step FROM fx_tx`
    const ext = yield* sql<{ readonly run_id: string; readonly step: string; readonly attempts: number }>`SELECT
        run_id, step, attempts FROM fx_ext`
    const byRun = new Map(runs.map((run) => [run.id, run]))
    const entries = new Map<string, string>()
    for (const row of journal) {
      const before = entries.get(row.run_id)
      entries.set(row.run_id, `${before === undefined ? "" : before + ","}${row.key}:${row.status}`)
    }
    const count = (rows: ReadonlyArray<{ readonly run_id: string; readonly step: string }>) => {
      const counts = new Map<string, number>()
      for (const { run_id, step } of rows) counts.set(`${run_id}/${step}`, (counts.get(`${run_id}/${step}`) ?? 0) + 1)
      return counts
    }
    const txRows = count(tx)
    const extRows = count(ext)
    const problems: Array<string> = []
    let lost = 0
    let duplicates = 0
    let claimed = 0
    let succeeded = 0
    for (const [i, id] of ids.entries()) {
      const run = byRun.get(id)
      let ok = run !== undefined && run.status === "succeeded"
      if (ok) succeeded++
      if (ok && run!.output !== JSON.stringify(fiveStepsOutput(i))) {
        ok = false
        problems.push(`${id}: output ${run!.output}`)
      }
      const leased = run !== undefined && (run.lease_owner !== null || run.lease_expires_at !== null)
      if (leased && run.status === "succeeded") {
        claimed++
        problems.push(`${id}: still claimed by ${run.lease_owner}`)
      }
      const expected = "reserve:succeeded,charge:succeeded,compute:succeeded,ledger:succeeded,notify:succeeded"
      if (ok && entries.get(id) !== expected) {
        ok = false
        problems.push(`${id}: journal ${entries.get(id)}`)
      }
      const effects = [[txRows, "reserve"], [txRows, "ledger"], [extRows, "charge"], [extRows, "notify"]] as const
      for (const [rows, step] of effects) {
        const n = rows.get(`${id}/${step}`) ?? 0
        if (n === 0 && run?.status === "succeeded") {
          ok = false
          problems.push(`${id}: no ${step} side effect`)
        }
        if (n > 1) {
          duplicates += n - 1
          problems.push(`${id}: ${step} applied ${n} times`)
        }
      }
      if (!ok) lost++
      if (run === undefined || run.status !== "succeeded") problems.push(`${id}: ${run?.status ?? "missing"}`)
    }
    const report: FiveStepsReport = {
      runs: ids.length,
      succeeded,
      lost,
      duplicates,
      claimed,
      absorbed: ext.reduce((sum, row) => sum + Number(row.attempts) - 1, 0),
      reclaims: runs.reduce((sum, run) => sum + Number(run.epoch) - 1, 0)
    }
    return { report, problems }
  }).pipe(Effect.orDie)

/** Fails the test unless every run completed with every side effect exactly once. */
export const assertFiveSteps = (report: FiveStepsReport, problems: ReadonlyArray<string>) => {
  assert.deepStrictEqual(
    { succeeded: report.succeeded, lost: report.lost, duplicates: report.duplicates, claimed: report.claimed },
    { succeeded: report.runs, lost: 0, duplicates: 0, claimed: 0 },
    problems.slice(0, 20).join("\n")
  )
}
