/**
 * Shared helpers of the engine tests: an in-memory environment (store, client, worker) driven by
 * `TestClock`, crash injection through the engine's `Hooks`, and waiting helpers that advance the
 * test clock instead of sleeping.
 */
import { assert } from "@effect/vitest"
import type { Workflow } from "@memento/workflow"
import { MemoryStore, Worker, WorkflowClient, WorkflowConfig, WorkflowStore } from "@memento/workflow"
import type { Exit } from "effect"
import { Context, Effect, Fiber, Layer, Option, Scope, TestClock } from "effect"
import type { CrashPoint } from "../src/internal/run.js"
import { Hooks } from "../src/internal/run.js"

export { Hooks }
export type { CrashPoint }

/** Short, test-friendly settings: leases expire after 5 s of test-clock time. */
export const settings: Partial<WorkflowConfig.Settings> = {
  leaseMs: 5_000,
  heartbeatMs: 1_000,
  pollMs: 500,
  resultPollMs: 100,
  shutdownGraceMs: 1_000
}

/** Moves the test clock past the lease of a crashed (abandoned) run. */
export const expireLease = TestClock.adjust(settings.leaseMs! + 1)

/** Lets every fiber run until all are suspended, without moving the clock. */
export const settle = TestClock.adjust(0)

export interface CrashSpec {
  readonly point: CrashPoint
  readonly key: string
  /** How many times this point crashes before it lets the run pass. Default 1. */
  readonly times?: number | undefined
}

export interface Crashes {
  readonly hooks: Hooks["Type"]
  /** Every injected crash, as "point key", in order. */
  readonly fired: Array<string>
  /** Turns every crash point off. */
  readonly disable: () => void
  /** Turns the crash points (back) on. */
  readonly enable: () => void
}

/** Engine hooks that crash (abandon the run like kill -9) at the given points. */
export const crashes = (...specs: ReadonlyArray<CrashSpec>): Crashes => {
  const remaining = specs.map((spec) => ({ ...spec, left: spec.times ?? 1 }))
  const fired: Array<string> = []
  let enabled = true
  return {
    fired,
    disable: () => {
      enabled = false
    },
    enable: () => {
      enabled = true
    },
    hooks: {
      crashAt: (point, key) => {
        if (!enabled) return false
        const spec = remaining.find((s) => s.point === point && s.key === key && s.left > 0)
        if (spec === undefined) return false
        spec.left--
        fired.push(`${point} ${key}`)
        return true
      }
    }
  }
}

/** The layer of one worker executing `workflows`, with the given hooks and settings. */
export const workerLayer = <const W extends ReadonlyArray<Workflow.Any>>(options: {
  readonly workflows: W
  readonly implementations: Layer.Layer<Workflow.HandlerOf<W[number]>>
  readonly hooks?: Hooks["Type"] | undefined
  readonly settings?: Partial<WorkflowConfig.Settings> | undefined
  readonly concurrency?: number | undefined
  readonly workerId?: string | undefined
}): Layer.Layer<never, never, WorkflowStore.WorkflowStore> =>
  Worker.layer({
    workflows: options.workflows,
    concurrency: options.concurrency,
    workerId: options.workerId
  }).pipe(
    Layer.provide(options.implementations),
    Layer.provide(Layer.succeed(Hooks, options.hooks ?? { crashAt: () => false })),
    Layer.provide(WorkflowConfig.layer({ ...settings, ...options.settings }))
  )

/**
 * A whole in-memory environment: a fresh `MemoryStore`, a `WorkflowClient` and one worker. The
 * store, the client and the config are also provided to the test.
 */
export const testEnv = <const W extends ReadonlyArray<Workflow.Any>>(options: {
  readonly workflows: W
  readonly implementations: Layer.Layer<Workflow.HandlerOf<W[number]>>
  readonly hooks?: Hooks["Type"] | undefined
  readonly settings?: Partial<WorkflowConfig.Settings> | undefined
  readonly concurrency?: number | undefined
}): Layer.Layer<WorkflowClient.WorkflowClient | WorkflowStore.WorkflowStore | WorkflowConfig.WorkflowConfig> =>
  Layer.mergeAll(WorkflowClient.layer, workerLayer(options)).pipe(
    Layer.provideMerge(MemoryStore.layer),
    Layer.provideMerge(WorkflowConfig.layer({ ...settings, ...options.settings }))
  )

/**
 * One MemoryStore and a client on it, for tests that start several workers against one store
 * (`startWorker`): `provide` gives an effect both.
 */
