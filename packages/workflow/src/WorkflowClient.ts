/**
 * The client starts, awaits, signals, cancels, resumes, retries, lists, inspects and purges runs.
 * It needs only a `WorkflowStore`, so it works in a process that runs no worker (an HTTP API, a
 * CLI).
 *
 * @since 0.1.0
 */
import type { Option, Schema as S } from "effect"
import type { Scope } from "effect"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as O from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as Codec from "./internal/codec.js"
import { decodeRunError } from "./internal/engine.js"
import * as Local from "./internal/local.js"
import * as Retention from "./internal/retention.js"
import * as Tracing from "./Tracing.js"
import type * as Workflow from "./Workflow.js"
import { WorkflowConfig } from "./WorkflowConfig.js"
import {
  InvalidPayload,
  InvalidRunState,
  JournalDecodeError,
  PayloadTooLarge,
  RunNotFound,
  RunParked,
  UnknownStep,
  WorkflowCancelled,
  WorkflowIdConflict
} from "./WorkflowError.js"
import type { StoreError } from "./WorkflowError.js"
import type {
  EntryKind,
  JournalEntry,
  ListFilter,
  RunCount,
  RunDetails,
  RunPage,
  RunRecord,
  RunStatus
} from "./WorkflowStore.js"
import { parkedStatuses, terminalStatuses, WorkflowStore } from "./WorkflowStore.js"

/**
 * A started run. `created` is false when the workflow ID already existed (an idempotent start).
 *
 * @since 0.1.0
 * @category models
 */
export interface RunHandle {
  readonly id: string
  readonly workflow: string
  readonly created: boolean
}

/**
 * How a finished run ended, as `result` reports it.
 *
 * @since 0.1.0
 * @category models
 */
export type ResultError<W extends Workflow.Any> = Workflow.ErrorOf<W> | WorkflowCancelled | RunParked

/**
 * @since 0.1.0
 * @category models
 */
