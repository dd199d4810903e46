/**
 * Steps: the unit of durability. A step's result (or terminal failure) is encoded with its Schemas
 * and journaled under (workflow ID, step key); a replay returns the journaled value without
 * running the step again. Steps run at least once: a crash after the side effect but before the
 * journal write runs the step again, with the same `Step.idempotencyKey`.
 *
 * @since 0.1.0
 */
import type { Schedule } from "effect"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"
import { WorkflowContext } from "./internal/run.js"
import * as Run from "./internal/run.js"
import type { StepInfo } from "./internal/step.js"
import { execute, StepContext } from "./internal/step.js"
import { StepDefect, StepTimeout } from "./WorkflowError.js"

export {
  /**
   * The step attempt being executed: workflow ID, step key, attempt number and idempotency key.
   * Provided to the effect of `Step.run` and `Step.transaction`.
   *
   * @since 0.1.0
   * @category tags
   */
  StepContext
}

export type {
  /**
   * @since 0.1.0
   * @category models
   */
  StepInfo
}

/**
 * Options of a journaled step.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<A, I, E, EI, R2, T = never> {
  /** Encodes the result for the journal and decodes it on replay. */
  readonly success: Schema.Schema<A, I>
  /** Encodes terminal failures for the journal; only these errors are retried. Default: none. */
  readonly error?: Schema.Schema<E, EI> | undefined
  /**
   * Retry policy for the errors above (and `StepTimeout` when `timeout` is set). Default:
   * exponential from 100 ms, factor 2, jittered, capped at 10 s, 5 attempts
   * (`WorkflowConfig.defaultRetry`). `Schedule.stop` never retries.
   */
  readonly retry?: Schedule.Schedule<unknown, NoInfer<E> | T> | undefined
  /** Which declared errors (and step timeouts) are worth retrying (default: all). Others are terminal at once. */
  readonly retryOn?: ((error: NoInfer<E> | T) => boolean) | undefined
  /**
   * Limits each attempt: an attempt still running after `timeout` is interrupted and fails with
   * `StepTimeout`, which is retried per `retry` like a declared error; when the retries are
   * exhausted the step fails with `StepTimeout` (journaled). The step's error type then includes
   * `StepTimeout`. Default: no limit.
   */
  readonly timeout?: Duration.DurationInput | undefined
  /**
   * Registers a compensation for a successful step: when the workflow fails terminally or is
   * cancelled, compensations run in reverse order, each journaled as its own step (key
   * `<step key>#compensate`) with the default retries.
   */
  readonly compensate?: ((output: A) => Effect.Effect<unknown, unknown, R2>) | undefined
}

const validateName = (state: Run.RunState, name: string): Effect.Effect<void> =>
  name.length === 0 || name.includes("#")
    ? Run.park(
      state,
      new StepDefect({
        workflowId: state.runId,
        stepKey: name,
        message: `invalid step name "${name}": names are non-empty and must not contain "#"`
      })
    )
    : Effect.void

/**
 * Options of a step with a per-attempt `timeout`: the retry policy also sees `StepTimeout`.
 *
 * @since 0.1.0
 * @category models
 */
export interface TimedOptions<A, I, E, EI, R2> extends Options<A, I, E, EI, R2, StepTimeout> {
  readonly timeout: Duration.DurationInput
}

