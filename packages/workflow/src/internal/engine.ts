import type { Schema as S } from "effect"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Schema from "effect/Schema"
import * as Metrics from "../Metrics.js"
import * as Tracing from "../Tracing.js"
import type { HandlerService } from "../Workflow.js"
import type { Settings } from "../WorkflowConfig.js"
import type { ParkReason as ParkReasonType } from "../WorkflowError.js"
import {
  CompensationFailed,
  JournalDecodeError,
  RecoveryLimitReached,
  RunNotFound,
  StepDefect,
  WorkflowTimeout
} from "../WorkflowError.js"
import type {
  CommitCreate,
  RunRecord,
  RunStatus,
  RunTransition,
  SignalDelivery,
  WorkflowStore
} from "../WorkflowStore.js"
import * as Codec from "./codec.js"
import * as Local from "./local.js"
import type { Hooks, RunState, StopReason } from "./run.js"
import * as Run from "./run.js"
import { execute } from "./step.js"

export { decodeRunError, encodeRunError, RunError } from "./run.js"

/** The counter of runs that ended with `status`. */
const finishedCounter = (status: RunStatus): Metric.Metric.Counter<number> | undefined => {
  switch (status) {
    case "succeeded":
      return Metrics.runsSucceeded
    case "failed":
      return Metrics.runsFailed
    case "compensated":
      return Metrics.runsCompensated
    case "cancelled":
      return Metrics.runsCancelled
    case "needs_attention":
    case "dead":
      return Metrics.runsParked
    default:
      return undefined
  }
}

type Failure = { readonly _tag: "Failure"; readonly error: unknown } | { readonly _tag: "Cancelled" }

type Phase<A> = { readonly _tag: "Done"; readonly value: A } | { readonly _tag: "Stopped"; readonly reason: StopReason }

/**
 * Runs `effect` until it ends or something halts the run (suspend, park, cancel, abandon): `halt`
 * records its reason and interrupts the phase's fiber, with every concurrent branch of the body.
 */
const phase = <A>(state: RunState, effect: Effect.Effect<A>): Effect.Effect<Phase<A>> =>
  Effect.gen(function*() {
    state.stopReason = undefined
    const fiber = yield* Effect.fork(effect)
    state.phaseFiber = fiber
    // a halt that ran before the fiber was recorded could not interrupt it
    if (state.stopReason !== undefined) fiber.unsafeInterruptAsFork(fiber.id())
    const exit = yield* Fiber.await(fiber)
    state.phaseFiber = undefined
    const reason = state.stopReason as StopReason | undefined
    if (reason !== undefined) return { _tag: "Stopped", reason } as const
    return Exit.isSuccess(exit) ? { _tag: "Done", value: exit.value } as const : yield* Effect.failCause(exit.cause)
  })

/** Commits the buffered rows with a status change. */
const transition = (state: RunState, change: RunTransition): Effect.Effect<void> =>
  Run.flush(state, [], [], { transition: change })

const encodeError = (state: RunState, schema: S.Schema.All, error: unknown): Effect.Effect<unknown> =>
  Schema.encodeUnknown(schema as S.Schema<unknown, unknown>)(error).pipe(
    Effect.catchAll((parseError) =>
      Run.park(
        state,
        new JournalDecodeError({
          workflowId: state.runId,
          stepKey: "(workflow error)",
          message: `the workflow failed with an error its error Schema does not encode: ${parseError.message}`
        })
      )
    )
  )

/** What happened to one execution of a run, for the worker. */
export type Outcome =
  | { readonly _tag: "Finished"; readonly status: RunTransition["status"] }
  | { readonly _tag: "Suspended"; readonly status: "sleeping" | "waiting"; readonly runnableAt: number | null }
  | {
    readonly _tag: "Abandoned"
    readonly cause: string
    /** A fenced write found the lease gone. */
    readonly leaseLost: boolean
    /** A crash injected by the testing kit. */
    readonly injected: boolean
  }

/**
 * Executes one claimed run: loads its journal, replays the body, then finishes, suspends,
 * compensates or parks it. Never fails: every problem ends as a status or an abandoned lease.
 */