export interface StartOptions {
  /** The workflow ID; default: the workflow's `idempotencyKey(payload)`, else a random UUID. */
  readonly id?: string | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface RetryOptions {
  /**
   * The step to re-run from: a step name as written in `Step.run` (its first occurrence), or an
   * exact journal key such as `charge#2`. Default: the step that failed (the failed entry journaled
   * last), or — when the body failed outside any step — no step at all (only compensations are
   * set aside, every step result is kept).
   */
  readonly fromStep?: string | undefined
}

/**
 * What `purge` deletes: runs in one of `statuses` (default: every terminal status — succeeded,
 * failed, compensated, cancelled) that completed more than `olderThan` ago, in batches of
 * `batchSize` runs (default 1000), one short store transaction each. Unfinished and parked runs
 * are never deleted, whatever `statuses` says.
 *
 * @since 0.1.0
 * @category models
 */
export interface PurgeOptions {
  readonly olderThan: Duration.DurationInput
  readonly statuses?: ReadonlyArray<RunStatus> | undefined
  readonly batchSize?: number | undefined
}

/**
 * A purge repeated by a worker every `every` (see `Worker.Options.purge`).
 *
 * @since 0.1.0
 * @category models
 */
export interface PeriodicPurgeOptions extends PurgeOptions {
  readonly every: Duration.DurationInput
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Service {
  /**
   * Starts a run, idempotently by workflow ID: an existing ID with an equal payload returns the
   * existing run; with another payload or workflow it fails with `WorkflowIdConflict`.
   */
  readonly start: <W extends Workflow.Any>(
    workflow: W,
    payload: Workflow.PayloadOf<W>,
    options?: StartOptions
  ) => Effect.Effect<RunHandle, WorkflowIdConflict | InvalidPayload | PayloadTooLarge | StoreError>
  /** Waits for the run to finish and returns its typed result. Parked runs fail with `RunParked`. */
  readonly result: <W extends Workflow.Any>(
    workflow: W,
    id: string
  ) => Effect.Effect<
    Workflow.SuccessOf<W>,
    ResultError<W> | RunNotFound | InvalidRunState | JournalDecodeError | StoreError
  >
  /**
   * `start` then `result`. When a worker of this process executes the workflow and has a free
   * slot, the run is handed to it before it is stored, and the run's first commit (its first
   * step's start marker, or its end) creates it, claimed by that worker: one statement fewer. If
   * the ID exists, that commit writes nothing and the existing run decides, as for `start`: its
   * result, or `WorkflowIdConflict`. No step runs for an ID that exists; the body's code before its
   * first step may, as it does on every replay. Inside a transaction of the caller, the run is
   * still created outside it (a run created inside could not run before the transaction commits).
   */
  readonly execute: <W extends Workflow.Any>(
    workflow: W,
    payload: Workflow.PayloadOf<W>,
    options?: StartOptions
  ) => Effect.Effect<
    Workflow.SuccessOf<W>,
    | ResultError<W>
    | WorkflowIdConflict
    | InvalidPayload
    | PayloadTooLarge
    | RunNotFound
    | InvalidRunState
    | JournalDecodeError
    | StoreError
  >
  /** The result if the run has finished (or is parked), without waiting. */
  readonly poll: <W extends Workflow.Any>(
    workflow: W,
    id: string
  ) => Effect.Effect<
    Option.Option<Exit.Exit<Workflow.SuccessOf<W>, ResultError<W>>>,
    RunNotFound | InvalidRunState | JournalDecodeError | StoreError
  >
  /**
   * Sends a signal (any JSON value; `Workflow.awaitSignal` decodes it with its Schema). A repeated
   * `signalId` is ignored and reported as `duplicate`. Names starting with `@memento/` are reserved
   * for the engine (a child run's finish) and fail with `InvalidPayload`.
   */
  readonly signal: (
    id: string,
    name: string,
    value: unknown,
    options?: { readonly signalId?: string | undefined }
  ) => Effect.Effect<{ readonly duplicate: boolean }, RunNotFound | InvalidPayload | PayloadTooLarge | StoreError>
  /**
   * Asks a run to stop: it stops at its next step boundary (a running step may finish), runs its
   * compensations and ends `cancelled`. Finished runs and parked runs (resume those first) fail
   * with `InvalidRunState`.
   */
  readonly cancel: (id: string) => Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError>
  /** Replays a `needs_attention` or `dead` run (after the code or data was fixed). */
  readonly resume: (id: string) => Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError>
  /**
   * Re-runs a `failed`, `compensated` or `cancelled` run from a step. The journal entries from that
   * step on are archived — set aside as a new generation, no longer replayed, still shown by
   * `inspect` — and the run becomes `pending`; earlier steps keep their results and are replayed.
   *
   * Also archived, whatever `fromStep` says: every compensation entry (so compensations run again
   * if the re-run fails), and the entries of steps whose compensation ran (in a `compensated` or
   * `cancelled` run): their effect was undone, so replaying their result would be wrong. Since a
   * replay cannot skip a journaled step, a compensated run therefore re-runs from the earlier of
   * `fromStep` and its first compensated step. Signals consumed by archived waits are delivered
   * again to the re-run. Parked runs are resumed, not retried: other statuses fail with
   * `InvalidRunState`; an unknown step fails with `UnknownStep` listing the run's steps; a stored
   * journal row that does not decode fails with `JournalDecodeError`.
   */
  readonly retry: (
    id: string,
    options?: RetryOptions
  ) => Effect.Effect<RunRecord, RunNotFound | InvalidRunState | UnknownStep | JournalDecodeError | StoreError>
  readonly get: (id: string) => Effect.Effect<RunRecord, RunNotFound | StoreError>
  readonly list: (filter?: ListFilter) => Effect.Effect<RunPage, StoreError>
  /**
   * The run with its journal, execution log (every attempt, including those archived by `retry`),
   * signals and child runs.
   */
  readonly inspect: (id: string) => Effect.Effect<RunDetails, RunNotFound | StoreError>
  /**
   * Deletes finished runs with their journal, execution log, signals and alerts, in batches until
   * none is left; returns how many runs it deleted. Other work interleaves between batches.
   */
  readonly purge: (options: PurgeOptions) => Effect.Effect<number, StoreError>
  /** Run counts by workflow and status. */
  readonly stats: Effect.Effect<ReadonlyArray<RunCount>, StoreError>
}

/**
 * @since 0.1.0
 * @category tags
 */
export class WorkflowClient extends Context.Tag("@memento/workflow/WorkflowClient")<WorkflowClient, Service>() {}

const maxIdLength = 512

const reservedSignalPrefix = "@memento/"

/** Statuses `retry` applies to. */
const retryableStatuses: ReadonlyArray<RunStatus> = ["failed", "compensated", "cancelled"]

/** Entry kinds whose journaled failure ends a body: where a retry without `fromStep` starts. */
const failingKinds: ReadonlyArray<EntryKind> = ["step", "transaction", "child", "signal"]

const compensateSuffix = "#compensate"

/**
 * The journal keys a retry archives (see `Service.retry`): entries from the retry point on, where
 * the retry point is the earliest of the requested (or failed) step and the first step whose
 * compensation ran, plus every compensation entry.
 */
const retryPlan = (
  runId: string,
  entries: ReadonlyArray<JournalEntry>,
  fromStep: string | undefined
): Effect.Effect<ReadonlyArray<string>, UnknownStep> => {
  const steps = entries.filter((entry) => entry.kind !== "compensation").sort((a, b) => a.seq - b.seq)
  const seqOf = new Map(steps.map((entry) => [entry.key, entry.seq]))
  let from = Infinity
  if (fromStep !== undefined) {
    const seq = seqOf.get(fromStep)
    if (seq === undefined) {
      return Effect.fail(
        new UnknownStep({
          workflowId: runId,
          stepKey: fromStep,
          steps: steps.filter((entry) => entry.kind !== "patch").map((entry) => entry.key)
        })
      )
    }
    from = seq
  } else {
    for (const entry of steps) {
      if (entry.status === "failed" && failingKinds.includes(entry.kind)) from = entry.seq
    }
  }
  for (const entry of entries) {
    if (entry.kind !== "compensation" || !entry.key.endsWith(compensateSuffix)) continue
    const undone = seqOf.get(entry.key.slice(0, -compensateSuffix.length))
    if (undone !== undefined) from = Math.min(from, undone)
  }
  return Effect.succeed(
    entries.filter((entry) => entry.kind === "compensation" || entry.seq >= from).map((entry) => entry.key)
  )
}

/**
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<Service, never, WorkflowStore | Scope.Scope> = Effect.gen(function*() {
  const store = yield* WorkflowStore

  const getRun = (id: string) =>
    Effect.flatMap(
      store.get(id),
      O.match({
        onNone: () => Effect.fail(new RunNotFound({ workflowId: id })),
        onSome: Effect.succeed
      })
    )

  const runId = <W extends Workflow.Any>(workflow: W, payload: Workflow.PayloadOf<W>, options?: StartOptions) =>
    options?.id ?? workflow.idempotencyKey?.(payload) ?? randomUUID()

  /** The checks before anything is written: the payload encodes and fits, the ID is valid. */
  const prepare = <W extends Workflow.Any>(workflow: W, payload: Workflow.PayloadOf<W>, id: string) =>
    Effect.gen(function*() {
      const settings = yield* WorkflowConfig
      const encoded = yield* Codec.encode(workflow.payloadSchema, payload).pipe(
        Effect.mapError((error) => new InvalidPayload({ workflow: workflow.name, message: error.message }))
      )
      if (id.length === 0 || id.length > maxIdLength) {
        return yield* new InvalidPayload({
          workflow: workflow.name,
          message: `workflow ID must be 1 to ${maxIdLength} characters, got ${id.length}`
        })
      }
      const text = encoded ?? "null"
      const bytes = Codec.byteLength(text)
      if (bytes > settings.maxValueBytes) {
        return yield* new PayloadTooLarge({ workflowId: id, what: "payload", bytes, limit: settings.maxValueBytes })
      }
      return text
    })

