/**
 * A test kit that proves a workflow is replay-safe. `replaySafety` runs the workflow once without
 * interruption, then once more for every step boundary with a crash injected there — before the
 * step, after the step's side effect but before its journal write, and after the journal write —
 * followed by recovery by a fresh worker, and checks that every crashed run ends with the same
 * journal and the same result as the clean one.
 *
 * It runs on a `MemoryStore` and drives time with `TestClock`, so use it inside `it.effect`.
 *
 * @since 0.1.0
 */
import type { Layer as L } from "effect"
import * as Chunk from "effect/Chunk"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as TestClock from "effect/TestClock"
import { type CrashPoint, Hooks } from "./internal/run.js"
import * as MemoryStore from "./MemoryStore.js"
import * as Worker from "./Worker.js"
import type * as Workflow from "./Workflow.js"
import * as WorkflowClient from "./WorkflowClient.js"
import * as WorkflowConfig from "./WorkflowConfig.js"
import type { RunStatus } from "./WorkflowStore.js"
import { parkedStatuses, terminalStatuses, WorkflowStore } from "./WorkflowStore.js"

/**
 * A place where a crash was injected: the boundary `point` of the step `key`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Boundary {
  readonly point: CrashPoint
  readonly key: string
}

/**
 * What a run ended with, as compared between the clean and the crashed runs.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ending {
  readonly status: RunStatus
  readonly output: string | null
  readonly error: string | null
  /** The journal in order: key, kind, status and the encoded result or error of each entry. */
  readonly journal: ReadonlyArray<string>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Report {
  /** Every boundary of the clean run, in order; each one was crashed once. */
  readonly boundaries: ReadonlyArray<Boundary>
  readonly clean: Ending
}

/**
 * A crashed run did not end like the clean one.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReplaySafetyViolation extends Data.TaggedError("ReplaySafetyViolation")<{
  readonly boundary: Boundary
  readonly expected: Ending
  readonly actual: Ending
}> {
  override get message() {
    return `crash ${this.boundary.point} "${this.boundary.key}" changed the outcome:\n` +
      `expected ${JSON.stringify(this.expected, null, 2)}\nactual ${JSON.stringify(this.actual, null, 2)}`
  }
}

/**
 * The run did not finish (or park) within `maxTicks` jumps of the test clock.
 *
 * @since 0.1.0
 * @category errors
 */
export class ReplaySafetyTimeout extends Data.TaggedError("ReplaySafetyTimeout")<{
  readonly boundary: Boundary | null
  readonly status: RunStatus
}> {
  override get message() {
    const where = this.boundary === null
      ? "the clean run"
      : `the run crashed ${this.boundary.point} "${this.boundary.key}"`
    return `${where} did not finish; it is still ${this.status}`
  }
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<W extends Workflow.Any, E, R> {
  readonly workflow: W
  /**
   * The workflow's implementation layer (`Workflow.implement`), with what it needs. A
   * `WorkflowStore` it requires (say, to build a `WorkflowClient` that sends signals) is the
   * run's MemoryStore.
   */
  readonly implementation: L.Layer<Workflow.HandlerOf<W>, E, R>
  readonly payload: Workflow.PayloadOf<W>
  /** Signals sent right after the start (e.g. the answers `awaitSignal` waits for). */
  readonly signals?: ReadonlyArray<{ readonly name: string; readonly value: unknown }> | undefined
  /** Engine settings for the runs (leases, polling, retries). */
  readonly settings?: Partial<WorkflowConfig.Settings> | undefined
  /** How many times the test clock may jump to the next timer before a run counts as stuck (10,000). */
  readonly maxTicks?: number | undefined
}

/**
 * Runs the workflow clean, then crashed at every step boundary with recovery, and fails with
 * `ReplaySafetyViolation` when a crashed run ends differently (another status, output, error or
 * journal). The implementation layer is built afresh for every run, so fakes inside it start
 * empty each time.
 *
 * @since 0.1.0
 * @category testing
 */
export const replaySafety = <W extends Workflow.Any, E, R>(
  options: Options<W, E, R>
): Effect.Effect<Report, ReplaySafetyViolation | ReplaySafetyTimeout | E, Exclude<R, WorkflowStore>> =>
  Effect.gen(function*() {
    const settings = {
      leaseMs: 60_000,
      heartbeatMs: 20_000,
      pollMs: 120_000,
      resultPollMs: 120_000,
      ...options.settings
    }
    const maxTicks = options.maxTicks ?? 10_000

    const runOnce = (crashAt: (point: CrashPoint, key: string) => boolean, boundary: Boundary | null) =>
      Effect.gen(function*() {
        const store = yield* MemoryStore.make
        const storeLayer = Layer.succeed(WorkflowStore, store)
        const worker = Worker.layer({ workflows: [options.workflow], concurrency: 1 }).pipe(
          Layer.provide(options.implementation as L.Layer<any, E, R>),
          Layer.provide(storeLayer),
          Layer.provide(Layer.succeed(Hooks, { crashAt }))
        )
        const client = yield* WorkflowClient.make.pipe(Effect.provide(storeLayer))
        return yield* Effect.gen(function*() {
          const handle = yield* Effect.orDie(client.start(options.workflow, options.payload))
          for (const signal of options.signals ?? []) {
            yield* Effect.orDie(client.signal(handle.id, signal.name, signal.value))
          }
          for (let ticks = 0;; ticks++) {
            for (let i = 0; i < 20; i++) yield* Effect.yieldNow()
            const run = yield* Effect.orDie(client.get(handle.id))
            if (terminalStatuses.includes(run.status) || parkedStatuses.includes(run.status)) break
            if (ticks >= maxTicks) return yield* new ReplaySafetyTimeout({ boundary, status: run.status })
            // jump to the next timer (a retry delay, a durable sleep, a poll that finds an expired lease)
            const now = yield* TestClock.currentTimeMillis
            const due = Chunk.reduce(yield* TestClock.sleeps(), Number.POSITIVE_INFINITY, (a, b) => Math.min(a, b))
            yield* TestClock.adjust(Number.isFinite(due) ? Math.max(1, due - now) : settings.pollMs)
          }
          const details = yield* Effect.orDie(client.inspect(handle.id))
          return {
            status: details.run.status,
            output: details.run.output,
            error: details.run.error,
            journal: details.entries.map((entry) =>
              `${entry.key} ${entry.kind} ${entry.status} ${entry.output ?? ""} ${entry.error ?? ""}`.trimEnd()
            )
          } satisfies Ending
        }).pipe(Effect.provide(worker))
      }).pipe(Effect.scoped, Effect.provide(WorkflowConfig.layer(settings)))

    const boundaries: Array<Boundary> = []
    const clean = yield* runOnce((point, key) => {
      boundaries.push({ point, key })
      return false
    }, null)

    for (let index = 0; index < boundaries.length; index++) {
      const boundary = boundaries[index]!
      let seen = 0
      const actual = yield* runOnce(() => seen++ === index, boundary)
      if (!sameEnding(clean, actual)) return yield* new ReplaySafetyViolation({ boundary, expected: clean, actual })
    }
    return { boundaries, clean }
  })

const sameEnding = (a: Ending, b: Ending): boolean =>
  a.status === b.status && a.output === b.output && a.error === b.error &&
  a.journal.length === b.journal.length && a.journal.every((line, i) => line === b.journal[i])
