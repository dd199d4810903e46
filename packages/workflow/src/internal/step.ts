import type { Schedule, Schema } from "effect"
import * as Cause from "effect/Cause"
import * as Context from "effect/Context"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Sched from "effect/Schedule"
import { createHash } from "node:crypto"
import * as Metrics from "../Metrics.js"
import * as Tracing from "../Tracing.js"
import { StepDefect, StepTimeout } from "../WorkflowError.js"
import type { AttemptRecord, JournalEntry } from "../WorkflowStore.js"
import * as Codec from "./codec.js"
import type { RunState } from "./run.js"
import {
  abandon,
  afterJournal,
  buffer,
  confirmLease,
  crashPoint,
  encode,
  entry,
  flush,
  halt,
  now,
  park
} from "./run.js"

/** What a step attempt can read about itself. */
export interface StepInfo {
  readonly workflowId: string
  readonly key: string
  readonly attempt: number
  readonly idempotencyKey: string
}

export class StepContext extends Context.Tag("@memento/workflow/StepContext")<StepContext, StepInfo>() {}

/** Stable across attempts, crashes and replays: derived from the workflow ID and the step key only. */
export const idempotencyKeyFor = (workflowId: string, key: string): string =>
  "mem_" + createHash("sha256").update(workflowId).update("\u0000").update(key).digest("base64url")

export interface Spec<A, E, R> {
  readonly key: string
  readonly seq: number
  readonly kind: "step" | "transaction" | "compensation"
  readonly success: Schema.Schema<A, any>
  readonly error: Schema.Schema<E, any>
  readonly retry: Schedule.Schedule<unknown, E> | undefined
  readonly retryOn: ((error: E) => boolean) | undefined
  /** When false, a failure after the last retry is logged but not journaled: a replay runs it again. */
  readonly journalFailure: boolean
  /** Limits each attempt: an attempt still running after this fails with `StepTimeout` (part of `E`). */
  readonly timeoutMs?: number | undefined
  readonly effect: Effect.Effect<A, E, R>
}

class UserFailure<E> extends Data.TaggedError("UserFailure")<{ readonly error: E }> {}

/**
 * Executes a step that the journal does not hold a result for: durable start marker, the effect
 * with its `StepContext`, retries per the schedule, and the result buffered for the next commit.
 * Transactional steps skip the marker and commit the effect and its journal row together.
 */
