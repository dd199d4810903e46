/**
 * Helpers of the engine tests on a real database (real time, no `TestClock`): workers started in
 * scopes of their own (closing one is a graceful worker shutdown; starting another is a restart),
 * crash injection through the engine's `Hooks`, and polling helpers.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import { assert } from "@effect/vitest"
import type { Workflow, WorkflowStore } from "@memento/workflow"
import { Worker, WorkflowConfig } from "@memento/workflow"
import { Clock, Effect, ExecutionStrategy, Exit, Layer, Scope } from "effect"
import type { CrashPoint } from "../../../workflow/src/internal/run.js"
import { Hooks } from "../../../workflow/src/internal/run.js"

export { Hooks }
export type { CrashPoint }

/** Short leases and polls so recoveries take about a second. */
export const settings: Partial<WorkflowConfig.Settings> = {
  leaseMs: 1_000,
  heartbeatMs: 300,
  pollMs: 100,
  resultPollMs: 50,
  shutdownGraceMs: 500
}

/** A short random suffix: workflow names, run IDs and tables of one test do not meet another's. */
export const ns = (): string => Math.random().toString(36).slice(2, 10)

export const noCrashes: Hooks["Type"] = { crashAt: () => false }

/** Hooks that crash (abandon the run like kill -9) at `point` of step `key`, `times` times. */
export const crashAt = (point: CrashPoint, key: string, times = 1) => {
  const fired: Array<string> = []
  const hooks: Hooks["Type"] = {
    crashAt: (p, k) => {
      if (p !== point || k !== key || fired.length >= times) return false
      fired.push(`${p} ${k}`)
      return true
    }
  }
  return { hooks, fired }
}

export interface WorkerOptions<W extends ReadonlyArray<Workflow.Any>, R> {
  readonly workflows: W
  readonly implementations: Layer.Layer<Workflow.HandlerOf<W[number]>, never, R>
  readonly hooks?: Hooks["Type"] | undefined
  readonly settings?: Partial<WorkflowConfig.Settings> | undefined
  readonly concurrency?: number | undefined
  readonly workerId?: string | undefined
}

/** One worker as a layer, with its hooks and settings (`settings` above, overridden by `options.settings`). */
export const workerLayer = <const W extends ReadonlyArray<Workflow.Any>, R>(
  options: WorkerOptions<W, R>
): Layer.Layer<never, never, WorkflowStore.WorkflowStore | R> =>
  Worker.layer({ workflows: options.workflows, concurrency: options.concurrency, workerId: options.workerId }).pipe(
    Layer.provide(options.implementations),
    Layer.provide(Layer.succeed(Hooks, options.hooks ?? noCrashes)),
    Layer.provide(WorkflowConfig.layer({ ...settings, ...options.settings }))
  )

export interface RunningWorker {
  /** Graceful shutdown, as on SIGTERM: running runs get `shutdownGraceMs`, then their leases are released. */
  readonly stop: Effect.Effect<void>
}

/**
 * Starts a worker in a scope of its own, a child of the test's scope (so a failing test still stops
 * it). `stop` closes it earlier: that is a worker restart when another is started afterwards.
 */
export const startWorker = <const W extends ReadonlyArray<Workflow.Any>, R>(
  options: WorkerOptions<W, R>
): Effect.Effect<RunningWorker, never, Scope.Scope | WorkflowStore.WorkflowStore | R> =>
  Effect.gen(function*() {
    const scope = yield* Scope.fork(yield* Effect.scope, ExecutionStrategy.sequential)
    yield* Layer.buildWithScope(workerLayer(options), scope)
    return { stop: Scope.close(scope, Exit.void) }
  })

/** Polls `check` every `intervalMs` until it holds; fails the test after `timeoutMs`. */
export const waitUntil = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  options: { readonly what: string; readonly timeoutMs?: number | undefined; readonly intervalMs?: number | undefined }
): Effect.Effect<void, E, R> =>
  Effect.gen(function*() {
    const timeoutMs = options.timeoutMs ?? 15_000
    const start = yield* Clock.currentTimeMillis
    while (!(yield* check)) {
      if ((yield* Clock.currentTimeMillis) - start > timeoutMs) {
        return assert.fail(`timed out after ${timeoutMs} ms waiting for ${options.what}`)
      }
      yield* Effect.sleep(options.intervalMs ?? 50)
    }
  })

/** The first row's column `n` as a number (Postgres returns `count(*)` as a string). */
export const countOf = (rows: ReadonlyArray<{ readonly n: unknown }>): number => Number(rows[0]?.n ?? 0)

/** `SELECT count(*) AS n ...` as a number. */
export const count = (statement: Effect.Effect<ReadonlyArray<{ readonly n: unknown }>, unknown>) =>
  Effect.map(Effect.orDie(statement), countOf)

export type Sql = SqlClient.SqlClient
