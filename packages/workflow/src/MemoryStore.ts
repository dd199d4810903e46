/**
 * An in-memory `WorkflowStore` for tests and single-process experiments. It follows the same rules
 * as the SQL store (fenced commits, leases, claiming, signals) and passes the same conformance
 * suite; its clock is Effect's `Clock`, so `TestClock` drives leases and wake-ups. Nothing survives
 * the process, and `transaction` cannot roll anything back: it runs the effect, then commits.
 *
 * @since 0.1.0
 */
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Order from "effect/Order"
import * as PubSub from "effect/PubSub"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import { InvalidRunState, LeaseLost, RunNotFound, StoreError } from "./WorkflowError.js"
import type {
  AlertRecord,
  ArchivedAttempt,
  ArchivedEntry,
  AttemptRecord,
  ClaimRequest,
  Commit,
  JournalEntry,
  ListFilter,
  NewRun,
  RunCount,
  RunRecord,
  RunSnapshot,
  RunStatus,
  SignalRecord,
  StoreEvent
} from "./WorkflowStore.js"
import { alertStatuses, parkedStatuses, terminalStatuses, WorkflowStore } from "./WorkflowStore.js"

interface RunState {
  run: RunRecord
  readonly entries: Map<string, JournalEntry>
  readonly attempts: Map<string, AttemptRecord>
  readonly signals: Map<string, SignalRecord>
  readonly archivedEntries: Array<ArchivedEntry>
  readonly archivedAttempts: Array<ArchivedAttempt>
}

interface AlertState {
  alert: AlertRecord
  leaseExpiresAt: number | null
}

const claimableStatuses: ReadonlyArray<RunStatus> = ["pending", "running", "sleeping", "waiting", "compensating"]
const idleStatuses: ReadonlyArray<RunStatus> = ["pending", "sleeping", "waiting"]

const isEnded = (status: RunStatus): boolean => terminalStatuses.includes(status) || parkedStatuses.includes(status)

const claimOrder: Order.Order<RunRecord> = Order.combineAll([
  Order.mapInput(Order.number, (run: RunRecord) => run.runnableAt ?? 0),
  Order.mapInput(Order.number, (run: RunRecord) => run.createdAt),
  Order.mapInput(Order.string, (run: RunRecord) => run.id)
])

const oldestFirst: Order.Order<RunRecord> = Order.combine(
  Order.mapInput(Order.number, (run: RunRecord) => run.createdAt),
  Order.mapInput(Order.string, (run: RunRecord) => run.id)
)

const alertOrder: Order.Order<AlertRecord> = Order.combine(
  Order.mapInput(Order.number, (alert: AlertRecord) => alert.createdAt),
  Order.mapInput(Order.string, (alert: AlertRecord) => alert.id)
)

const countOrder: Order.Order<RunCount> = Order.combine(
  Order.mapInput(Order.string, (count: RunCount) => count.workflow),
  Order.mapInput(Order.string, (count: RunCount) => count.status)
)

const newestFirst: Order.Order<RunRecord> = Order.reverse(Order.combine(
  Order.mapInput(Order.number, (run: RunRecord) => run.createdAt),
  Order.mapInput(Order.string, (run: RunRecord) => run.id)
))

const Cursor = Schema.compose(Schema.StringFromBase64Url, Schema.parseJson(Schema.Tuple(Schema.Number, Schema.String)))

const attemptKey = (attempt: AttemptRecord): string => `${attempt.key}\u0000${attempt.attempt}`

const bySeq = <A extends { readonly seq: number }>(values: Iterable<A>): Array<A> =>
  Array.from(values).sort((a, b) => a.seq - b.seq)

const snapshot = (state: RunState): RunSnapshot => ({
  run: state.run,
  entries: bySeq(state.entries.values()),
  signals: bySeq(state.signals.values())
})