export const sharedStore = Effect.gen(function*() {
  const store = yield* MemoryStore.make
  const client = yield* WorkflowClient.make.pipe(Effect.provideService(WorkflowStore.WorkflowStore, store))
  const services = Context.make(WorkflowStore.WorkflowStore, store).pipe(
    Context.add(WorkflowClient.WorkflowClient, client)
  )
  const provide = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(effect, services)
  return { store, client, provide }
})

/**
 * Starts a worker in its own scope (for tests that run several workers, one after another or
 * side by side, against one store). Close the returned scope to stop it.
 */
export const startWorker = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Parameters<typeof workerLayer<W>>[0]
): Effect.Effect<Scope.CloseableScope, never, WorkflowStore.WorkflowStore> =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(workerLayer(options), scope)
    yield* settle
    return scope
  })

/** Advances the test clock in `stepMs` steps until `check` holds; fails the test after `maxMs`. */
export const advanceUntil = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  options?: { readonly stepMs?: number | undefined; readonly maxMs?: number | undefined; readonly what?: string }
): Effect.Effect<void, E, R> =>
  Effect.gen(function*() {
    const stepMs = options?.stepMs ?? 100
    const maxMs = options?.maxMs ?? 120_000
    yield* settle
    for (let elapsed = 0; elapsed <= maxMs; elapsed += stepMs) {
      if (yield* check) return
      yield* TestClock.adjust(stepMs)
    }
    assert.fail(`timed out (${maxMs} ms of test clock) waiting for ${options?.what ?? "a condition"}`)
  })

/** Waits (on the test clock) until the run has one of `statuses`, and returns it. */
export const awaitStatus = (
  id: string,
  statuses: WorkflowStore.RunStatus | ReadonlyArray<WorkflowStore.RunStatus>,
  options?: { readonly stepMs?: number | undefined; readonly maxMs?: number | undefined }
) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const wanted: ReadonlyArray<WorkflowStore.RunStatus> = typeof statuses === "string" ? [statuses] : statuses
    yield* advanceUntil(Effect.map(client.get(id), (run) => wanted.includes(run.status)), {
      ...options,
      what: `run "${id}" to be ${wanted.join(" or ")}`
    })
    return yield* client.get(id)
  })

/**
 * `client.result`, awaited while the test clock advances: forks the wait, moves the clock until
 * it returns, and gives its exit.
 */
export const resultOf = <W extends Workflow.Any>(
  workflow: W,
  id: string,
  options?: { readonly stepMs?: number | undefined; readonly maxMs?: number | undefined }
) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const fiber = yield* Effect.fork(client.result(workflow, id))
    yield* advanceUntil(Effect.map(Fiber.poll(fiber), Option.isSome), { ...options, what: `the result of "${id}"` })
    return yield* Fiber.await(fiber)
  })

/** The success value of an exit, failing the test otherwise. */
export const successOf = <A, E>(exit: Exit.Exit<A, E>): A => {
  if (exit._tag === "Success") return exit.value
  return assert.fail(`expected success, got ${String(exit.cause)}`)
}

/** The typed failure of an exit, failing the test otherwise. */
export const failureOf = <A, E>(exit: Exit.Exit<A, E>): E => {
  if (exit._tag === "Failure" && exit.cause._tag === "Fail") return exit.cause.error
  return assert.fail(`expected a typed failure, got ${exit._tag === "Success" ? "success" : String(exit.cause)}`)
}

/** The parsed `error` column of a run (`{"_tag":"Parked","reason":{...}}`, `{"_tag":"Failure",...}`). */
export const runError = (id: string) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const { run } = yield* client.inspect(id)
    assert.isNotNull(run.error, `run "${id}" has no error`)
    return JSON.parse(run.error!) as { readonly _tag: string; readonly [field: string]: any }
  })

/** Counts executions by name; `record` is an effect so it runs exactly when a step body runs. */
export class Recorder {
  readonly calls: Array<{ readonly name: string; readonly data: unknown }> = []
  record(name: string, data?: unknown): Effect.Effect<void> {
    return Effect.sync(() => {
      this.calls.push({ name, data })
    })
  }
  count(name: string): number {
    return this.calls.filter((call) => call.name === name).length
  }
  data(name: string): Array<unknown> {
    return this.calls.filter((call) => call.name === name).map((call) => call.data)
  }
  names(): Array<string> {
    return this.calls.map((call) => call.name)
  }
  counts(...names: Array<string>): Record<string, number> {
    return Object.fromEntries(names.map((name) => [name, this.count(name)]))
  }
}
