/**
 * Workflows: named, typed, durable Effect programs. `Workflow.make` declares one (its name is
 * stored with every run, its Schemas encode what is journaled); `implement` gives the layer a
 * `Worker` needs to execute it. Inside a body, `Workflow.sleep`, `Workflow.awaitSignal` and
 * `Workflow.patched` are journaled like steps.
 *
 * @since 0.1.0
 */
import type { Schema as S } from "effect"
import { Clock, Context, Duration, Effect, Layer, Schema } from "effect"
import * as Codec from "./internal/codec.js"
import * as Run from "./internal/run.js"
import { WorkflowContext } from "./internal/run.js"
import { JournalDecodeError, SignalTimeout, StepDefect } from "./WorkflowError.js"

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
 * Declares a workflow. `name` is stored with every run and must stay stable; `idempotencyKey`
 * maps a payload to its workflow ID (starting the same ID twice returns the existing run).
 * `success` defaults to `Schema.Void`, `error` to `Schema.Never`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <
  const Name extends string,
  Payload extends S.Schema.AnyNoContext,
  Success extends S.Schema.AnyNoContext = typeof Schema.Void,
  Error extends S.Schema.All = typeof Schema.Never
>(options: {
  readonly name: Name
  readonly payload: Payload
  readonly success?: Success | undefined
  readonly error?: Error | undefined
  readonly idempotencyKey?: ((payload: Payload["Type"]) => string) | undefined
}): Workflow<Name, Payload, Success, Error> => {
  const tag = Context.GenericTag<Handler<Name>, HandlerService>(`@memento/workflow/Handler/${options.name}`)
  const self: Workflow<Name, Payload, Success, Error> = {
    name: options.name,
    payloadSchema: options.payload,
    successSchema: (options.success ?? Schema.Void) as Success,
    errorSchema: (options.error ?? Schema.Never) as Error,
    idempotencyKey: options.idempotencyKey,
    tag,
    implement: <R>(body: (payload: Payload["Type"]) => Effect.Effect<Success["Type"], Error["Type"], R>) =>
      Layer.effect(
        tag,
        Effect.map(Effect.context<Exclude<R, WorkflowContext>>(), (context): HandlerService => ({
          workflow: self,
          execute: (payload) =>
            Effect.provide(body(payload as Payload["Type"]), context) as Effect.Effect<unknown, unknown, WorkflowContext>
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
export const workflowId: Effect.Effect<string, never, WorkflowContext> = Effect.map(WorkflowContext, (state) => state.runId)

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
    if (previous === undefined) {
      yield* Run.checkFrontier(state, key)
      yield* Run.checkCancel(state)
      wakeAt = now + Duration.toMillis(duration)
      seq = state.nextSeq++
      startedAt = now
      Run.buffer(state, [
        Run.entry({ key, seq, kind: "sleep", status: "started", attempts: 1, startedAt, meta: JSON.stringify({ wakeAt }) })
      ])
    } else {
      const journaled = Codec.metaField(previous.meta, "wakeAt")
      if (typeof journaled !== "number") {
        return yield* Run.park(
          state,
          new JournalDecodeError({ workflowId: state.runId, stepKey: key, message: "journaled sleep has no wake time" })
        )
      }
      yield* Run.checkCancel(state)
      wakeAt = journaled
      seq = previous.seq
      startedAt = previous.startedAt
    }
    const remaining = wakeAt - now
    if (remaining > (previous === undefined ? 0 : replayToleranceMs)) {
      return yield* Run.halt(state, { _tag: "Suspend", status: "sleeping", runnableAt: wakeAt })
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
  }).pipe(Effect.withSpan("memento.sleep", { attributes: { "step.key": name } }))

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
    if (previous === undefined) {
      yield* Run.checkFrontier(state, key)
      yield* Run.checkCancel(state)
      deadline = options?.timeout === undefined ? null : now + Duration.toMillis(options.timeout)
      seq = state.nextSeq++
      startedAt = now
    } else {
      yield* Run.checkCancel(state)
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
      Run.buffer(state, [Run.entry({ key, seq, kind: "signal", status: "started", attempts: 1, startedAt, meta: meta({}) })])
    }
    return yield* Run.halt(state, { _tag: "Suspend", status: "waiting", runnableAt: deadline })
  }).pipe(Effect.withSpan("memento.awaitSignal", { attributes: { "step.key": name } }))

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
      Run.entry({ key, seq: state.nextSeq++, kind: "patch", status: "succeeded", attempts: 1, startedAt: now, completedAt: now })
    ])
    return true
  })