/**
 * Builds an empty in-memory store. Every operation runs under one lock and reads "now" from
 * Effect's `Clock`; `events` is backed by a `PubSub`, so a subscriber sees what is published after
 * it subscribed.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make: Effect.Effect<WorkflowStore["Type"]> = Effect.gen(function*() {
  const runs = new Map<string, RunState>()
  const lock = yield* Effect.makeSemaphore(1)
  const pubsub = yield* PubSub.unbounded<StoreEvent>()
  const alerts = new Map<string, AlertState>()
  const schedules = new Map<string, number>()
  let signalSeq = 0

  const atomically = <A, E>(f: (now: number) => Effect.Effect<A, E>): Effect.Effect<A, E> =>
    lock.withPermits(1)(Effect.flatMap(Clock.currentTimeMillis, f))

  const publish = (events: ReadonlyArray<StoreEvent>) => PubSub.publishAll(pubsub, events)
  const runnableChanged = (run: RunRecord): StoreEvent => ({ _tag: "RunnableChanged", workflow: run.workflow })

  const find = (runId: string): Effect.Effect<RunState, RunNotFound> => {
    const state = runs.get(runId)
    return state === undefined ? Effect.fail(new RunNotFound({ workflowId: runId })) : Effect.succeed(state)
  }

  const update = (state: RunState, patch: Partial<RunRecord>): RunRecord => {
    state.run = { ...state.run, ...patch }
    return state.run
  }

  const leased = (run: RunRecord, epoch: number, now: number): boolean =>
    run.epoch === epoch && run.leaseOwner !== null && run.leaseExpiresAt !== null && run.leaseExpiresAt > now

  const insert = (input: NewRun, now: number): RunRecord => {
    const run: RunRecord = {
      id: input.id,
      workflow: input.workflow,
      status: input.claim === undefined ? "pending" : "running",
      payload: input.payload,
      output: null,
      error: null,
      epoch: input.claim === undefined ? 0 : 1,
      leaseOwner: input.claim?.workerId ?? null,
      leaseExpiresAt: input.claim === undefined ? null : now + input.claim.leaseMs,
      runnableAt: now,
      cancelRequested: false,
      recoveries: 0,
      parentId: input.parentId ?? null,
      createdAt: now,
      updatedAt: now,
      completedAt: null
    }
    runs.set(run.id, {
      run,
      entries: new Map(),
      attempts: new Map(),
      signals: new Map(),
      archivedEntries: [],
      archivedAttempts: []
    })
    return run
  }

  const create = (input: NewRun) =>
    atomically((now) => {
      const existing = runs.get(input.id)
      if (existing !== undefined) return Effect.succeed({ run: existing.run, created: false })
      const run = insert(input, now)
      return Effect.as(input.claim === undefined ? publish([runnableChanged(run)]) : Effect.void, {
        run,
        created: true
      })
    })

  const claim = (request: ClaimRequest) =>
    atomically((now) => {
      const claimable = Array.from(runs.values()).filter(({ run }) =>
        request.workflows.includes(run.workflow) &&
        claimableStatuses.includes(run.status) &&
        run.runnableAt !== null && run.runnableAt <= now &&
        (run.leaseExpiresAt === null || run.leaseExpiresAt <= now)
      ).sort((a, b) => claimOrder(a.run, b.run)).slice(0, Math.max(0, request.limit))
      return Effect.succeed(claimable.map((state) =>
        update(state, {
          epoch: state.run.epoch + 1,
          leaseOwner: request.workerId,
          leaseExpiresAt: now + request.leaseMs,
          recoveries: state.run.leaseExpiresAt === null ? state.run.recoveries : state.run.recoveries + 1,
          status: idleStatuses.includes(state.run.status) ? "running" : state.run.status,
          updatedAt: now
        })
      ))
    })

  const heartbeat: WorkflowStore["Type"]["heartbeat"] = (request) =>
    atomically((now) =>
      Effect.succeed(request.runs.flatMap(({ epoch, id }) => {
        const state = runs.get(id)
        if (state === undefined || state.run.leaseOwner !== request.workerId || !leased(state.run, epoch, now)) {
          return []
        }
        update(state, { leaseExpiresAt: now + request.leaseMs })
        return [id]
      }))
    )

  const release = (runId: string, epoch: number) =>
    atomically(() => {
      const state = runs.get(runId)
      if (state === undefined || state.run.epoch !== epoch || state.run.leaseOwner === null) return Effect.void
      const run = update(state, { leaseOwner: null, leaseExpiresAt: null })
      return Effect.asVoid(publish([runnableChanged(run)]))
    })

  const load = (runId: string) => atomically(() => Effect.map(find(runId), snapshot))

  /** Stores a signal unless its ID was seen; returns the event waking the target, if it waits. */
  const deliver = (
    state: RunState,
    signal: { readonly name: string; readonly signalId: string; readonly payload: string },
    now: number
  ): { readonly duplicate: boolean; readonly events: ReadonlyArray<StoreEvent> } => {
    if (state.signals.has(signal.signalId)) return { duplicate: true, events: [] }
    signalSeq += 1
    state.signals.set(signal.signalId, {
      name: signal.name,
      signalId: signal.signalId,
      payload: signal.payload,
      seq: signalSeq,
      receivedAt: now
    })
    if (state.run.status !== "waiting") return { duplicate: false, events: [] }
    const run = update(state, { runnableAt: now, updatedAt: now })
    return { duplicate: false, events: [runnableChanged(run)] }
  }

  const commit = (c: Commit) =>
    atomically((now) => {
      if (c.create !== undefined) {
        if (runs.has(c.runId) || c.epoch !== 1) {
          return Effect.fail(new LeaseLost({ workflowId: c.runId, epoch: c.epoch }))
        }
        const { payload, workerId, workflow } = c.create
        insert({ id: c.runId, workflow, payload, claim: { workerId, leaseMs: c.leaseMs } }, now)
      }
      const state = runs.get(c.runId)
      if (state === undefined || !leased(state.run, c.epoch, now)) {
        return Effect.fail(new LeaseLost({ workflowId: c.runId, epoch: c.epoch }))
      }
      for (const entry of c.entries) state.entries.set(entry.key, entry)
      for (const attempt of c.attempts) state.attempts.set(attemptKey(attempt), attempt)
      const recoveries = c.entries.some((entry) => entry.status !== "started") ? 0 : state.run.recoveries
      const t = c.transition
      if (t === undefined) {
        const run = update(state, { recoveries, leaseExpiresAt: now + c.leaseMs, updatedAt: now })
        return Effect.succeed({ cancelRequested: run.cancelRequested })
      }
      const seen = t.signalSeenSeq
      const signalled = seen !== undefined && Array.from(state.signals.values()).some((signal) => signal.seq > seen)
      const ended = isEnded(t.status)
      const run = update(state, {
        status: t.status,
        runnableAt: signalled ? now : t.runnableAt,
        output: t.output === undefined ? state.run.output : t.output,
        error: t.error === undefined ? state.run.error : t.error,
        completedAt: ended ? now : null,
        recoveries,
        leaseOwner: t.release ? null : state.run.leaseOwner,
        leaseExpiresAt: t.release ? null : now + c.leaseMs,
        updatedAt: now
      })
      const events: Array<StoreEvent> = []
      if (ended) events.push({ _tag: "RunFinished", runId: run.id })
      if (t.release && run.runnableAt !== null) events.push(runnableChanged(run))
      if (alertStatuses.includes(t.status)) {
        const id = `${run.id}/${run.epoch}/${t.status}`
        if (!alerts.has(id)) {
          alerts.set(id, {
            alert: {
              id,
              runId: run.id,
              workflow: run.workflow,
              status: t.status,
              error: run.error,
              createdAt: now,
              attempts: 0,
              deliveredAt: null
            },
            leaseExpiresAt: null
          })
        }
      }
      if (t.signal !== undefined) {
        const target = runs.get(t.signal.runId)
        if (target !== undefined) events.push(...deliver(target, t.signal, now).events)
      }
      return Effect.as(publish(events), { cancelRequested: run.cancelRequested })
    })

  const transaction: WorkflowStore["Type"]["transaction"] = (effect, f) =>
    Effect.flatMap(effect, (a) => Effect.map(commit(f(a)), (result) => [a, result] as const))

  const signal: WorkflowStore["Type"]["signal"] = ({ name, payload, runId, signalId }) =>
    atomically((now) =>
      Effect.flatMap(find(runId), (state) => {
        const { duplicate, events } = deliver(state, { name, signalId, payload }, now)
        return Effect.as(publish(events), { duplicate })
      })
    )

  const requestCancel = (runId: string) =>
    atomically((now) =>
      Effect.flatMap(find(runId), (state) => {
        if (isEnded(state.run.status)) return Effect.succeed(state.run)
        const wake = idleStatuses.includes(state.run.status)
        const run = update(state, {
          cancelRequested: true,
          runnableAt: wake ? now : state.run.runnableAt,
          updatedAt: now
        })
        return Effect.as(publish(wake ? [runnableChanged(run)] : []), run)
      })
    )

  const resume = (runId: string) =>
    atomically((now) =>
      Effect.flatMap(find(runId), (state): Effect.Effect<RunRecord, InvalidRunState> => {
        if (!parkedStatuses.includes(state.run.status)) {
          return Effect.fail(new InvalidRunState({ workflowId: runId, status: state.run.status, operation: "resume" }))
        }
        const run = update(state, {
          status: "pending",
          runnableAt: now,
          recoveries: 0,
          leaseOwner: null,
          leaseExpiresAt: null,
          completedAt: null,
          updatedAt: now
        })
        return Effect.as(publish([runnableChanged(run)]), run)
      })
    )

  const get = (runId: string) => atomically(() => Effect.succeed(Option.fromNullable(runs.get(runId)?.run)))

  const list = (filter: ListFilter) =>
    atomically(() =>
      Effect.gen(function*() {
        const after = filter.cursor === undefined ? undefined : yield* Schema.decode(Cursor)(filter.cursor).pipe(
          Effect.mapError(() => new StoreError({ operation: "list", message: `invalid cursor "${filter.cursor}"` }))
        )
        const statuses = filter.status === undefined
          ? undefined
          : typeof filter.status === "string"
          ? [filter.status]
          : filter.status
        const limit = Math.min(Math.max(Math.floor(filter.limit ?? 50), 1), 1000)
        const matching = Array.from(runs.values(), (state) => state.run).filter((run) =>
          (statuses === undefined || statuses.includes(run.status)) &&
          (filter.workflow === undefined || run.workflow === filter.workflow) &&
          (filter.parentId === undefined || run.parentId === filter.parentId) &&
          (filter.createdAfter === undefined || run.createdAt >= filter.createdAfter) &&
          (filter.createdBefore === undefined || run.createdAt < filter.createdBefore) &&
          (after === undefined || run.createdAt < after[0] || (run.createdAt === after[0] && run.id < after[1]))
        ).sort(newestFirst)
        const page = matching.slice(0, limit)
        const last = page[page.length - 1]
        const nextCursor = matching.length > limit && last !== undefined
          ? yield* Schema.encode(Cursor)([last.createdAt, last.id]).pipe(Effect.orDie)
          : null
        return { runs: page, nextCursor }
      })
    )

  const inspect = (runId: string) =>
    atomically(() =>
      Effect.map(find(runId), (state) => {
        const entrySeq = (key: string) => state.entries.get(key)?.seq ?? Number.MAX_SAFE_INTEGER
        const attempts = Array.from(state.attempts.values()).sort((a, b) =>
          entrySeq(a.key) - entrySeq(b.key) || (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) || a.attempt - b.attempt
        )
        const archivedSeq = (generation: number, key: string) =>
          state.archivedEntries.find((entry) => entry.generation === generation && entry.key === key)?.seq ??
            Number.MAX_SAFE_INTEGER
        const archivedEntries = [...state.archivedEntries].sort((a, b) => a.generation - b.generation || a.seq - b.seq)
        const archivedAttempts = [...state.archivedAttempts].sort((a, b) =>
          a.generation - b.generation ||
          archivedSeq(a.generation, a.key) - archivedSeq(b.generation, b.key) ||
          (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) ||
          a.attempt - b.attempt
        )
        const children = Array.from(runs.values(), (child) => child.run)
          .filter((child) => child.parentId === runId)
          .sort(oldestFirst)
        return { ...snapshot(state), attempts, archivedEntries, archivedAttempts, children }
      })
    )

  const retry: WorkflowStore["Type"]["retry"] = ({ archiveKeys, from, runId }) =>
    atomically((now) =>
      Effect.flatMap(find(runId), (state): Effect.Effect<RunRecord, InvalidRunState> => {
        if (!from.includes(state.run.status)) {
          return Effect.fail(new InvalidRunState({ workflowId: runId, status: state.run.status, operation: "retry" }))
        }
        const generation = Math.max(
          0,
          ...state.archivedEntries.map((entry) => entry.generation),
          ...state.archivedAttempts.map((attempt) => attempt.generation)
        ) + 1
        const keys = new Set(archiveKeys)
        for (const key of keys) {
          const entry = state.entries.get(key)
          if (entry === undefined) continue
          state.entries.delete(key)
          state.archivedEntries.push({ ...entry, generation, archivedAt: now })
        }
        for (const [id, attempt] of state.attempts) {
          if (!keys.has(attempt.key)) continue
          state.attempts.delete(id)
          state.archivedAttempts.push({ ...attempt, generation })
        }
        const run = update(state, {
          status: "pending",
          runnableAt: now,
          output: null,
          error: null,
          completedAt: null,
          leaseOwner: null,
          leaseExpiresAt: null,
          cancelRequested: false,
          recoveries: 0,
          updatedAt: now
        })
        return Effect.as(publish([runnableChanged(run)]), run)
      })
    )

  const purge: WorkflowStore["Type"]["purge"] = ({ completedBefore, limit, statuses }) =>
    atomically(() => {
      const purgeable = statuses.filter((status) => terminalStatuses.includes(status))
      const victims = Array.from(runs.values(), (state) => state.run).filter((run) =>
        purgeable.includes(run.status) && run.completedAt !== null && run.completedAt < completedBefore
      ).sort((a, b) => (a.completedAt ?? 0) - (b.completedAt ?? 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        .slice(0, Math.max(0, Math.floor(limit)))
      for (const run of victims) {
        runs.delete(run.id)
        for (const [id, { alert }] of alerts) if (alert.runId === run.id) alerts.delete(id)
      }
      return Effect.succeed(victims.length)
    })

  const stats: WorkflowStore["Type"]["stats"] = atomically(() => {
    const counts = new Map<string, { workflow: string; status: RunStatus; count: number }>()
    for (const { run } of runs.values()) {
      const key = `${run.workflow}\u0000${run.status}`
      const count = counts.get(key)
      if (count === undefined) counts.set(key, { workflow: run.workflow, status: run.status, count: 1 })
      else count.count += 1
    }
    return Effect.succeed(Array.from(counts.values()).sort(countOrder))
  })

  const claimAlerts: WorkflowStore["Type"]["claimAlerts"] = ({ leaseMs, limit }) =>
    atomically((now) =>
      Effect.succeed(
        Array.from(alerts.values())
          .filter((state) =>
            state.alert.deliveredAt === null && (state.leaseExpiresAt === null || state.leaseExpiresAt <= now)
          )
          .sort((a, b) => alertOrder(a.alert, b.alert))
          .slice(0, Math.max(0, Math.floor(limit)))
          .map((state) => {
            state.leaseExpiresAt = now + leaseMs
            state.alert = { ...state.alert, attempts: state.alert.attempts + 1 }
            return state.alert
          })
      )
    )

  const completeAlert: WorkflowStore["Type"]["completeAlert"] = (id) =>
    atomically((now) => {
      const state = alerts.get(id)
      if (state !== undefined && state.alert.deliveredAt === null) {
        state.alert = { ...state.alert, deliveredAt: now }
        state.leaseExpiresAt = null
      }
      return Effect.void
    })

  const alertsOf: WorkflowStore["Type"]["alerts"] = (runId) =>
    atomically(() =>
      Effect.succeed(
        Array.from(alerts.values(), (state) => state.alert).filter((alert) => alert.runId === runId).sort(alertOrder)
      )
    )

  const scheduleCursor: WorkflowStore["Type"]["scheduleCursor"] = (name) =>
    atomically(() => Effect.succeed(Option.fromNullable(schedules.get(name))))

  const advanceSchedule: WorkflowStore["Type"]["advanceSchedule"] = (name, tick) =>
    atomically(() => {
      schedules.set(name, Math.max(schedules.get(name) ?? tick, tick))
      return Effect.void
    })

  return WorkflowStore.of({
    create,
    claim,
    heartbeat,
    release,
    load,
    commit,
    transaction,
    signal,
    requestCancel,
    resume,
    get,
    list,
    inspect,
    retry,
    purge,
    stats,
    claimAlerts,
    completeAlert,
    alerts: alertsOf,
    scheduleCursor,
    advanceSchedule,
    events: Stream.fromPubSub(pubsub)
  })
})

/**
 * A `WorkflowStore` held in memory, empty when the layer is built.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<WorkflowStore> = Layer.effect(WorkflowStore, make)