  /** Creates the run (or finds the one with this ID) once `prepare` passed. */
  const create = <W extends Workflow.Any>(
    workflow: W,
    id: string,
    text: string
  ): Effect.Effect<RunHandle, WorkflowIdConflict | StoreError> =>
    Effect.gen(function*() {
      // A worker of this process with a free slot gets the run directly (created claimed by it): no
      // claim, no wake-up. Uninterruptible, so that a run created claimed is always handed over.
      const local = Local.reserve(store, workflow.name)
      const { created, run } = local === undefined
        ? yield* store.create({ id, workflow: workflow.name, payload: text })
        : yield* store.create({
          id,
          workflow: workflow.name,
          payload: text,
          claim: { workerId: local.workerId, leaseMs: local.leaseMs }
        }).pipe(
          Effect.onExit((exit) =>
            Effect.sync(() => {
              if (Exit.isSuccess(exit) && exit.value.created && exit.value.run.leaseOwner === local.workerId) {
                local.handOver(exit.value.run)
              } else {
                local.unreserve()
              }
            })
          ),
          Effect.uninterruptible
        )
      if (!created && (run.workflow !== workflow.name || run.payload !== text)) {
        return yield* new WorkflowIdConflict({
          workflowId: id,
          workflow: workflow.name,
          existingWorkflow: run.workflow,
          reason: run.workflow !== workflow.name ? "another workflow" : "a different payload"
        })
      }
      return { id, workflow: workflow.name, created }
    })

