/**
 * The statement floor of the sequential workload: the statements one workflow sends, captured at
 * the driver and replayed over one bare `pg` connection — no Effect, no pool, no engine — against
 * the raw 5-INSERT unit on the same connection. What is left of a workflow's latency above this
 * floor is spent in Node (engine, store, driver); the floor itself is what the database takes for
 * the statements, whatever the engine does.
 */
import pg from "pg"
import type { CapturedStatement } from "./counting.js"
import { fmt, median, table } from "./stats.js"

export interface FloorResult {
  /** Median ms of one single-row INSERT commit. */
  readonly rawInsert: number
  /** Median ms of the raw unit: 5 INSERT commits one after another. */
  readonly rawUnit: number
  /** Median ms of each captured statement of a workflow, in order (create, steps, finish). */
  readonly statements: ReadonlyArray<{ readonly label: string; readonly ms: number }>
  /** Median ms of all captured statements of a workflow one after another. */
  readonly unit: number
  /** Median ms of the smallest fenced step write (see `leanText`). */
  readonly lean: number
  readonly samples: number
}

/**
 * The smallest statement that journals a step under a fence: it moves the run's lease if epoch and
 * lease hold, and upserts two journal rows (one step's result, the next step's start) from plain
 * parameters. A reference for what any fenced step write costs on this server, not Memento's own
 * statement (which also takes JSON input, writes attempts and alerts, can change the run's status
 * and tells the caller about cancellation).
 */
const leanText = (prefix: string) =>
  `WITH clock AS (SELECT (floor(extract(epoch from clock_timestamp()) * 1000))::bigint AS now),
  f AS (
    UPDATE ${prefix}runs r SET updated_at = clock.now, lease_expires_at = clock.now + 30000
    FROM clock
    WHERE r.id = $1::text AND r.epoch = 1 AND r.lease_owner IS NOT NULL AND r.lease_expires_at > clock.now
    RETURNING r.id
  )
  INSERT INTO ${prefix}journal (run_id, key, seq, kind, status, output, attempts, started_at, completed_at)
  SELECT f.id, v.key, v.seq, 'step', v.status, v.output, 1, 0, v.completed_at
  FROM f, (VALUES ('a', 1, 'succeeded', '1', 0::bigint), ('b', 2, 'started', NULL, NULL)) AS v(key, seq, status,
    output, completed_at)
  ON CONFLICT (run_id, key) DO UPDATE SET status = excluded.status, output = excluded.output,
    completed_at = excluded.completed_at`

/** The statement's values with every occurrence of the captured run ID replaced by `id`. */
const withRunId = (statement: CapturedStatement, from: string, id: string): Array<unknown> =>
  statement.values.map((value) =>
    typeof value === "string"
      ? value.split(from).join(id)
      : Array.isArray(value)
      ? value.map((item) => (item === from ? id : item))
      : value
  )

const labels = (count: number): Array<string> =>
  Array.from(
    { length: count },
    (_, i) =>
      i === 0 ? "create + first step's start" : i === count - 1 ? "last step + finish" : `step ${i} + next start`
  )

/**
 * Replays `captured` (the commit statements of the workflow `runId`, in order) with fresh run IDs,
 * alternating with the raw unit in `blocks` blocks of `perBlock` samples each.
 */