export const executeRun = (options: {
  readonly run: RunRecord
  readonly handler: HandlerService
  readonly store: WorkflowStore["Type"]
  readonly settings: Settings
  readonly hooks: Hooks["Type"]
  /**
   * Called once the final commit released the run, before the waiters of this process are told:
   * the worker frees the run's slot there, so that a caller who starts its next run as soon as this
   * one's result arrives finds the slot free, and the run is handed over instead of claimed later.
   */
  readonly released?: (() => void) | undefined
  /**
   * Called before a commit that releases the run's lease (a finish, a park, a suspend) is sent:
   * from then on a heartbeat may find the lease released by that commit, which is no loss.
   */
  readonly releasing?: (() => void) | undefined
  /**
   * A run handed over before it was stored (`run` is its record as it will be created, epoch 1):
   * its first commit creates it (`Commit.create`). `created` is told once whether it did.
   */
  readonly create?: {
    readonly commit: CommitCreate
    readonly created: (created: boolean) => void
  } | undefined
}): Effect.Effect<Outcome> => {
  // whether `create.created` was told (once), by the run's state or at the end below
  let told = options.create === undefined
  return Effect.gen(function*() {
    const { handler, hooks, run, settings, store } = options
    const workflow = handler.workflow
    // The first claim of a run (epoch 1) finds an empty journal: nothing was ever written under an
    // earlier epoch. Its journal load is skipped; signals sent before it are loaded on the first
    // `awaitSignal` that needs them.
    const fresh = run.epoch === 1
    // the claim that returned `run` was sent before now: a conservative time for the lease's start
    const clock = yield* Effect.clock
    const claimedBy = clock.unsafeCurrentTimeMillis()
    const snapshot = fresh
      ? Either.right({ run, entries: [], signals: [] })
      : yield* store.load(run.id).pipe(
        Run.retryStore(settings.storeRetry),
        Effect.either
      )
    // A run whose journal cannot be loaded because the store keeps failing is abandoned like a crash,
    // so it is parked `dead` below once it reached the recovery limit instead of being claimed
    // forever. A stored row that does not decode is damaged data: the run is parked below.
    const loadFailure = snapshot._tag === "Left" ? snapshot.left : undefined
    if (
      loadFailure !== undefined && loadFailure._tag !== "JournalDecodeError" &&
      run.recoveries < settings.maxRecoveries
    ) {
      return { _tag: "Abandoned", cause: loadFailure.message, leaseLost: false, injected: false } as const
    }
    const loaded = snapshot._tag === "Right" ? snapshot.right : undefined
    const timeoutMs = workflow.timeout === undefined ? null : Duration.toMillis(workflow.timeout)
    const tagged = <Type, In, Out>(metric: Metric.Metric<Type, In, Out>) =>
      Metrics.tagged(metric, ["workflow", run.workflow])
    // a run handed over before it was stored counts as started once a commit stored it
    const started = Metric.increment(tagged(Metrics.runsStarted))
    if (fresh && options.create === undefined) yield* started
    const state = yield* Run.makeState({
      runId: run.id,
      workflowName: run.workflow,
      epoch: run.epoch,
      store,
      settings,
      hooks,
      clock,
      entries: loaded?.entries ?? [],
      signals: loaded?.signals ?? [],
      signalsLoaded: !fresh,
      cancelRequested: (loaded?.run.cancelRequested ?? false) || run.cancelRequested,
      leaseConfirmedAt: claimedBy,
      deadline: timeoutMs === null ? null : run.createdAt + timeoutMs,
      timeoutMs,
      create: options.create === undefined ? undefined : {
        commit: options.create.commit,
        done: (stored) => {
          if (told) return
          told = true
          options.create!.created(stored)
        },
        onStored: started
      },
      releasing: options.releasing
    })

    /**
     * A child run's final (or parking) commit tells its parent, in the same atomic write: the
     * parent's `Workflow.child` finds the outcome among its signals, and a waiting parent is woken.
     */
    const notifyParent = (
      status: RunStatus,
      change: Omit<RunTransition, "status" | "runnableAt" | "release">
    ): SignalDelivery | undefined =>
      run.parentId === null ? undefined : {
        runId: run.parentId,
        name: Run.childSignal,
        signalId: `${run.id}@${run.epoch}`,
        payload: JSON.stringify(
          Schema.encodeSync(Run.ChildOutcome)({
            childId: run.id,
            workflow: run.workflow,
            status,
            output: change.output ?? null,
            error: change.error ?? null
          })
        )
      }

    const finish = (
      status: RunTransition["status"],
      change: Omit<RunTransition, "status" | "runnableAt" | "release">
    ) =>
      Effect.gen(function*() {
        const signal = notifyParent(status, change)
        yield* transition(state, {
          status,
          runnableAt: null,
          release: true,
          ...change,
          ...(signal === undefined ? {} : { signal })
        })
        // committed and released: waiters in this process get the final record without reading it back
        options.released?.()
        Local.finished(store, {
          ...run,
          status,
          output: change.output ?? null,
          error: change.error ?? null,
          leaseOwner: null,
          leaseExpiresAt: null,
          runnableAt: null
        })
        const counter = finishedCounter(status)
        if (counter === Metrics.runsParked) {
          yield* Metric.increment(Metrics.tagged(counter, ["workflow", run.workflow], ["status", status]))
        } else if (counter !== undefined) yield* Metric.increment(tagged(counter))
        return status
      })

    /**
     * Children this run started and no longer awaits are cancelled before it compensates or ends.
     * A store that keeps failing abandons the run: the next execution cancels them again.
     */
    const cancelChildren = Effect.suspend(() =>
      Effect.forEach(
        [...state.openChildren.values()],
        (childId) =>
          store.requestCancel(childId).pipe(
            Run.retryStore(settings.storeRetry),
            Effect.catchAll((error) =>
              error instanceof RunNotFound // the parent crashed between the child's start marker and its creation
                ? Effect.void
                : Run.halt(state, { _tag: "Abandon", cause: error.message })
            )
          ),
        { discard: true }
      )
    )

    const parkWith = (reason: ParkReasonType, failure?: unknown) =>
      finish(reason._tag === "RecoveryLimitReached" ? "dead" : "needs_attention", {
        error: Run.encodeRunError({ _tag: "Parked", reason, ...(failure === undefined ? {} : { failure }) })
      })

    const compensate = (failure: Failure) =>
      Effect.gen(function*() {
        yield* cancelChildren
        state.phase = "compensation"
        const compensations = [...state.compensations].sort((a, b) => b.seq - a.seq)
        const failedKeys: Array<string> = []
        const messages: Array<string> = []
        if (compensations.length > 0) {
          yield* transition(state, {
            status: "compensating",
            runnableAt: Run.now(state),
            release: false
          })
        }
        for (const compensation of compensations) {
          const key = `${compensation.key}#compensate`
          const previous = yield* Run.replay(state, key, "compensation")
          if (previous?.status === "succeeded") continue
          const exit = yield* Effect.exit(execute(state, {
            key,
            seq: previous?.seq ?? state.nextSeq++,
            kind: "compensation",
            success: Schema.Void,
            error: Schema.Unknown,
            retry: undefined,
            retryOn: undefined,
            journalFailure: false,
            effect: Effect.asVoid(compensation.effect)
          }, previous))
          if (Exit.isFailure(exit)) {
            failedKeys.push(compensation.key)
            messages.push(`${compensation.key}: ${Codec.errorMessage(Cause.squash(exit.cause))}`)
          }
        }
        const failureJson = failure._tag === "Failure" ? failure.error : undefined
        if (failedKeys.length > 0) {
          return yield* parkWith(
            new CompensationFailed({ workflowId: state.runId, stepKeys: failedKeys, message: messages.join("; ") }),
            failureJson
          )
        }
        const status = failure._tag === "Cancelled" ? "cancelled" : compensations.length > 0 ? "compensated" : "failed"
        return yield* finish(status, { error: Run.encodeRunError(failure) })
      })

    const afterBody = (exit: Exit.Exit<unknown, unknown>) =>
      Effect.gen(function*() {
        if (Exit.isSuccess(exit)) {
          yield* Run.checkFrontier(state, null)
          const output = yield* Run.encode(state, workflow.successSchema, exit.value, "workflow output", "(output)")
          yield* cancelChildren
          return yield* finish("succeeded", { output, error: null })
        }
        const failure = Cause.failureOption(exit.cause)
        if (Option.isSome(failure)) {
          yield* Run.checkFrontier(state, null)
          const error = yield* encodeError(state, workflow.errorSchema, failure.value)
          const text = JSON.stringify(error ?? null)
          if (Codec.byteLength(text) > settings.maxValueBytes) {
            return yield* parkWith(
              new StepDefect({
                workflowId: state.runId,
                stepKey: "(workflow error)",
                message: "workflow error too large"
              })
            )
          }
          return yield* compensate({ _tag: "Failure", error })
        }
        return yield* parkWith(
          new StepDefect({ workflowId: state.runId, stepKey: "(workflow body)", message: Cause.pretty(exit.cause) })
        )
      })

    const onStopped = (reason: StopReason): Effect.Effect<Outcome> => {
      switch (reason._tag) {
        case "Abandon":
          return Effect.succeed({
            _tag: "Abandoned",
            cause: reason.cause,
            leaseLost: reason.leaseLost === true,
            injected: reason.injected === true
          })
        case "Park":
          return settle(parkWith(reason.reason))
        case "Cancel":
          return settle(compensate({ _tag: "Cancelled" }))
        case "Timeout":
          return settle(Effect.gen(function*() {
            const error = Schema.encodeSync(WorkflowTimeout)(
              new WorkflowTimeout({ workflowId: state.runId, timeoutMs: timeoutMs ?? 0 })
            )
            const status = yield* compensate({ _tag: "Failure", error })
            yield* Metric.increment(tagged(Metrics.runsTimedOut))
            return status
          }))
        case "Suspend": {
          const maxSignal = state.signals.reduce((max, signal) => Math.max(max, signal.seq), 0)
          // A cancel requested while the run was running does not wake it when it suspends; the
          // commit reports it, and a cancel request on the now idle run makes it runnable at once.
          const wakeToCancel = Effect.suspend(() =>
            state.cancelRequested
              ? store.requestCancel(state.runId).pipe(
                Run.retryStore(settings.storeRetry),
                Effect.ignore
              )
              : Effect.void
          )
          return settle(
            Effect.as(
              Effect.zipRight(
                transition(state, {
                  status: reason.status,
                  runnableAt: reason.runnableAt,
                  release: true,
                  ...(reason.status === "waiting" ? { signalSeenSeq: maxSignal } : {})
                }),
                wakeToCancel
              ),
              { _tag: "Suspended", status: reason.status, runnableAt: reason.runnableAt } as const
            )
          )
        }
      }
    }

    const settle = <A extends Outcome | RunTransition["status"]>(
      effect: Effect.Effect<A>
    ): Effect.Effect<Outcome> =>
      Effect.flatMap(phase(state, effect), (result): Effect.Effect<Outcome> => {
        if (result._tag === "Stopped") return onStopped(result.reason)
        const value: Outcome | RunTransition["status"] = result.value
        return Effect.succeed(typeof value === "string" ? { _tag: "Finished", status: value } : value)
      })

    if (run.recoveries >= settings.maxRecoveries) {
      return yield* settle(parkWith(new RecoveryLimitReached({ workflowId: run.id, recoveries: run.recoveries })))
    }
    if (loadFailure?._tag === "JournalDecodeError") return yield* settle(parkWith(loadFailure))
    const payload = yield* Codec.decode(workflow.payloadSchema, run.payload).pipe(Effect.either)
    if (payload._tag === "Left") {
      return yield* settle(
        parkWith(
          new JournalDecodeError({
            workflowId: run.id,
            stepKey: "(payload)",
            message: `payload no longer decodes: ${payload.left}`
          })
        )
      )
    }
    // At the deadline, a body busy with new work (a step attempt, a retry delay, an in-process wait)
    // is interrupted; a body still replaying its journal stops at its next boundary instead
    // (`Run.checkStop`), so that the compensations of every journaled step are registered, and
    // a replay that reaches no new work ends as the first execution did. A requested cancel wins.
    const deadline = state.deadline
    const deadlineTimer = deadline === null ? Effect.never : Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      yield* Effect.sleep(Duration.millis(Math.max(0, deadline - now)))
      for (let i = 0; i < 3; i++) yield* Effect.yieldNow()
      return yield* state.newWork && state.unconsumed === 0 && !state.cancelRequested
        ? Run.halt(state, { _tag: "Timeout" })
        : Effect.never
    })
    const execution = Effect.exit(Effect.provideService(handler.execute(payload.right), Run.WorkflowContext, state))
    const body = deadline === null ? execution : Effect.raceFirst(execution, deadlineTimer)
    // The body and what follows it (the finish, or the compensations) are one phase, one fiber: a
    // halt in either stops it the same way.
    return yield* settle(Effect.flatMap(body, afterBody))
  }).pipe(
    Tracing.withSpan("memento.run", {
      attributes: {
        "workflow.id": options.run.id,
        "workflow.name": options.run.workflow,
        "run.epoch": options.run.epoch
      },
      captureStackTrace: false
    }),
    Effect.annotateLogs({ "workflow.id": options.run.id, "workflow.name": options.run.workflow }),
    (execution) => {
      const active = Metrics.tagged(Metrics.activeRuns, ["worker", options.run.leaseOwner ?? "unknown"])
      return Effect.zipRight(Metric.increment(active), Effect.ensuring(execution, Metric.modify(active, -1)))
    },
    // a run that ended (or was interrupted) before any commit stored it never will be
    Effect.ensuring(Effect.sync(() => {
      if (told) return
      told = true
      options.create!.created(false)
    }))
  )
}