export const execute = <A, E, R>(
  state: RunState,
  spec: Spec<A, E, R>,
  previous: JournalEntry | undefined
): Effect.Effect<A, E, Exclude<R, StepContext>> =>
  Effect.gen(function*() {
    const key = spec.key
    const seq = spec.seq
    const startedAt = previous?.startedAt ?? now(state)
    // hashed when a step asks for it: most steps never do
    let idempotencyKey: string | undefined
    const runId = state.runId
    // the retry schedule's driver is made at the first failure: most steps never need it
    let driver: Sched.ScheduleDriver<unknown, E, never> | undefined
    let attempt = previous?.attempts ?? 0
    const { latency, retries } = Metrics.forStep(state.workflowName, key)
    const limited = spec.timeoutMs === undefined ? spec.effect : Effect.timeoutFail(spec.effect, {
      duration: spec.timeoutMs,
      onTimeout: () => new StepTimeout({ workflowId: state.runId, stepKey: key, timeoutMs: spec.timeoutMs! }) as E
    })
    while (true) {
      attempt++
      // the first attempt starts when the entry does (a store may keep that attempt in the entry)
      const attemptStart = attempt === 1 ? startedAt : now(state)
      const running: AttemptRecord = {
        key,
        attempt,
        outcome: "running",
        error: null,
        startedAt: attemptStart,
        endedAt: null
      }
      const body = limited.pipe(
        Effect.provideService(StepContext, {
          workflowId: runId,
          key,
          attempt,
          get idempotencyKey() {
            return idempotencyKey ??= idempotencyKeyFor(runId, key)
          }
        }),
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            const endedAt = now(state)
            if (Exit.isFailure(exit) && Cause.isInterruptedOnly(exit.cause)) {
              buffer(state, [], [{ ...running, outcome: "interrupted", endedAt }])
            }
            return Metric.update(latency, Math.max(0, endedAt - attemptStart))
          })
        ),
        Effect.annotateLogs({ "step.key": key, "step.attempt": attempt }),
        Tracing.withSpan("memento.step", {
          attributes: {
            "workflow.id": state.runId,
            "workflow.name": state.workflowName,
            "step.key": key,
            "step.kind": spec.kind,
            attempt
          },
          captureStackTrace: false
        })
      ) as Effect.Effect<A, E, Exclude<R, StepContext>>
      const succeeded = (output: string | null, endedAt: number): JournalEntry =>
        entry({
          key,
          seq,
          kind: spec.kind,
          status: "succeeded",
          output,
          attempts: attempt,
          startedAt,
          completedAt: endedAt
        })

      let cause: Cause.Cause<E>
      if (spec.kind === "transaction") {
        yield* crashPoint(state, "before-step", key)
        // A run handed over before it was stored is stored first: nothing of a step runs for a run
        // ID that turns out to exist (the step's SQL would roll back, but not what else it does).
        if (state.create !== undefined) yield* flush(state, [], [], { evenIfEmpty: true })
        yield* confirmLease(state)
        const sentAt = now(state)
        const pending = { entries: [...state.pendingEntries.values()], attempts: [...state.pendingAttempts.values()] }
        state.pendingEntries.clear()
        state.pendingAttempts.clear()
        const transaction = yield* state.store.transaction(
          body.pipe(
            Effect.mapError((error) => new UserFailure({ error })),
            Effect.flatMap((value) =>
              Effect.all([Effect.succeed(value), encode(state, spec.success, value, `output of step "${key}"`, key)])
            ),
            Effect.tap(() => crashPoint(state, "after-effect", key)),
            Effect.bindTo("result"),
            Effect.bind("endedAt", () => Effect.sync(() => now(state)))
          ),
          ({ endedAt, result: [, output] }) => ({
            runId: state.runId,
            epoch: state.epoch,
            leaseMs: state.settings.leaseMs,
            entries: [...pending.entries, succeeded(output, endedAt)],
            attempts: [...pending.attempts, { ...running, outcome: "succeeded", endedAt }]
          })
        ).pipe(Effect.exit)
        if (Exit.isSuccess(transaction)) {
          const [{ endedAt, result: [value, output] }, result] = transaction.value
          if (result.cancelRequested) state.cancelRequested = true
          state.leaseConfirmedAt = Math.max(state.leaseConfirmedAt, sentAt)
          yield* afterJournal(state, [...pending.entries, succeeded(output, endedAt)])
          return value
        }
        buffer(state, pending.entries, pending.attempts)
        const failure = Cause.failureOption(transaction.cause)
        if (Option.isSome(failure) && !(failure.value instanceof UserFailure)) {
          // The store failed or the lease is gone: whether the transaction committed is unknown,
          // so this worker stops; a replay reads the journal and runs the step again only if not.
          return yield* abandon(state, failure.value)
        }
        cause = Cause.map(transaction.cause, (error) => (error as UserFailure<E>).error)
      } else {
        yield* flush(state, [entry({ key, seq, kind: spec.kind, status: "started", attempts: attempt, startedAt })], [
          running
        ])
        // The commit is where a worker learns of a cancel requested while the previous step ran.
        if (state.cancelRequested && state.phase === "body") {
          buffer(state, [], [{ ...running, outcome: "interrupted", endedAt: attemptStart }])
          return yield* halt(state, { _tag: "Cancel" })
        }
        yield* crashPoint(state, "before-step", key)
        const exit = yield* Effect.exit(body)
        if (Exit.isSuccess(exit)) {
          const output = yield* encode(state, spec.success, exit.value, `output of step "${key}"`, key)
          yield* crashPoint(state, "after-effect", key)
          const endedAt = now(state)
          buffer(state, [succeeded(output, endedAt)], [{ ...running, outcome: "succeeded", endedAt }])
          return exit.value
        }
        cause = exit.cause
      }

      const endedAt = now(state)
      const failure = Cause.failureOption(cause)
      if (Option.isNone(failure)) {
        if (Cause.isInterruptedOnly(cause)) return yield* Effect.failCause(cause)
        const message = Cause.pretty(cause)
        buffer(state, [], [{ ...running, outcome: "failed", error: message, endedAt }])
        return yield* park(state, new StepDefect({ workflowId: state.runId, stepKey: key, message }))
      }
      const error: E = failure.value
      const message = Codec.errorMessage(error)
      buffer(state, [], [{ ...running, outcome: "retrying", error: message, endedAt }])
      const retryable = spec.retryOn === undefined || spec.retryOn(error)
      driver ??= yield* Sched.driver(spec.retry ?? (state.settings.defaultRetry as Schedule.Schedule<unknown, E>))
      const again = retryable ? Option.isSome(yield* Effect.option(driver.next(error))) : false
      if (again) {
        yield* Metric.increment(retries)
        continue
      }
      buffer(state, [], [{ ...running, outcome: "failed", error: message, endedAt }])
      if (spec.journalFailure) {
        const encoded = yield* encode(state, spec.error, error, `error of step "${key}"`, key)
        buffer(state, [
          entry({
            key,
            seq,
            kind: spec.kind,
            status: "failed",
            error: encoded,
            attempts: attempt,
            startedAt,
            completedAt: endedAt
          })
        ])
      }
      return yield* Effect.fail(error)
    }
  })
