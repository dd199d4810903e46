/**
 * The embedded default: the same 3-step workload on `SqlStore.layerSqlite` (a file in a temporary
 * folder, one process), with every commit synced (`synchronous: "full"`, the default) and with
 * `"normal"` (synced at checkpoints only), alternating in blocks, each block on a fresh file.
 */
import { SqlStore } from "@memento/sql"
import { Worker, WorkflowClient } from "@memento/workflow"
import { Effect, Layer } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fmt, median, percentile, table } from "./stats.js"
import { Three, ThreeLive } from "./workflows.js"

export type Synchronous = "full" | "normal"

export interface SqliteMode {
  readonly synchronous: Synchronous
  /** Sequential `execute` latencies (ms). */
  readonly latencies: Array<number>
  concN: number
  concMs: number
}

export interface SqliteResults {
  readonly seq: number
  readonly conc: number
  readonly inFlight: number
  readonly blocks: number
  readonly modes: ReadonlyArray<SqliteMode>
}

/** Runs `seq` workflows one at a time and `conc` with `inFlight` in flight per mode, in `blocks` blocks. */
export const sqliteBench = (options: {
  readonly seq: number
  readonly conc: number
  readonly inFlight: number
  readonly blocks: number
  readonly log: (message: string) => void
}): Promise<SqliteResults> => {
  const { blocks, conc, inFlight, log, seq } = options
  const dir = mkdtempSync(join(tmpdir(), "memento-bench-sqlite-"))
  const modes: Array<SqliteMode> = (["full", "normal"] as const).map((synchronous) => ({
    synchronous,
    latencies: [],
    concN: 0,
    concMs: 0
  }))
  const block = (mode: SqliteMode, b: number) => {
    const StoreLive = SqlStore.layerSqlite({
      filename: join(dir, `${mode.synchronous}-${b}.db`),
      synchronous: mode.synchronous
    }).pipe(
      Layer.orDie
    )
    const AppLive = Layer.mergeAll(
      Worker.layer({ workflows: [Three], concurrency: Math.max(inFlight, 10), workerId: "bench" }).pipe(
        Layer.provide(ThreeLive)
      ),
      WorkflowClient.layer
    ).pipe(Layer.provideMerge(StoreLive))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const execute = (prefix: string) => (i: number) => client.execute(Three, { n: i }, { id: `${prefix}-${i}` })
      const range = (n: number) => Array.from({ length: n }, (_, i) => i)
      // warm-up on this file: JIT, the file's pages, the prepared statements of this connection
      yield* Effect.forEach(range(100), execute("warm"), { concurrency: inFlight, discard: true })
      for (const i of range(Math.floor(seq / blocks))) {
        const t0 = performance.now()
        yield* execute("seq")(i)
        mode.latencies.push(performance.now() - t0)
      }
      const n = Math.floor(conc / blocks)
      const t0 = performance.now()
      yield* Effect.forEach(range(n), execute("conc"), { concurrency: inFlight, discard: true })
      mode.concMs += performance.now() - t0
      mode.concN += n
    }).pipe(Effect.provide(AppLive), Effect.scoped)
  }
  const run = Effect.gen(function*() {
    for (let b = 0; b < blocks; b++) {
      for (const mode of modes) {
        log(`SQLite synchronous=${mode.synchronous}: block ${b + 1} of ${blocks}`)
        yield* block(mode, b)
      }
    }
    return { seq, conc, inFlight, blocks, modes }
  })
  return Effect.runPromise(run).finally(() => rmSync(dir, { recursive: true, force: true }))
}

/** The SQLite section of the results file. */
export const sqliteReport = (r: SqliteResults): string =>
  [
    "## SQLite (the embedded default)",
    "",
    `The same workload on \`SqlStore.layerSqlite\`: a file in a temporary folder (WAL mode), Worker`,
    `and WorkflowClient in this process; ${r.seq} workflows one at a time and ${r.conc} with ${r.inFlight}`,
    `in flight per setting, the two settings alternating in ${r.blocks} blocks, each block on a fresh file`,
    "after 100 warm-up workflows. `synchronous: \"full\"` (the default) syncs the write-ahead log at",
    "every commit; `\"normal\"` only at checkpoints (what better-sqlite3 uses in WAL mode by itself):",
    "it survives kill -9, but not a power loss.",
    "",
    table(
      ["synchronous", "seq median ms", "seq p95 ms", "conc workflows/s"],
      r.modes.map((mode) => [
        `\`"${mode.synchronous}"\``,
        fmt(median(mode.latencies)),
        fmt(percentile(mode.latencies, 95)),
        fmt(mode.concN / (mode.concMs / 1000), 0)
      ])
    ),
    ""
  ].join("\n")