  // Not `Effect.fn` (here and below): that captures a stack trace on every call, whatever
  // `captureStackTrace` says.
  const start = <W extends Workflow.Any>(
    workflow: W,
    payload: Workflow.PayloadOf<W>,
    options?: StartOptions
  ): Effect.Effect<RunHandle, WorkflowIdConflict | InvalidPayload | PayloadTooLarge | StoreError> =>
    Effect.suspend(() => {
      const id = runId(workflow, payload, options)
      return Effect.flatMap(prepare(workflow, payload, id), (text) => create(workflow, id, text))
    }).pipe(Tracing.withSpan("WorkflowClient.start", { captureStackTrace: false }))

  /**
   * `execute`'s start: a worker of this process with a free slot gets the run before it is stored,
   * and the run's first commit creates it (`Local.LocalWorker.handOverNew`): one statement fewer
   * than a create followed by that commit. When that commit did not store the run (the ID exists,
   * the store failed, the worker stopped), the ordinary start decides: it finds the existing run
   * (or fails with `WorkflowIdConflict`), or creates the run.
   */
  const startToExecute = <W extends Workflow.Any>(
    workflow: W,
    payload: Workflow.PayloadOf<W>,
    id: string
  ): Effect.Effect<RunHandle, WorkflowIdConflict | InvalidPayload | PayloadTooLarge | StoreError> =>
    Effect.gen(function*() {
      const text = yield* prepare(workflow, payload, id)
      const stored = yield* Deferred.make<boolean>()
      const local = Local.reserve(store, workflow.name)
      if (local !== undefined) {
        local.handOverNew({
          id,
          workflow: workflow.name,
          payload: text,
          created: (created) => Deferred.unsafeDone(stored, Exit.succeed(created))
        })
        if (yield* Deferred.await(stored)) return { id, workflow: workflow.name, created: true }
      }
      return yield* create(workflow, id, text)
    })

  const outcome = <W extends Workflow.Any>(
    workflow: W,
    run: RunRecord
  ): Effect.Effect<
    Option.Option<Exit.Exit<Workflow.SuccessOf<W>, ResultError<W>>>,
    InvalidRunState | JournalDecodeError
  > =>
    Effect.gen(function*() {
      if (run.workflow !== workflow.name) {
        return yield* new InvalidRunState({
          workflowId: run.id,
          status: run.status,
          operation: `read the result as workflow "${workflow.name}" (it is "${run.workflow}")`
        })
      }
      const corrupt = (what: string) => (message: string) =>
        new JournalDecodeError({ workflowId: run.id, stepKey: `(${what})`, message })
      switch (run.status) {
        case "succeeded": {
          const value = yield* Codec.decode(workflow.successSchema, run.output).pipe(Effect.mapError(corrupt("output")))
          return O.some(Exit.succeed(value))
        }
        case "failed":
        case "compensated":
        case "cancelled":
        case "needs_attention":
        case "dead": {
          const error = yield* decodeRunError(run.error).pipe(Effect.mapError(corrupt("error")))
          switch (error._tag) {
            case "Cancelled":
              return O.some(Exit.fail(new WorkflowCancelled({ workflowId: run.id })))
            case "Parked":
              return O.some(Exit.fail(
                new RunParked({
                  workflowId: run.id,
                  status: run.status === "dead" ? "dead" : "needs_attention",
                  reason: error.reason.message
                })
              ))
            case "Failure": {
              const decoded = yield* Schema.decodeUnknown(workflow.errorSchema as S.Schema<unknown, unknown>)(
                error.error
              ).pipe(Effect.mapError((e) => corrupt("error")(ParseResult.TreeFormatter.formatErrorSync(e))))
              return O.some(Exit.fail(decoded))
            }
          }
        }
        // falls through: unfinished statuses
        default:
          return O.none()
      }
    })

