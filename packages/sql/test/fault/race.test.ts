/**
 * Guarantees 5 and 6 with real processes: a worker hangs inside step s3 of 24 runs and is killed -9;
 * two (then eight) idle workers race to recover the orphaned runs as soon as the leases expire.
 * Every run completes with one journal row per step; the journaled steps s1 and s2 never run again;
 * and no two workers are ever inside the same step of a run at once (each step body holds a
 * Postgres advisory lock on (run, step) and records a violation when it finds it taken).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { freshDatabase } from "../utils/database.js"
import { waitUntil } from "../utils/engine.js"
import { connect, makeFleet, Race } from "../utils/fault.js"

const url = await freshDatabase()

const runs = 24
const steps = ["s1", "s2", "s3", "s4", "s5"]

const race = (racers: number) =>
  Effect.gen(function*() {
    const started = Date.now()
    const { client, sql } = yield* connect(url)
    const fleet = yield* makeFleet(url)
    const prefix = `race${racers}`
    const ids = Array.from({ length: runs }, (_, i) => `${prefix}-${i}`)
    const inIds = sql.in(ids)
    const settings = { leaseMs: 2_000, heartbeatMs: 300, pollMs: 50 }

    // the orphaner takes every run and hangs inside s3 (its transaction open, its lock held)
    const orphaner = yield* fleet.start({
      workerId: `${prefix}-orphaner`,
      concurrency: runs,
      stallStep: "s3",
      ...settings
    })
    yield* Effect.forEach(ids, (id, n) => client.start(Race, { n, stepMs: 100 }, { id }), { discard: true })
    const inS3 = Effect.map(
      Effect.orDie(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM memento_journal
        WHERE run_id IN ${inIds} AND key = 's3' AND status = 'started'`),
      ([row]) => row.n
    )
    yield* waitUntil(Effect.map(inS3, (n) => n === runs), {
      what: "the orphaner inside s3 of every run",
      timeoutMs: 60_000
    })

    // idle racers wait for the leases to expire; then the orphaner dies
    const racing = yield* Effect.forEach(
      Array.from({ length: racers }, (_, i) => `${prefix}-racer-${i}`),
      (workerId) => fleet.start({ workerId, concurrency: 4, ...settings }),
      { concurrency: "unbounded" }
    )
    assert.strictEqual(yield* inS3, runs, "nothing moved while the orphaner held the leases")
    yield* fleet.stop(orphaner, "SIGKILL")
    const succeeded = Effect.map(
      Effect.orDie(sql<{ readonly n: number }>`SELECT count(*)::int AS n FROM memento_runs
        WHERE id IN ${inIds} AND status = 'succeeded'`),
      ([row]) => row.n
    )
    yield* waitUntil(Effect.map(succeeded, (n) => n === runs), { what: "every run to succeed", timeoutMs: 90_000 })

    type Row = { readonly run_id: string; readonly step: string; readonly worker_id: string }
    const rows = yield* Effect.orDie(sql<
      { readonly id: string; readonly status: string; readonly output: string; readonly epoch: string }
    >`
      SELECT id, status, output, epoch FROM memento_runs WHERE id IN ${inIds}`)
    const journal = yield* Effect.orDie(sql<{ readonly run_id: string; readonly entries: string }>`SELECT run_id,
      string_agg(key || ':' || status, ',' ORDER BY seq) AS entries FROM memento_journal WHERE run_id IN ${inIds}
      GROUP BY run_id`)
    const executions = yield* Effect.orDie(sql<Row>`
      SELECT run_id, step, worker_id FROM race_exec WHERE run_id IN ${inIds}`)
    const violations = yield* Effect.orDie(sql<Row>`
      SELECT run_id, step, worker_id FROM race_violation WHERE run_id IN ${inIds}`)

    const problems: Array<string> = []
    const recoveredBy = new Map<string, number>()
    let reclaimedAgain = 0
    for (const [n, id] of ids.entries()) {
      const run = rows.find((row) => row.id === id)
      if (run?.status !== "succeeded") problems.push(`${id}: ${run?.status}`)
      else if (run.output !== JSON.stringify(steps.map((step) => `${step}:${n}`))) problems.push(`${id}: ${run.output}`)
      const entries = journal.find((row) => row.run_id === id)?.entries
      if (entries !== steps.map((step) => `${step}:succeeded`).join(",")) problems.push(`${id}: journal ${entries}`)
      const epoch = Number(run?.epoch)
      if (epoch !== 2) reclaimedAgain++
      for (const step of steps) {
        const mine = executions.filter((row) => row.run_id === id && row.step === step)
        const journaledBeforeTheKill = step === "s1" || step === "s2"
        if (journaledBeforeTheKill && (mine.length !== 1 || mine[0].worker_id !== orphaner.workerId)) {
          problems.push(`${id}/${step} ran ${mine.length} times: ${mine.map((row) => row.worker_id)}`)
        }
        // a racer that kept its lease ran the rest of the run, each step once
        if (!journaledBeforeTheKill && (mine.length === 0 || (epoch === 2 && mine.length !== 1))) {
          problems.push(`${id}/${step} ran ${mine.length} times (epoch ${epoch}): ${mine.map((row) => row.worker_id)}`)
        }
      }
      const recoverer = executions.find((row) => row.run_id === id && row.step === "s3")?.worker_id
      if (recoverer !== undefined) recoveredBy.set(recoverer, (recoveredBy.get(recoverer) ?? 0) + 1)
    }
    console.log(
      `race of ${racers} workers: runs=${runs} recovered by ${JSON.stringify(Object.fromEntries(recoveredBy))} ` +
        `violations=${violations.length} claimed again after a lost lease=${reclaimedAgain} ` +
        `wall=${((Date.now() - started) / 1000).toFixed(1)}s`
    )
    assert.deepStrictEqual(violations, [], "two workers inside one step at once")
    assert.deepStrictEqual(problems, [])
    assert.isAtLeast(recoveredBy.size, 2, "several racers recovered runs")
    for (const racer of racing) assert.isTrue(racer.alive, `${racer.workerId} died:\n${racer.tail()}`)
  })

describe("fault: workers racing to recover orphaned runs", () => {
  it.scopedLive("two workers", () => race(2), 120_000)
  it.scopedLive("eight workers", () => race(8), 120_000)
})
