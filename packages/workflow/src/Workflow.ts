/**
 * Workflows: named, typed, durable Effect programs. `Workflow.make` declares one (its name is
 * stored with every run, its Schemas encode what is journaled); `implement` gives the layer a
 * `Worker` needs to execute it. Inside a body, `Workflow.sleep`, `Workflow.awaitSignal`,
 * `Workflow.child` and `Workflow.patched` are journaled like steps.
 *
 * @since 0.1.0
 */
import type { Schema as S } from "effect"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Schema from "effect/Schema"
import * as Codec from "./internal/codec.js"
import * as Run from "./internal/run.js"
import { WorkflowContext } from "./internal/run.js"
import * as Tracing from "./Tracing.js"
import {
  ChildWorkflowFailed,
  JournalDecodeError,
  JournalMismatch,
  SignalTimeout,
  StepDefect,
  WorkflowTimeout
} from "./WorkflowError.js"

export {
  /**
   * The run a workflow body executes in. Every journaled operation requires it; `implement`
   * provides it, so a body's requirements never show it.
   *
   * @since 0.1.0
   * @category tags
   */
  WorkflowContext
}

export { type CatchUp, schedule, type ScheduleOptions } from "./internal/cron.js"

/**
 * @since 0.1.0
 * @category type ids
 */
export declare const HandlerTypeId: unique symbol

/**
 * The service a workflow's implementation layer provides, one per workflow name.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<Name extends string> {
  readonly [HandlerTypeId]: Name
}

/**
 * @since 0.1.0
 * @category models
 */
export interface HandlerService {
  readonly workflow: Any
  readonly execute: (payload: unknown) => Effect.Effect<unknown, unknown, WorkflowContext>
}

/**
 * A workflow definition.
 *
 * @since 0.1.0
 * @category models
 */
export interface Workflow<
  Name extends string,
  Payload extends S.Schema.AnyNoContext,
  Success extends S.Schema.AnyNoContext,
  Error extends S.Schema.All