export const statementFloor = async (options: {
  readonly url: string
  readonly prefix: string
  readonly runId: string
  readonly captured: ReadonlyArray<CapturedStatement>
  readonly blocks: number
  readonly perBlock: number
}): Promise<FloorResult> => {
  const { captured, runId } = options
  if (captured.length < 2) throw new Error(`floor: captured ${captured.length} statements, expected one per commit`)
  const client = new pg.Client({ connectionString: options.url })
  client.on("error", () => {})
  await client.connect()
  try {
    let next = 0
    const send = async (statement: CapturedStatement, id: string) => {
      const result = await client.query({
        name: statement.name,
        text: statement.text,
        values: withRunId(statement, runId, id)
      })
      // every replayed commit must have written (a fenced statement that matched nothing is cheaper)
      if (!result.rows.every((row: { ok?: unknown }) => row.ok === true)) {
        throw new Error(`floor: a replayed commit of ${id} was not applied`)
      }
    }
    const rawInserts: Array<number> = []
    const rawUnits: Array<number> = []
    const perStatement: Array<Array<number>> = captured.map(() => [])
    const units: Array<number> = []
    const leans: Array<number> = []
    const raw = async (unit: number) => {
      const t0 = performance.now()
      for (let k = 1; k <= 5; k++) {
        const t = performance.now()
        await client.query({
          name: "bench_floor_raw",
          text: "INSERT INTO bench_raw (unit, k, v) VALUES ($1, $2, $3)",
          values: [unit, k, "v"]
        })
        rawInserts.push(performance.now() - t)
      }
      rawUnits.push(performance.now() - t0)
    }
    const replay = async () => {
      const id = `${runId}-floor-${next++}`
      const t0 = performance.now()
      for (let s = 0; s < captured.length; s++) {
        const t = performance.now()
        await send(captured[s], id)
        perStatement[s].push(performance.now() - t)
      }
      units.push(performance.now() - t0)
    }
    const lean = async () => {
      const id = `${runId}-lean-${next++}`
      await send(captured[0], id)
      const t = performance.now()
      const result = await client.query({ name: "bench_floor_lean", text: leanText(options.prefix), values: [id] })
      leans.push(performance.now() - t)
      if (result.rowCount !== 2) throw new Error(`floor: the lean write of ${id} wrote ${result.rowCount} rows`)
    }
    // warm-up: prepare every statement, fill caches
    for (let i = 0; i < 50; i++) {
      await raw(-1)
      await replay()
      await lean()
    }
    for (const samples of [rawInserts, rawUnits, units, leans, ...perStatement]) samples.length = 0
    for (let b = 0; b < options.blocks; b++) {
      for (let i = 0; i < options.perBlock; i++) await raw(i)
      for (let i = 0; i < options.perBlock; i++) await replay()
      for (let i = 0; i < options.perBlock; i++) await lean()
    }
    const names = labels(captured.length)
    return {
      rawInsert: median(rawInserts),
      rawUnit: median(rawUnits),
      statements: perStatement.map((samples, i) => ({ label: names[i], ms: median(samples) })),
      unit: median(units),
      lean: median(leans),
      samples: options.blocks * options.perBlock
    }
  } finally {
    await client.end().catch(() => {})
  }
}

/** The report section; `executeMs` is the sequential median of the full workload in the same run. */
export const floorReport = (floor: FloorResult, executeMs: number, rawSeqMs: number): string => {
  const n = floor.statements.length
  const rows = [
    ["raw: one single-row INSERT commit", fmt(floor.rawInsert), "–"],
    ["raw: the unit, 5 INSERT commits", fmt(floor.rawUnit), "1.00×"],
    ...floor.statements.map((s) => [`Memento: ${s.label}`, fmt(s.ms), "–"]),
    [`Memento: the ${n} statements of a workflow`, fmt(floor.unit), `**${fmt(floor.unit / floor.rawUnit)}×**`],
    [
      `reference: the smallest fenced step write, ${n} times`,
      fmt(floor.lean * n),
      `${fmt((floor.lean * n) / floor.rawUnit)}×`
    ]
  ]
  return [
    "## The statement floor of the sequential workload",
    "",
    `The ${n} commit statements of one sequential workflow, captured at the driver and replayed ${floor.samples}`,
    "times with fresh run IDs over one bare `pg` connection (no Effect, no pool, no engine), alternating",
    "with the raw unit on the same connection: what the database takes for a workflow's statements,",
    "whatever the engine does. The reference row is the smallest statement that journals a step under",
    "a fence (the run's lease moved if epoch and lease hold, two journal rows upserted from plain",
    "parameters), once per commit: not Memento's statement, which also takes the commit as JSON,",
    "writes attempts and alerts, can change the run's status and reports a cancellation.",
    "",
    table(["statement", "median ms", "/ raw unit"], rows),
    "",
    `- The sequential target compares with the raw loop through the pool and \`SqlClient\` (${
      fmt(rawSeqMs)
    } ms in this run). Against it, the statements alone give **${fmt(floor.unit / rawSeqMs)}×**: ` +
    "the ratio if engine, store, pool and driver took no time at all.",
    `- One sequential workflow took ${fmt(executeMs)} ms for the full \`execute\`: ${
      fmt(floor.unit)
    } ms of statements and ${
      fmt(Math.max(0, executeMs - floor.unit))
    } ms in Node (client, worker, store, pool and driver). The raw loop spends ${
      fmt(Math.max(0, rawSeqMs - floor.rawUnit))
    } ms in Node for its 5 statements (${fmt(rawSeqMs)} ms through the pool, ${fmt(floor.rawUnit)} ms here).`,
    ""
  ].join("\n")
}