const runStep = <A, I, E, EI, R, R2>(
  kind: "step" | "transaction",
  name: string,
  options: Options<A, I, E, EI, R2, unknown>,
  effect: Effect.Effect<A, E, R>
): Effect.Effect<A, E, Exclude<R | R2, StepContext> | WorkflowContext> =>
  Effect.gen(function*() {
    const state = yield* WorkflowContext
    yield* validateName(state, name)
    const key = Run.nextKey(state, name)
    const timeoutMs = options.timeout === undefined ? undefined : Duration.toMillis(Duration.decode(options.timeout))
    const declared = options.error ?? Schema.Never
    // a step with a timeout journals `StepTimeout` next to its declared errors
    const error = (timeoutMs === undefined ? declared : Schema.Union(declared, StepTimeout)) as Schema.Schema<E, EI>
    const previous = yield* Run.replay(state, key, kind)
    const seq = previous?.seq ?? state.nextSeq++
    let value: A
    if (previous !== undefined && previous.status === "succeeded") {
      value = yield* Run.decode(state, options.success, previous.output, "output", key)
    } else if (previous !== undefined && previous.status === "failed") {
      return yield* Effect.flatMap(Run.decode(state, error, previous.error, "error", key), Effect.fail)
    } else {
      // Also for a step whose start marker is journaled: running it while journaled steps are still
      // unreplayed would execute a side effect in a replay that contradicts the journal.
      yield* Run.checkFrontier(state, key)
      yield* Run.checkStop(state)
      value = yield* execute(state, {
        key,
        seq,
        kind,
        success: options.success,
        error,
        retry: options.retry,
        retryOn: options.retryOn,
        journalFailure: true,
        timeoutMs,
        effect
      }, previous)
    }
    if (options.compensate !== undefined) {
      const compensate = options.compensate
      const context = yield* Effect.context<Exclude<R2, StepContext>>()
      state.compensations.push({
        key,
        seq,
        // the compensation's own StepContext is provided when it runs as a step
        effect: Effect.provide(Effect.suspend(() => compensate(value)), context) as Effect.Effect<unknown, unknown>
      })
    }
    return value
  })

/**
 * Runs `effect` as a journaled step named `name`. The first execution runs it (with retries) and
 * journals the encoded result; a replay returns the journaled result without running it. Repeated
 * names in one run get the keys `name`, `name#2`, `name#3`. Without options the step returns
 * nothing and cannot fail.
 *
 * @since 0.1.0
 * @category constructors
 */
export const run: {
  <R>(
    name: string,
    effect: Effect.Effect<void, never, R>
  ): Effect.Effect<void, never, Exclude<R, StepContext> | WorkflowContext>
  <A, I, R, E = never, EI = never, R2 = never>(
    name: string,
    options: TimedOptions<A, I, E, EI, R2>,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | StepTimeout, Exclude<R | R2, StepContext> | WorkflowContext>
  <A, I, R, E = never, EI = never, R2 = never>(
    name: string,
    options: Options<A, I, E, EI, R2> & { readonly timeout?: undefined },
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, Exclude<R | R2, StepContext> | WorkflowContext>
} = (name: string, ...args: Array<any>): any =>
  args.length === 1
    ? runStep("step", name, { success: Schema.Void }, Effect.asVoid(args[0]))
    : runStep("step", name, args[0], args[1])

/**
 * Runs `effect` as a step whose own SQL (on the store's `SqlClient`) and journal write commit in
 * one database transaction: effects inside the same database happen exactly once. A typed failure
 * rolls the transaction back and is retried like `Step.run`. On `MemoryStore` there is no
 * transaction; the step behaves like `Step.run` without a start marker.
 *
 * @since 0.1.0
 * @category constructors
 */
export const transaction: {
  <R>(
    name: string,
    effect: Effect.Effect<void, never, R>
  ): Effect.Effect<void, never, Exclude<R, StepContext> | WorkflowContext>
  <A, I, R, E = never, EI = never, R2 = never>(
    name: string,
    options: TimedOptions<A, I, E, EI, R2>,
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E | StepTimeout, Exclude<R | R2, StepContext> | WorkflowContext>
  <A, I, R, E = never, EI = never, R2 = never>(
    name: string,
    options: Options<A, I, E, EI, R2> & { readonly timeout?: undefined },
    effect: Effect.Effect<A, E, R>
  ): Effect.Effect<A, E, Exclude<R | R2, StepContext> | WorkflowContext>
} = (name: string, ...args: Array<any>): any =>
  args.length === 1
    ? runStep("transaction", name, { success: Schema.Void }, Effect.asVoid(args[0]))
    : runStep("transaction", name, args[0], args[1])

/**
 * The idempotency key of the current step: stable across attempts, crashes and replays (derived
 * from the workflow ID and step key), so an external API that honours idempotency keys applies the
 * side effect once.
 *
 * @since 0.1.0
 * @category accessors
 */
export const idempotencyKey: Effect.Effect<string, never, StepContext> = Effect.map(
  StepContext,
  (info) => info.idempotencyKey
)

/**
 * The current step attempt (1 for the first).
 *
 * @since 0.1.0
 * @category accessors
 */
export const attempt: Effect.Effect<number, never, StepContext> = Effect.map(StepContext, (info) => info.attempt)
