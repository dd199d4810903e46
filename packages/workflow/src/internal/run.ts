import type { Clock, Fiber } from "effect"
import * as Context from "effect/Context"
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import type { Settings } from "../WorkflowConfig.js"
import { JournalDecodeError, JournalMismatch, ParkReason, PayloadTooLarge } from "../WorkflowError.js"
import type {
  AttemptRecord,
  CommitCreate,
  EntryKind,
  JournalEntry,
  RunStatus,
  RunTransition,
  SignalRecord
} from "../WorkflowStore.js"
import type { WorkflowStore } from "../WorkflowStore.js"
import * as Codec from "./codec.js"

/**
 * What a run's `error` column holds: the encoded workflow error, a cancellation, or why the run
 * was parked (with the workflow error that started the compensation, if any).
 */
export const RunError = Schema.Union(
  Schema.TaggedStruct("Failure", { error: Schema.Unknown }),
  Schema.TaggedStruct("Cancelled", {}),
  Schema.TaggedStruct("Parked", { reason: ParkReason, failure: Schema.optional(Schema.Unknown) })
)
export type RunError = typeof RunError.Type

export const encodeRunError = (error: RunError): string => JSON.stringify(Schema.encodeSync(RunError)(error))

export const decodeRunError = (text: string | null): Effect.Effect<RunError, string> =>
  text === null ? Effect.fail("the run has no error recorded") : Codec.decode(RunError, text)

/** Why the current phase of a run stopped before its effect finished. */
export type StopReason =
  | {
    readonly _tag: "Suspend"
    readonly status: Extract<RunStatus, "sleeping" | "waiting">
    readonly runnableAt: number | null
  }
  | { readonly _tag: "Park"; readonly reason: typeof ParkReason.Type }
  | { readonly _tag: "Cancel" }
  | { readonly _tag: "Timeout" }
  | {
    readonly _tag: "Abandon"
    readonly cause: string
    /** A fenced write found the lease gone (`LeaseLost`). */
    readonly leaseLost?: boolean | undefined
    /** A crash injected by the testing kit. */
    readonly injected?: boolean | undefined
  }

/** Where the testing kit may inject a crash. */
export type CrashPoint = "before-step" | "after-effect" | "after-journal"

/** Engine hooks, for the testing kit: `crashAt` returning true abandons the run like `kill -9`. */
export class Hooks extends Context.Reference<Hooks>()("@memento/workflow/internal/Hooks", {
  defaultValue: (): { readonly crashAt: (point: CrashPoint, key: string) => boolean } => ({ crashAt: () => false })
}) {}

export interface Compensation {
  readonly key: string
  readonly seq: number
  readonly effect: Effect.Effect<unknown, unknown>
}

/** The mutable state of one execution of one run by one worker. */
export interface RunState {
  readonly runId: string
  readonly workflowName: string
  readonly epoch: number
  readonly store: WorkflowStore["Type"]
  readonly settings: Settings
  readonly hooks: Hooks["Type"]
  /** The clock of the worker executing the run, read without an effect at each step (`now`). */
  readonly clock: Clock.Clock
  readonly journal: ReadonlyMap<string, JournalEntry>
  /** The run's deadline (creation time + the workflow's timeout), or null without a timeout. */
  readonly deadline: number | null
  readonly timeoutMs: number | null
  /** Child runs started and not yet awaited to the end: step key -> child run ID. */
  readonly openChildren: Map<string, string>
  /** Child starts in progress in concurrent branches: a suspension waits for them (fan-out). */
  readonly childStarts: Set<Deferred.Deferred<void>>
  signals: ReadonlyArray<SignalRecord>
  /** False when the journal load was skipped (a first execution): signals are read on demand. */
  signalsLoaded: boolean
  readonly consumed: Set<string>
  readonly consumedSignals: Set<string>
  readonly occurrences: Map<string, number>
  readonly compensations: Array<Compensation>
  readonly pendingEntries: Map<string, JournalEntry>
  readonly pendingAttempts: Map<string, AttemptRecord>
  nextSeq: number
  unconsumed: number
  /**
   * True once this execution began new work (past the end of the journal). Only then may the
   * deadline interrupt the body: a replay that ends without new work (a journaled failure being
   * compensated again after a crash) ends as it did the first time.
   */
  newWork: boolean
  cancelRequested: boolean
  /**
   * When (worker clock) the last request that extended the lease was sent: the claim, or a commit
   * that succeeded. Until `leaseConfirmedAt + leaseMs` the lease is certainly still held.
   */
  leaseConfirmedAt: number
  phase: "body" | "compensation"
  /** Why the current phase stopped (set once per phase by `halt`; the first reason wins). */
  stopReason: StopReason | undefined
  /** The fiber executing the current phase: `halt` interrupts it. */
  phaseFiber: Fiber.RuntimeFiber<unknown, unknown> | undefined
  /** Set while the run is not stored yet: its first commit creates it (see `withCreate`). */
  create: PendingCreate | undefined
  /** Told before a commit that releases the lease is sent (the worker's heartbeats expect it gone). */
  readonly releasing: (() => void) | undefined
}