  const poll = <W extends Workflow.Any>(workflow: W, id: string) =>
    Effect.flatMap(getRun(id), (run) => outcome(workflow, run))

  // One subscription to the store's events for the client's lifetime, opened by the first caller
  // that waits (a client that only starts or reads runs never listens); each waiting `result` or
  // `execute` registers a latch under its run ID, so a `RunFinished` event costs one map lookup
  // however many callers wait (a subscription per caller would deliver every event to every caller).
  // A worker of this process opens the latch itself, with the final record (`internal/local.ts`).
  // The safety net is one ticker too: every `resultPollMs` (of the first waiter's settings) it opens
  // every latch of this client, and each waiter reads its run (a timer per waiter cost a fiber each).
  const scope = yield* Effect.scope
  const waiting = new Set<Local.Waiter>()
  let subscribed = false
  const subscribe = Effect.suspend(() => {
    if (subscribed) return Effect.void
    subscribed = true
    const events = store.events.pipe(
      Stream.runForEachChunk((chunk) =>
        Effect.sync(() => {
          for (const event of chunk) if (event._tag === "RunFinished") Local.wake(store, event.runId)
        })
      ),
      Effect.forkIn(scope)
    )
    const ticker = Effect.flatMap(
      WorkflowConfig,
      (settings) =>
        Effect.sleep(Duration.millis(settings.resultPollMs)).pipe(
          Effect.zipRight(Effect.sync(() => {
            for (const waiter of waiting) waiter.latch.unsafeOpen()
          })),
          Effect.forever,
          Effect.forkIn(scope)
        )
    )
    // lets the subscription start before the caller relies on it (events are hints: a missed one
    // costs a `resultPollMs` poll, never a result)
    return Effect.zipRight(Effect.zipRight(events, ticker), Effect.yieldNow())
  })

  /**
   * Waits for `id` to finish: registers for its `RunFinished` event (before the first poll, so that
   * no finish is missed), then polls whenever it arrives, or on the next tick of the safety net.
   */
  const awaitFinished = <W extends Workflow.Any, A, E, R>(
    workflow: W,
    id: string,
    before: Effect.Effect<A, E, R>,
    pollFirst: (a: A) => boolean
  ) =>
    Effect.gen(function*() {
      const waiter: Local.Waiter = { latch: yield* Effect.makeLatch(false), finished: undefined }
      const unregister = Local.wait(store, id, waiter)
      waiting.add(waiter)
      return yield* Effect.gen(function*() {
        yield* subscribe
        const wait = Effect.zipRight(waiter.latch.await, waiter.latch.close)
        if (!pollFirst(yield* before)) yield* wait
        while (true) {
          const done = waiter.finished === undefined
            ? yield* poll(workflow, id)
            : yield* outcome(workflow, waiter.finished)
          if (O.isSome(done)) return yield* done.value
          yield* wait
        }
      }).pipe(Effect.ensuring(Effect.sync(() => {
        waiting.delete(waiter)
        unregister()
      })))
    })

  const result = <W extends Workflow.Any>(workflow: W, id: string) =>
    awaitFinished(workflow, id, Effect.void, () => true).pipe(
      Tracing.withSpan("WorkflowClient.result", { attributes: { "workflow.id": id }, captureStackTrace: false })
    )