> {
  readonly name: Name
  readonly payloadSchema: Payload
  readonly successSchema: Success
  readonly errorSchema: Error
  /** The workflow ID of a payload; `undefined` when the definition has no `idempotencyKey`. */
  readonly idempotencyKey: ((payload: Payload["Type"]) => string) | undefined
  /** How long a run may take from its creation; `undefined`: no limit. */
  readonly timeout: Duration.Duration | undefined
  readonly tag: Context.Tag<Handler<Name>, HandlerService>
  /**
   * The implementation of this workflow as a layer for a `Worker`. The body's requirements are
   * captured when the layer is built.
   */
  readonly implement: <R>(
    body: (payload: Payload["Type"]) => Effect.Effect<Success["Type"], Error["Type"], R>
  ) => Layer.Layer<Handler<Name>, never, Exclude<R, WorkflowContext>>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Any {
  readonly name: string
  readonly payloadSchema: S.Schema.AnyNoContext
  readonly successSchema: S.Schema.AnyNoContext
  readonly errorSchema: S.Schema.All
  readonly idempotencyKey: ((payload: any) => string) | undefined
  readonly timeout?: Duration.Duration | undefined
  readonly tag: Context.Tag<any, HandlerService>
}

/**
 * @since 0.1.0
 * @category type-level
 */
export type PayloadOf<W extends Any> = W["payloadSchema"]["Type"]
/**
 * @since 0.1.0
 * @category type-level
 */
export type SuccessOf<W extends Any> = W["successSchema"]["Type"]
/**
 * @since 0.1.0
 * @category type-level
 */
export type ErrorOf<W extends Any> = W["errorSchema"]["Type"]
/**
 * @since 0.1.0
 * @category type-level
 */
export type HandlerOf<W extends Any> = W extends Workflow<infer Name, any, any, any> ? Handler<Name> : never

/**
 * The options of `Workflow.make`.
 *
 * @since 0.1.0
 * @category models
 */
export interface MakeOptions<Name extends string, Payload extends S.Schema.AnyNoContext, Success, Error> {
  readonly name: Name
  readonly payload: Payload
  readonly success?: Success | undefined
  readonly error?: Error | undefined
  readonly idempotencyKey?: ((payload: Payload["Type"]) => string) | undefined
  /**
   * How long a run may take, counted from its creation (durable: the deadline holds across
   * replays, crashes, sleeps and waits). A run unfinished at its deadline fails with
   * `WorkflowTimeout`, which is added to the workflow's error type, and compensates.
   */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * Declares a workflow. `name` is stored with every run and must stay stable; `idempotencyKey`
 * maps a payload to its workflow ID (starting the same ID twice returns the existing run).
 * `success` defaults to `Schema.Void`, `error` to `Schema.Never`. With `timeout`, the error
 * Schema is `Schema.Union(error, WorkflowTimeout)`: `WorkflowTimeout` is one of the workflow's
 * errors, returned typed by `client.result` and by a parent's `Workflow.child`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: {
  <
    const Name extends string,
    Payload extends S.Schema.AnyNoContext,
    Success extends S.Schema.AnyNoContext = typeof Schema.Void,
    Error extends S.Schema.All = typeof Schema.Never
  >(
    options: MakeOptions<Name, Payload, Success, Error> & { readonly timeout: Duration.DurationInput }
  ): Workflow<Name, Payload, Success, S.Union<[Error, typeof WorkflowTimeout]>>
  <
    const Name extends string,
    Payload extends S.Schema.AnyNoContext,
    Success extends S.Schema.AnyNoContext = typeof Schema.Void,
    Error extends S.Schema.All = typeof Schema.Never
  >(
    options: MakeOptions<Name, Payload, Success, Error> & { readonly timeout?: undefined }
  ): Workflow<Name, Payload, Success, Error>
} = (options: MakeOptions<string, S.Schema.AnyNoContext, S.Schema.AnyNoContext, S.Schema.All>): any => {
  const tag = Context.GenericTag<Handler<string>, HandlerService>(`@memento/workflow/Handler/${options.name}`)
  const timeout = options.timeout === undefined ? undefined : Duration.decode(options.timeout)
  const declared: S.Schema.All = options.error ?? Schema.Never
  type Self = Workflow<string, S.Schema.AnyNoContext, S.Schema.AnyNoContext, S.Schema.All>
  const self: Self = {
    name: options.name,
    payloadSchema: options.payload,
    successSchema: options.success ?? Schema.Void,
    errorSchema: timeout === undefined ? declared : Schema.Union(declared, WorkflowTimeout),
    idempotencyKey: options.idempotencyKey,
    timeout,
    tag,
    implement: <R>(body: (payload: unknown) => Effect.Effect<unknown, unknown, R>) =>
      Layer.effect(
        tag,
        Effect.map(Effect.context<Exclude<R, WorkflowContext>>(), (context): HandlerService => ({
          workflow: self,
          execute: (payload) =>
            Effect.provide(body(payload), context) as Effect.Effect<unknown, unknown, WorkflowContext>
        }))
      )
  }
  return self
}

/**
 * The ID of the run executing this body.
 *
 * @since 0.1.0
 * @category accessors
 */
export const workflowId: Effect.Effect<string, never, WorkflowContext> = Effect.map(
  WorkflowContext,
  (state) => state.runId
)

const validName = (state: Run.RunState, name: string): Effect.Effect<void> =>
  name.length === 0 || name.includes("#")
    ? Run.park(
      state,
      new StepDefect({
        workflowId: state.runId,
        stepKey: name,
        message: `invalid name "${name}": names are non-empty and must not contain "#"`
      })
    )
    : Effect.void

const spanAttributes = (state: Run.RunState, key: string) => ({
  "workflow.id": state.runId,
  "workflow.name": state.workflowName,
  "step.key": key
})

/** On replay, a wake time this close is waited for in process (clocks of workers and database differ). */
const replayToleranceMs = 1_000

/**
 * A durable sleep: the wake time is journaled and the worker is freed; the run wakes on time after
 * any restart (claimed again when due). A replay of a finished sleep does not sleep again.
 *
 * @since 0.1.0
 * @category durable time
 */
export const sleep = (name: string, duration: Duration.DurationInput): Effect.Effect<void, never, WorkflowContext> =>
  Effect.gen(function*() {
    const state = yield* WorkflowContext
    yield* validName(state, name)
    const key = Run.nextKey(state, name)
    const previous = yield* Run.replay(state, key, "sleep")
    if (previous?.status === "succeeded") return
    const now = yield* Clock.currentTimeMillis
    let wakeAt: number
    let seq: number
    let startedAt: number
    yield* Effect.annotateCurrentSpan(spanAttributes(state, key))
    if (previous === undefined) {
      yield* Run.checkFrontier(state, key)
      yield* Run.checkStop(state)
      wakeAt = now + Duration.toMillis(duration)
      seq = state.nextSeq++
      startedAt = now
      Run.buffer(state, [
        Run.entry({
          key,
          seq,
          kind: "sleep",
          status: "started",
          attempts: 1,
          startedAt,
          meta: JSON.stringify({ wakeAt })
        })
      ])
    } else {
      const journaled = Codec.metaField(previous.meta, "wakeAt")
      if (typeof journaled !== "number") {
        return yield* Run.park(
          state,
          new JournalDecodeError({ workflowId: state.runId, stepKey: key, message: "journaled sleep has no wake time" })
        )
      }
      yield* Run.checkStop(state)
      wakeAt = journaled
      seq = previous.seq
      startedAt = previous.startedAt
    }
    const remaining = wakeAt - now
    if (remaining > (previous === undefined ? 0 : replayToleranceMs)) {
      return yield* Run.halt(state, { _tag: "Suspend", status: "sleeping", runnableAt: Run.wakeTime(state, wakeAt) })
    }
    if (remaining > 0) yield* Effect.sleep(remaining)
    Run.buffer(state, [
      Run.entry({
        key,
        seq,
        kind: "sleep",
        status: "succeeded",
        attempts: 1,
        startedAt,
        completedAt: yield* Clock.currentTimeMillis,
        meta: JSON.stringify({ wakeAt })
      })
    ])
  }).pipe(Tracing.withSpan("memento.sleep"))

/**
 * Waits durably for a signal named `name` sent with `WorkflowClient.signal`; signals sent before
 * the wait are kept, a repeated `signalId` is ignored. The received value is journaled; while
 * waiting the run holds no worker. With `timeout`, fails with `SignalTimeout` when none arrived.
 *
 * @since 0.1.0
 * @category durable events
 */
export const awaitSignal = <A, I>(
  name: string,
  schema: S.Schema<A, I>,
  options?: { readonly timeout?: Duration.DurationInput | undefined }
): Effect.Effect<A, SignalTimeout, WorkflowContext> =>
  Effect.gen(function*() {
    const state = yield* WorkflowContext
    yield* validName(state, name)
    const key = Run.nextKey(state, name)
    const previous = yield* Run.replay(state, key, "signal")
    if (previous?.status === "succeeded") return yield* Run.decode(state, schema, previous.output, "signal", key)
    if (previous?.status === "failed") return yield* Effect.fail(new SignalTimeout({ signal: name }))
    const now = yield* Clock.currentTimeMillis
    let deadline: number | null
    let seq: number
    let startedAt: number
    yield* Effect.annotateCurrentSpan(spanAttributes(state, key))
    if (previous === undefined) {
      yield* Run.checkFrontier(state, key)
      yield* Run.checkStop(state)
      deadline = options?.timeout === undefined ? null : now + Duration.toMillis(options.timeout)
      seq = state.nextSeq++
      startedAt = now
    } else {
      yield* Run.checkStop(state)
      const journaled = Codec.metaField(previous.meta, "deadline")
      deadline = typeof journaled === "number" ? journaled : null
      seq = previous.seq
      startedAt = previous.startedAt
    }
    const meta = (extra: object) => JSON.stringify({ signal: name, deadline, ...extra })
    yield* Run.loadSignals(state)
    for (const signal of state.signals) {
      if (signal.name !== name || state.consumedSignals.has(signal.signalId)) continue
      const decoded = yield* Effect.either(Codec.decode(schema, signal.payload))
      if (decoded._tag === "Left") {
        yield* Effect.logWarning(`ignoring signal "${name}" (${signal.signalId}): ${decoded.left}`).pipe(
          Effect.annotateLogs({ "workflow.id": state.runId, "step.key": key })
        )
        continue
      }
      state.consumedSignals.add(signal.signalId)
      Run.buffer(state, [
        Run.entry({
          key,
          seq,
          kind: "signal",
          status: "succeeded",
          attempts: 1,
          startedAt,
          completedAt: now,
          output: signal.payload,
          meta: meta({ signalId: signal.signalId })
        })
      ])
      return decoded.right
    }
    if (deadline !== null && now >= deadline) {
      const timeout = new SignalTimeout({ signal: name })
      Run.buffer(state, [
        Run.entry({
          key,
          seq,
          kind: "signal",
          status: "failed",
          attempts: 1,
          startedAt,
          completedAt: now,
          error: yield* Run.encode(state, SignalTimeout, timeout, "signal timeout", key),
          meta: meta({})
        })
      ])
      return yield* Effect.fail(timeout)
    }
    if (previous === undefined) {
      Run.buffer(state, [
        Run.entry({ key, seq, kind: "signal", status: "started", attempts: 1, startedAt, meta: meta({}) })
      ])
    }
    return yield* Run.halt(state, { _tag: "Suspend", status: "waiting", runnableAt: Run.wakeTime(state, deadline) })
  }).pipe(Tracing.withSpan("memento.awaitSignal"))

/**
 * @since 0.1.0
 * @category models
 */
export interface ChildOptions {
  /**
   * The step name of the child in the parent's journal (default: the child workflow's name). The
   * child's workflow ID is `<parent ID>/<step key>`, e.g. `order-1/payment` or `order-1/payment#2`.
   */
  readonly name?: string | undefined
}

/**
 * Runs another workflow as a journaled step of this one and returns its result. The child is
 * started idempotently with the workflow ID `<parent ID>/<step key>` (a replay or a crash of the
 * parent never starts it twice) and executes on any worker that registered its workflow. Meanwhile
 * the parent is `waiting` and holds no worker; the child's final commit wakes it atomically.
 *
 * The child's success is decoded with its success Schema; a child that fails with its declared
 * error fails this step with that error (its `WorkflowTimeout` too, if it has a timeout); a child
 * that was cancelled or parked (`needs_attention`, `dead`) fails it with `ChildWorkflowFailed`.
 * The outcome is journaled: a replay returns it without touching the child. When the parent is
 * cancelled, times out or ends while a child it started is unfinished, that child is cancelled.
 *
 * @since 0.1.0
 * @category child workflows
 */
export const child = <W extends Any>(
  workflow: W,
  payload: PayloadOf<W>,
  options?: ChildOptions
): Effect.Effect<SuccessOf<W>, ErrorOf<W> | ChildWorkflowFailed, WorkflowContext> =>
  Effect.gen(function*() {
    const state = yield* WorkflowContext
    const name = options?.name ?? workflow.name
    yield* validName(state, name)
    const key = Run.nextKey(state, name)
    yield* Effect.annotateCurrentSpan({ ...spanAttributes(state, key), "child.workflow": workflow.name })
    const errorSchema = Schema.Union(workflow.errorSchema as S.Schema<ErrorOf<W>, unknown>, ChildWorkflowFailed)
    const previous = yield* Run.replay(state, key, "child")
    if (previous?.status === "succeeded") {
      return yield* Run.decode(state, workflow.successSchema, previous.output, "child output", key)
    }
    if (previous?.status === "failed") {
      return yield* Effect.flatMap(Run.decode(state, errorSchema, previous.error, "child error", key), Effect.fail)
    }
    const childId = `${state.runId}/${key}`
    const payloadText = (yield* Run.encode(state, workflow.payloadSchema, payload, `payload of child "${key}"`, key)) ??
      "null"
    const meta = JSON.stringify({ childId, workflow: workflow.name })
    let seq: number
    let startedAt: number
    const create = Effect.gen(function*() {
      const created = yield* state.store.create({
        id: childId,
        workflow: workflow.name,
        payload: payloadText,
        parentId: state.runId
      }).pipe(
        Run.retryStore(state.settings.storeRetry),
        Effect.catchAll((error) => Run.halt(state, { _tag: "Abandon", cause: error.message }))
      )
      const existing = created.run
      if (
        !created.created &&
        (existing.workflow !== workflow.name || existing.payload !== payloadText || existing.parentId !== state.runId)
      ) {
        return yield* Run.park(
          state,
          new JournalMismatch({
            workflowId: state.runId,
            stepKey: key,
            requested: key,
            reason: `starts the child run "${childId}", but that run exists with ${
              existing.workflow !== workflow.name
                ? `the workflow "${existing.workflow}"`
                : existing.payload !== payloadText
                ? "another payload (did the code that computes it change?)"
                : "another parent"
            }`
          })
        )
      }
    })
    if (previous === undefined) {
      yield* Run.checkFrontier(state, key)
      yield* Run.checkStop(state)
      seq = state.nextSeq++
      startedAt = yield* Clock.currentTimeMillis
      const started = startedAt
      // The fenced start marker comes first: a worker that lost its lease starts no child, and a
      // parent that crashes after the child's creation finds the child in its journal.
      yield* Run.childStart(
        state,
        Effect.gen(function*() {
          yield* Run.flush(state, [
            Run.entry({ key, seq, kind: "child", status: "started", attempts: 1, startedAt: started, meta })
          ], [{ key, attempt: 1, outcome: "running", error: null, startedAt: started, endedAt: null }])
          if (state.cancelRequested && state.phase === "body") yield* Run.stopBody(state, { _tag: "Cancel" })
          state.openChildren.set(key, childId)
          yield* Run.crashPoint(state, "before-step", key)
          yield* create
          yield* Run.crashPoint(state, "after-effect", key)
        })
      )
    } else {
      yield* Run.checkStop(state)
      seq = previous.seq
      startedAt = previous.startedAt
    }

    yield* Run.loadSignals(state)
    let outcome: Run.ChildOutcome | undefined
    let outcomeSeq = -1
    for (const signal of state.signals) {
      if (signal.name !== Run.childSignal || signal.seq < outcomeSeq) continue
      const decoded = yield* Effect.either(Codec.decode(Run.ChildOutcome, signal.payload))
      if (decoded._tag === "Right" && decoded.right.childId === childId) {
        outcome = decoded.right
        outcomeSeq = signal.seq
      }
    }
    if (outcome === undefined) {
      // after a crash between the start marker and the creation: the creation is idempotent
      if (previous !== undefined) yield* Run.childStart(state, create)
      yield* Run.awaitChildStarts(state)
      return yield* Run.halt(state, { _tag: "Suspend", status: "waiting", runnableAt: Run.wakeTime(state, null) })
    }

    const now = yield* Clock.currentTimeMillis
    const finished = (
      fields: { readonly status: "succeeded"; readonly output: string | null } | {
        readonly status: "failed"
        readonly error: string | null
        readonly message: string
      }
    ) => {
      state.openChildren.delete(key)
      Run.buffer(state, [
        Run.entry({
          key,
          seq,
          kind: "child",
          status: fields.status,
          attempts: 1,
          startedAt,
          completedAt: now,
          meta,
          ...(fields.status === "succeeded" ? { output: fields.output } : { error: fields.error })
        })
      ], [{
        key,
        attempt: 1,
        outcome: fields.status,
        error: fields.status === "failed" ? fields.message : null,
        startedAt,
        endedAt: now
      }])
    }
    if (outcome.status === "succeeded") {
      const value = yield* Run.decode(state, workflow.successSchema, outcome.output, "child output", key)
      finished({ status: "succeeded", output: outcome.output })
      return value
    }
    const runError = yield* Run.decodeRunError(outcome.error).pipe(
      Effect.catchAll((message) =>
        Run.park(
          state,
          new JournalDecodeError({ workflowId: state.runId, stepKey: key, message: `child run error: ${message}` })
        )
      )
    )
    const error: ErrorOf<W> | ChildWorkflowFailed = runError._tag === "Failure"
      ? yield* Run.decode(state, errorSchema, JSON.stringify(runError.error), "child error", key)
      : new ChildWorkflowFailed({
        workflowId: childId,
        workflow: workflow.name,
        status: outcome.status === "dead" ? "dead" : outcome.status === "cancelled" ? "cancelled" : "needs_attention",
        reason: runError._tag === "Cancelled" ? "the child run was cancelled" : runError.reason.message
      })
    finished({
      status: "failed",
      error: yield* Run.encode(state, errorSchema, error, `error of child "${key}"`, key),
      message: `child run ended ${outcome.status}: ${Codec.errorMessage(error)}`
    })
    return yield* Effect.fail(error)
  }).pipe(Tracing.withSpan("memento.child"))

/**
 * Lets in-flight runs keep an old code path while new runs take the new one: returns `true` (and
 * journals a marker) when the run reaches this point for the first time with this code, `true` on
 * replays that journaled the marker, and `false` on replays of runs that passed this point before
 * the patch existed.
 *
 * @since 0.1.0
 * @category versioning
 */
export const patched = (id: string): Effect.Effect<boolean, never, WorkflowContext> =>
  Effect.gen(function*() {
    const state = yield* WorkflowContext
    yield* validName(state, id)
    const key = Run.nextKey(state, `${id}#patch`)
    const previous = yield* Run.replay(state, key, "patch")
    if (previous !== undefined) return true
    if (state.unconsumed > 0 && (yield* Run.settle(state)) !== undefined) return false
    const now = yield* Clock.currentTimeMillis
    Run.buffer(state, [
      Run.entry({
        key,
        seq: state.nextSeq++,
        kind: "patch",
        status: "succeeded",
        attempts: 1,
        startedAt: now,
        completedAt: now
      })
    ])
    return true
  })