/** The create of a run handed over before it was stored, waiting for the run's first commit. */
export interface PendingCreate {
  readonly commit: CommitCreate
  /** Told once: true when a commit stored the run; false when the execution ends without that. */
  readonly done: (stored: boolean) => void
  /** Runs once the run is stored, in the run's fiber (the `runsStarted` metric). */
  readonly onStored: Effect.Effect<void>
  /** True while a commit carrying the create is in flight: commits of concurrent branches wait. */
  sending: boolean
  /** What those commits wait on, made by the first of them (most runs have no concurrent commit). */
  sent: Deferred.Deferred<void> | undefined
}

/** The run a workflow body executes in. Provided by the engine; `Step` and `Workflow` read it. */
export class WorkflowContext extends Context.Tag("@memento/workflow/WorkflowContext")<WorkflowContext, RunState>() {}

export const makeState = (options: {
  readonly runId: string
  readonly workflowName: string
  readonly epoch: number
  readonly store: WorkflowStore["Type"]
  readonly settings: Settings
  readonly hooks: Hooks["Type"]
  readonly clock: Clock.Clock
  readonly entries: ReadonlyArray<JournalEntry>
  readonly signals: ReadonlyArray<SignalRecord>
  readonly signalsLoaded: boolean
  readonly deadline: number | null
  readonly timeoutMs: number | null
  readonly cancelRequested: boolean
  readonly leaseConfirmedAt: number
  readonly create?: Omit<PendingCreate, "sending" | "sent"> | undefined
  readonly releasing?: (() => void) | undefined
}): Effect.Effect<RunState> =>
  Effect.sync(() => {
    const journal = new Map(options.entries.map((entry) => [entry.key, entry]))
    const consumedSignals = new Set<string>()
    const openChildren = new Map<string, string>()
    let nextSeq = 1
    let unconsumed = 0
    for (const entry of options.entries) {
      nextSeq = Math.max(nextSeq, entry.seq + 1)
      if (entry.kind !== "compensation") unconsumed++
      const signalId = entry.kind === "signal" ? Codec.metaField(entry.meta, "signalId") : undefined
      if (typeof signalId === "string") consumedSignals.add(signalId)
      const childId = entry.kind === "child" && entry.status === "started"
        ? Codec.metaField(entry.meta, "childId")
        : undefined
      if (typeof childId === "string") openChildren.set(entry.key, childId)
    }
    return {
      runId: options.runId,
      workflowName: options.workflowName,
      epoch: options.epoch,
      store: options.store,
      settings: options.settings,
      hooks: options.hooks,
      clock: options.clock,
      journal,
      deadline: options.deadline,
      timeoutMs: options.timeoutMs,
      openChildren,
      childStarts: new Set(),
      signals: options.signals,
      signalsLoaded: options.signalsLoaded,
      consumed: new Set(),
      consumedSignals,
      occurrences: new Map(),
      compensations: [],
      pendingEntries: new Map(),
      pendingAttempts: new Map(),
      nextSeq,
      unconsumed,
      newWork: false,
      cancelRequested: options.cancelRequested,
      leaseConfirmedAt: options.leaseConfirmedAt,
      phase: "body",
      stopReason: undefined,
      phaseFiber: undefined,
      create: options.create === undefined ? undefined : { ...options.create, sending: false, sent: undefined },
      releasing: options.releasing
    }
  })