  // `start` then `result`, one read fewer: the run is created after the registration, so a run this
  // call created cannot have finished before it and its first poll waits for the RunFinished event
  // (or `resultPollMs`). A run that existed already (same ID) is polled at once.
  const execute = <W extends Workflow.Any>(
    workflow: W,
    payload: Workflow.PayloadOf<W>,
    options?: StartOptions
  ) =>
    Effect.suspend(() => {
      const id = runId(workflow, payload, options)
      return awaitFinished(workflow, id, startToExecute(workflow, payload, id), (handle) => !handle.created)
    }).pipe(Tracing.withSpan("WorkflowClient.execute", { captureStackTrace: false }))

  const signal = (
    id: string,
    name: string,
    value: unknown,
    options?: { readonly signalId?: string | undefined }
  ): Effect.Effect<{ readonly duplicate: boolean }, RunNotFound | InvalidPayload | PayloadTooLarge | StoreError> =>
    Effect.gen(function*() {
      const settings = yield* WorkflowConfig
      if (name.startsWith(reservedSignalPrefix)) {
        // names under @memento/ are the engine's own (a child run's finish): a forged one would wake a
        // parent as if its child had finished
        return yield* new InvalidPayload({
          workflow: id,
          message: `signal names starting with "${reservedSignalPrefix}" are reserved by Memento, got "${name}"`
        })
      }
      let payload: string | undefined
      try {
        payload = JSON.stringify(value)
      } catch (error) {
        return yield* new InvalidPayload({ workflow: id, message: `signal "${name}" is not JSON: ${String(error)}` })
      }
      if (payload === undefined) {
        return yield* new InvalidPayload({ workflow: id, message: `signal "${name}" has no JSON value` })
      }
      const bytes = Codec.byteLength(payload)
      if (bytes > settings.maxValueBytes) {
        return yield* new PayloadTooLarge({
          workflowId: id,
          what: `signal "${name}"`,
          bytes,
          limit: settings.maxValueBytes
        })
      }
      return yield* store.signal({ runId: id, name, signalId: options?.signalId ?? randomUUID(), payload })
    }).pipe(Tracing.withSpan("WorkflowClient.signal"))

  const cancel = (id: string): Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError> =>
    Effect.gen(function*() {
      const run = yield* getRun(id)
      if (terminalStatuses.includes(run.status)) {
        return yield* new InvalidRunState({ workflowId: id, status: run.status, operation: "cancel" })
      }
      if (parkedStatuses.includes(run.status)) {
        // a parked run executes nothing until it is resumed: cancelling it would silently do nothing
        return yield* new InvalidRunState({ workflowId: id, status: run.status, operation: "cancel (resume it first)" })
      }
      return yield* store.requestCancel(id)
    }).pipe(Tracing.withSpan("WorkflowClient.cancel"))

  const retry = (
    id: string,
    options?: RetryOptions
  ): Effect.Effect<RunRecord, RunNotFound | InvalidRunState | UnknownStep | JournalDecodeError | StoreError> =>
    Effect.gen(function*() {
      const { entries, run } = yield* store.load(id)
      if (!retryableStatuses.includes(run.status)) {
        return yield* new InvalidRunState({
          workflowId: id,
          status: run.status,
          operation: parkedStatuses.includes(run.status) ? "retry (resume it instead)" : "retry"
        })
      }
      const archiveKeys = yield* retryPlan(id, entries, options?.fromStep)
      // The store re-checks the status atomically: a concurrent retry or purge makes this one fail.
      return yield* store.retry({ runId: id, archiveKeys, from: retryableStatuses })
    }).pipe(Tracing.withSpan("WorkflowClient.retry"))

  return WorkflowClient.of({
    start,
    result,
    execute,
    poll,
    signal,
    cancel,
    resume: (id) => store.resume(id),
    get: getRun,
    list: (filter) => store.list(filter ?? {}),
    inspect: (id) => store.inspect(id),
    retry,
    purge: (options) => Retention.purgeAll(store, options),
    stats: store.stats
  })
})

/**
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<WorkflowClient, never, WorkflowStore> = Layer.scoped(WorkflowClient, make)