/** The current time by the run's clock (epoch ms). */
export const now = (state: RunState): number => state.clock.unsafeCurrentTimeMillis()

/**
 * Sends a commit (`send` gets the create it must carry, if any). While the run is not stored yet,
 * the first commit carries its create (`Commit.create`) and commits of concurrent branches wait
 * for it: once it succeeded the run is stored and they commit as usual. If it failed, the run
 * stops (the commit's caller halts it), and a commit still sent would carry the create again.
 */
export const withCreate = <A, E, R>(
  state: RunState,
  send: (create: CommitCreate | undefined) => Effect.Effect<A, E, R>
): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime((fiber) => {
    const pending = state.create
    if (pending === undefined) return send(undefined)
    if (pending.sending) {
      pending.sent ??= Deferred.unsafeMake<void>(fiber.id())
      return Effect.zipRight(Deferred.await(pending.sent), withCreate(state, send))
    }
    pending.sending = true
    return send(pending.commit).pipe(
      Effect.onExit((exit) =>
        Effect.suspend(() => {
          pending.sending = false
          const sent = pending.sent
          pending.sent = undefined
          const wake = sent === undefined ? Effect.void : Deferred.done(sent, Exit.void)
          if (exit._tag !== "Success" || state.create !== pending) return wake
          state.create = undefined
          pending.done(true)
          return Effect.zipRight(pending.onStored, wake)
        })
      )
    )
  })

/**
 * Retries an operation on the store per `schedule` while it fails with `StoreError`. The happy
 * path builds no schedule driver: the retry machinery is set up at the first failure, which then
 * goes through the schedule like any other (same delays as `Effect.retry`).
 */
export const retryStore =
  (schedule: Settings["storeRetry"]) =>
  <A, E extends { readonly _tag: string }, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.catchIf(effect, (error) => error._tag === "StoreError", (first) => {
      let replayFirst = true
      return Effect.retry(
        Effect.suspend(() => {
          if (!replayFirst) return effect
          replayFirst = false
          return Effect.fail(first)
        }),
        { schedule, while: (error) => error._tag === "StoreError" }
      )
    })

/** Stops the current phase of the run; the first reason wins. Never returns. */
export const halt = (state: RunState, reason: StopReason): Effect.Effect<never> =>
  Effect.withFiberRuntime((fiber) => {
    if (state.stopReason === undefined) {
      state.stopReason = reason
      state.phaseFiber?.unsafeInterruptAsFork(fiber.id())
    }
    return Effect.never
  })

export const park = (state: RunState, reason: typeof ParkReason.Type): Effect.Effect<never> =>
  halt(state, { _tag: "Park", reason })

/** Stops the run because the store failed or the lease is gone: this worker writes nothing more. */
export const abandon = (state: RunState, error: { readonly _tag: string; readonly message: string }) =>
  halt(state, { _tag: "Abandon", cause: error.message, leaseLost: error._tag === "LeaseLost" })

const crash = (state: RunState, point: CrashPoint, key: string): Effect.Effect<never> =>
  halt(state, { _tag: "Abandon", cause: `crash injected ${point} ${key}`, injected: true })

/** Abandons the run as if its process died (testing kit), when the hook says so. */
export const crashPoint = (state: RunState, point: CrashPoint, key: string): Effect.Effect<void> =>
  Effect.suspend(() => state.hooks.crashAt(point, key) ? crash(state, point, key) : Effect.void)

/** The key of the next occurrence of `name` in this run: `name`, `name#2`, `name#3`, ... */
export const nextKey = (state: RunState, name: string): string => {
  const n = (state.occurrences.get(name) ?? 0) + 1
  state.occurrences.set(name, n)
  return n === 1 ? name : `${name}#${n}`
}

/**
 * Looks `key` up in the journal and marks it replayed. A journaled entry of another kind means the
 * code changed under the run: the run is parked.
 */
export const replay = (state: RunState, key: string, kind: EntryKind): Effect.Effect<JournalEntry | undefined> =>
  Effect.suspend(() => {
    const entry = state.journal.get(key)
    if (entry === undefined) return Effect.succeed(undefined)
    if (!state.consumed.has(key)) {
      state.consumed.add(key)
      if (entry.kind !== "compensation") state.unconsumed--
    }
    if (entry.kind !== kind) {
      return park(
        state,
        new JournalMismatch({
          workflowId: state.runId,
          stepKey: key,
          requested: key,
          reason: `was journaled as a ${entry.kind} but the code now runs it as a ${kind}`
        })
      )
    }
    return Effect.succeed(entry)
  })

const firstUnconsumed = (state: RunState): JournalEntry | undefined => {
  let first: JournalEntry | undefined
  for (const entry of state.journal.values()) {
    if (entry.kind === "compensation" || state.consumed.has(entry.key)) continue
    if (first === undefined || entry.seq < first.seq) first = entry
  }
  return first
}

/**
 * Lets concurrent branches replay what they still have in the journal, then returns the first
 * journaled entry nothing replayed (undefined when the replay reached the end of the journal).
 */
export const settle = (state: RunState): Effect.Effect<JournalEntry | undefined> =>
  Effect.gen(function*() {
    let before = state.consumed.size
    let idle = 0
    while (state.unconsumed > 0 && idle < 3) {
      yield* Effect.yieldNow()
      idle = state.consumed.size === before ? idle + 1 : 0
      before = state.consumed.size
    }
    return state.unconsumed > 0 ? firstUnconsumed(state) : undefined
  })

/**
 * Called before new work (a key the journal does not have) and when the body ends. Journaled
 * entries still not replayed mean the code no longer asks for them: the run is parked, nothing
 * runs.
 */
export const checkFrontier = (state: RunState, requested: string | null): Effect.Effect<void> =>
  state.unconsumed <= 0 ?
    reachFrontier(state, requested) :
    Effect.flatMap(settle(state), (first) =>
      first === undefined ? reachFrontier(state, requested) : park(
        state,
        new JournalMismatch({
          workflowId: state.runId,
          stepKey: first.key,
          requested,
          reason: requested === null
            ? "is in the journal but the code finished without replaying it (removed or renamed?)"
            : "is in the journal but the code asked for new work before replaying it (renamed, removed or reordered?)"
        })
      ))

const reachFrontier = (state: RunState, requested: string | null): Effect.Effect<void> =>
  Effect.sync(() => {
    if (requested !== null) state.newWork = true
  })

/**
 * Stops the body for a cancel or a timeout. Concurrent branches first finish replaying what they
 * still have in the journal (and register its compensations), so that nothing journaled is left
 * uncompensated.
 */
export const stopBody = (state: RunState, reason: StopReason): Effect.Effect<never> =>
  Effect.gen(function*() {
    for (let i = 0; i < 3; i++) yield* Effect.yieldNow()
    yield* settle(state)
    return yield* halt(state, reason)
  })

/**
 * What every journaled operation does before new work (or a replayed wait): stops the body at this
 * step boundary when an operator asked to cancel the run, or else once its deadline passed.
 */
export const checkStop = (state: RunState): Effect.Effect<void> =>
  Effect.suspend(() =>
    state.phase !== "body"
      ? Effect.void
      : state.cancelRequested
      ? stopBody(state, { _tag: "Cancel" })
      : state.deadline !== null && now(state) >= state.deadline
      ? stopBody(state, { _tag: "Timeout" })
      : Effect.void
  )

/** When a run that waits next may be claimed: the wait's own wake time or the deadline, whichever is first. */
export const wakeTime = (state: RunState, at: number | null): number | null =>
  state.deadline === null ? at : at === null ? state.deadline : Math.min(at, state.deadline)

/**
 * Before a `Workflow.child` suspends the run: lets concurrent branches reach their own child starts
 * and waits until those are done, so children started side by side (`Effect.all` with concurrency)
 * all start in this execution instead of one per wake-up.
 */
export const awaitChildStarts = (state: RunState): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (let i = 0; i < 3; i++) yield* Effect.yieldNow()
    while (state.childStarts.size > 0) {
      yield* Effect.forEach([...state.childStarts], Deferred.await, { discard: true })
      for (let i = 0; i < 3; i++) yield* Effect.yieldNow()
    }
  })

/**
 * Runs a child start (its journal marker and creation), registered so that a concurrent branch
 * that suspends waits for it.
 */
export const childStart = <A>(state: RunState, start: Effect.Effect<A>): Effect.Effect<A> =>
  Effect.flatMap(Deferred.make<void>(), (done) =>
    Effect.suspend(() => {
      state.childStarts.add(done)
      return Effect.ensuring(
        start,
        Effect.suspend(() => {
          state.childStarts.delete(done)
          return Deferred.succeed(done, undefined)
        })
      )
    }))

/** The name of the signal a finished child run delivers to its parent (with its run ID in the payload). */
export const childSignal = "@memento/child-finished"

/**
 * What a child run tells its parent when it finishes or is parked: its status, its encoded output
 * (JSON text, with the child's success Schema) and its run error (`RunError` JSON text).
 */
export const ChildOutcome = Schema.Struct({
  childId: Schema.String,
  workflow: Schema.String,
  status: Schema.String,
  output: Schema.NullOr(Schema.String),
  error: Schema.NullOr(Schema.String)
})
export type ChildOutcome = typeof ChildOutcome.Type

/** Buffers journal rows; they reach the store with the next commit (the next step's start). */
export const buffer = (
  state: RunState,
  entries: ReadonlyArray<JournalEntry>,
  attempts: ReadonlyArray<AttemptRecord> = []
): void => {
  for (const entry of entries) state.pendingEntries.set(entry.key, entry)
  for (const attempt of attempts) state.pendingAttempts.set(`${attempt.key}\u0000${attempt.attempt}`, attempt)
}

const takePending = (state: RunState) => {
  const entries = [...state.pendingEntries.values()]
  const attempts = [...state.pendingAttempts.values()]
  state.pendingEntries.clear()
  state.pendingAttempts.clear()
  return { entries, attempts }
}

/**
 * Writes the buffered rows plus `entries`/`attempts` in one fenced commit, with the run's status
 * change if `transition` is given (then even with no rows). A lost lease or a store that keeps
 * failing abandons the run: nothing more is written by this worker.
 */
export const flush = (
  state: RunState,
  entries: ReadonlyArray<JournalEntry> = [],
  attempts: ReadonlyArray<AttemptRecord> = [],
  options?: { readonly evenIfEmpty?: boolean | undefined; readonly transition?: RunTransition | undefined }
): Effect.Effect<void> =>
  Effect.suspend(() => {
    buffer(state, entries, attempts)
    const pending = takePending(state)
    const transition = options?.transition
    if (
      pending.entries.length === 0 && pending.attempts.length === 0 && options?.evenIfEmpty !== true &&
      transition === undefined
    ) {
      return Effect.void
    }
    if (transition?.release === true) state.releasing?.()
    const sentAt = now(state)
    const commit = withCreate(state, (create) =>
      state.store.commit({
        runId: state.runId,
        epoch: state.epoch,
        leaseMs: state.settings.leaseMs,
        entries: pending.entries,
        attempts: pending.attempts,
        transition,
        create
      }).pipe(retryStore(state.settings.storeRetry)))
    return Effect.matchEffect(commit, {
      onFailure: (error) => abandon(state, error),
      onSuccess: (result) => {
        if (result.cancelRequested) state.cancelRequested = true
        state.leaseConfirmedAt = Math.max(state.leaseConfirmedAt, sentAt)
        return afterJournal(state, pending.entries)
      }
    })
  })

/**
 * Before a step that journals no start marker (`Step.transaction`): when the lease may have expired
 * since it was last confirmed (the worker was paused or starved longer than a lease), a fenced
 * commit of the buffered rows confirms it first, and a lost lease stops the run before the step's
 * body starts. Free on the happy path: commits confirm the lease at every step.
 */
export const confirmLease = (state: RunState): Effect.Effect<void> =>
  Effect.suspend(() =>
    now(state) - state.leaseConfirmedAt < state.settings.leaseMs
      ? Effect.void
      : flush(state, [], [], { evenIfEmpty: true })
  )

export const afterJournal = (state: RunState, entries: ReadonlyArray<JournalEntry>): Effect.Effect<void> =>
  Effect.suspend(() => {
    for (const entry of entries) {
      if (entry.status !== "started" && state.hooks.crashAt("after-journal", entry.key)) {
        return crash(state, "after-journal", entry.key)
      }
    }
    return Effect.void
  })

/** Encodes a value to JSON text with its Schema and checks the size limit, parking the run otherwise. */
export const encode = <A, I>(
  state: RunState,
  schema: Schema.Schema<A, I>,
  value: A,
  what: string,
  stepKey: string
): Effect.Effect<string | null> =>
  Codec.encode(schema, value).pipe(
    Effect.catchAll((error) =>
      park(
        state,
        new JournalDecodeError({
          workflowId: state.runId,
          stepKey,
          message: `${what} does not encode: ${ParseResult.isParseError(error) ? error.message : String(error)}`
        })
      )
    ),
    Effect.flatMap((text) => {
      const bytes = Codec.byteLength(text)
      return bytes > state.settings.maxValueBytes
        ? park(
          state,
          new PayloadTooLarge({ workflowId: state.runId, what, bytes, limit: state.settings.maxValueBytes })
        )
        : Effect.succeed(text)
    })
  )

/** Decodes journaled JSON text with its Schema, parking the run when it no longer decodes. */
export const decode = <A, I>(
  state: RunState,
  schema: Schema.Schema<A, I>,
  text: string | null,
  what: string,
  stepKey: string
): Effect.Effect<A> =>
  Codec.decode(schema, text).pipe(
    Effect.catchAll((error) =>
      park(
        state,
        new JournalDecodeError({
          workflowId: state.runId,
          stepKey,
          message: `journaled ${what} no longer decodes: ${error}`
        })
      )
    )
  )

export const entry = (
  fields: Pick<JournalEntry, "key" | "seq" | "kind" | "status" | "attempts" | "startedAt"> & Partial<JournalEntry>
): JournalEntry => ({
  output: null,
  error: null,
  meta: null,
  completedAt: null,
  ...fields
})

/** The run's signals, read from the store when the journal load was skipped. */
export const loadSignals = (state: RunState): Effect.Effect<void> =>
  state.signalsLoaded ? Effect.void : state.create !== undefined
    // a run not stored yet has no signals (a signal to an unknown run ID is refused); one that
    // arrives after its create committed wakes the run when it waits (`signalSeenSeq`)
    ? Effect.void
    : state.store.load(state.runId).pipe(
      retryStore(state.settings.storeRetry),
      Effect.matchEffect({
        onFailure: (error) =>
          error._tag === "JournalDecodeError"
            ? park(state, error)
            : halt(state, { _tag: "Abandon", cause: error.message }),
        onSuccess: (snapshot) =>
          Effect.sync(() => {
            state.signals = snapshot.signals
            state.signalsLoaded = true
          })
      })
    )
