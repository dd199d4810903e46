/**
 * Workers claim runs of the workflows registered in them and execute them: bounded concurrency,
 * leases kept alive by heartbeats, sleeping and waiting runs released so they hold no slot, and a
 * graceful shutdown that lets running runs finish (or releases their leases) when the layer's scope
 * closes — `NodeRuntime.runMain` closes it on SIGTERM.
 *
 * @since 0.1.0
 */
import type { Fiber } from "effect"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as ExecutionStrategy from "effect/ExecutionStrategy"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Queue from "effect/Queue"
import * as Random from "effect/Random"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import { hostname } from "node:os"
import * as Engine from "./internal/engine.js"
import * as Local from "./internal/local.js"
import * as Retention from "./internal/retention.js"
import { Hooks } from "./internal/run.js"
import * as Metrics from "./Metrics.js"
import type * as Workflow from "./Workflow.js"
import type { PeriodicPurgeOptions } from "./WorkflowClient.js"
import { WorkflowConfig } from "./WorkflowConfig.js"
import type { CommitCreate, RunRecord } from "./WorkflowStore.js"
import { WorkflowStore } from "./WorkflowStore.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<W extends ReadonlyArray<Workflow.Any>> {
  /** The workflows this worker executes; it never claims runs of other workflows. */
  readonly workflows: W
  /** Runs executed at once. Default 10. */
  readonly concurrency?: number | undefined
  /** Identifies the worker in leases. Default: host name, process ID and a random suffix. */
  readonly workerId?: string | undefined
  /**
   * Deletes finished runs periodically, as `WorkflowClient.purge` does: once when the worker starts,
   * then every `every`. Off by default. Several workers may purge at the same time.
   */
  readonly purge?: PeriodicPurgeOptions | undefined
}

/** What the first commit of a run handed over before it was stored creates, and whom to tell. */
interface Unstored {
  readonly commit: CommitCreate
  readonly created: (created: boolean) => void
}

/** A run a client of this process handed over: stored (created claimed), or not yet. */
type HandedOver =
  | { readonly _tag: "Stored"; readonly run: RunRecord }
  | { readonly _tag: "Unstored"; readonly runId: string; readonly create: Unstored }

/** A run this worker executes. */
interface Slot {
  readonly epoch: number
  fiber: Fiber.RuntimeFiber<Engine.Outcome> | undefined
  /** False while a run handed over before it was stored waits for its first commit: no lease yet. */
  stored: boolean
  /** True once the commit that releases the lease (finish, park, suspend) was sent. */
  releasing: boolean
  /** True once the loss of its lease was counted (by a heartbeat or by the run's outcome). */
  lost: boolean
  readonly workflow: string
}

/**
 * Starts a worker in the current scope; it stops (gracefully) when the scope closes.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Options<W>
): Effect.Effect<void, never, Scope.Scope | WorkflowStore | Workflow.HandlerOf<W[number]>> =>
  Effect.gen(function*() {
    const store = yield* WorkflowStore
    const settings = yield* WorkflowConfig
    const hooks = yield* Hooks
    const handlers = new Map<string, Workflow.HandlerService>()
    for (const workflow of options.workflows) {
      handlers.set(workflow.name, yield* (workflow.tag as unknown as Effect.Effect<Workflow.HandlerService>))
    }
    const names = [...handlers.keys()]
    const workerId = options.workerId ??
      `${hostname()}-${process.pid}-${(yield* Random.nextIntBetween(0, 2 ** 31)).toString(36)}`
    const concurrency = Math.max(1, options.concurrency ?? 10)
    const active = new Map<string, Slot>()
    const wake = yield* Queue.sliding<void>(1)
    const scope = yield* Effect.scope
    const notify = Queue.offer(wake, undefined)
    // Whether runnable runs may be left unclaimed for want of a free slot: the last claim filled
    // every free slot, or the claim loop woke (hint or poll) with none free. Only then does a
    // finished run trigger a claim at once; otherwise that claim would find nothing, and the next
    // hint or poll picks up whatever becomes runnable.
    let backlog = false

    yield* Retention.periodic(options.purge)

    // Wake-up hints: new or woken runs of our workflows.
    yield* store.events.pipe(
      Stream.runForEachChunk((chunk) =>
        Chunk.some(chunk, (event) => event._tag === "RunnableChanged" && handlers.has(event.workflow))
          ? notify
          : Effect.void
      ),
      Effect.forkScoped
    )

    const leaseLost = (runId: string, workflow: string, how: string) =>
      Effect.zipRight(
        Effect.logWarning(`lease lost: ${how}`),
        Metric.increment(Metrics.tagged(Metrics.leasesLost, ["workflow", workflow]))
      ).pipe(Effect.annotateLogs({ "workflow.id": runId, "workflow.name": workflow }))

    /** An execution that stopped without finishing or suspending its run: why, in the log. */
    const abandoned = (run: RunRecord, slot: Slot, outcome: Extract<Engine.Outcome, { _tag: "Abandoned" }>) => {
      if (outcome.injected) return Effect.logDebug(`run abandoned: ${outcome.cause}`)
      // handed over unstored and its first commit did not store it (the ID exists, or the store
      // failed): the `execute` that handed it over goes on as `start` would
      if (!slot.stored) return Effect.logDebug(`run not stored by its first commit: ${outcome.cause}`)
      if (outcome.leaseLost) {
        if (slot.lost) return Effect.void
        slot.lost = true
        return leaseLost(run.id, run.workflow, `a fenced write found it gone (${outcome.cause})`)
      }
      return Effect.logWarning(
        `run abandoned (claimable again once its lease expires): ${outcome.cause}`
      ).pipe(Effect.annotateLogs({ "workflow.id": run.id, "workflow.name": run.workflow }))
    }

    // Heartbeats: extend the leases held; a run whose lease is gone is stopped at once.
    yield* Effect.gen(function*() {
      const runs = [...active].flatMap(([id, { epoch, stored }]) => stored ? [{ id, epoch }] : [])
      if (runs.length === 0) return
      const held = new Set(yield* store.heartbeat({ workerId, runs, leaseMs: settings.leaseMs }))
      for (const run of runs) {
        const current = active.get(run.id)
        // A run whose releasing commit was sent may have released its lease before this heartbeat
        // ran: not a loss (were the lease lost, that fenced commit fails and stops the run).
        if (
          !held.has(run.id) && current?.epoch === run.epoch && current.fiber !== undefined && !current.releasing &&
          !current.lost
        ) {
          current.lost = true
          yield* leaseLost(run.id, current.workflow, "a heartbeat no longer found it; stopping the run")
          active.delete(run.id)
          yield* Effect.forkIn(Effect.asVoid(current.fiber.interruptAsFork(current.fiber.id())), scope)
        }
      }
    }).pipe(
      Effect.catchAll((error) => Effect.logWarning(`heartbeat failed: ${error.message}`)),
      Effect.repeat(Schedule.spaced(Duration.millis(settings.heartbeatMs))),
      Effect.forkScoped
    )

    // Runs execute in their own scope, closed after the graceful shutdown below.
    const runScope = yield* Scope.fork(scope, ExecutionStrategy.sequential)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const fibers = [...active.values()].flatMap(({ fiber }) => fiber === undefined ? [] : [fiber])
        yield* Effect.forEach(fibers, (fiber) => fiber.await, { concurrency: "unbounded", discard: true }).pipe(
          Effect.timeout(Duration.millis(settings.shutdownGraceMs)),
          Effect.ignore
        )
        yield* Effect.forEach([...active], ([id, slot]) =>
          Effect.gen(function*() {
            if (slot.fiber !== undefined) yield* slot.fiber.interruptAsFork(slot.fiber.id())
            if (slot.stored) yield* Effect.ignore(store.release(id, slot.epoch))
          }), { discard: true })
      })
    )

    // Runs created claimed by this worker by a client of this process (`internal/local.ts`): a
    // slot is reserved before the create, and the run starts here, in the worker's own context.
    let reserved = 0
    let accepting = true
    const handedOver = yield* Queue.unbounded<HandedOver>()
    const local: Local.LocalWorker = {
      workerId,
      leaseMs: settings.leaseMs,
      handles: (workflow) => handlers.has(workflow),
      reserve: () => {
        if (!accepting || active.size + reserved >= concurrency) return false
        reserved++
        return true
      },
      unreserve: () => {
        reserved--
      },
      handOver: (run) => {
        if (!Queue.unsafeOffer(handedOver, { _tag: "Stored", run })) reserved--
      },
      handOverNew: ({ created, id, payload, workflow }) => {
        const create = { commit: { workflow, payload, workerId }, created }
        if (!Queue.unsafeOffer(handedOver, { _tag: "Unstored", runId: id, create })) {
          reserved--
          created(false)
        }
      }
    }

    /** The record a run handed over before it was stored will have once its first commit stores it. */
    const unstored = (runId: string, { commit }: Unstored, now: number): RunRecord => ({
      id: runId,
      workflow: commit.workflow,
      status: "running",
      payload: commit.payload,
      output: null,
      error: null,
      epoch: 1,
      leaseOwner: workerId,
      leaseExpiresAt: now + settings.leaseMs,
      runnableAt: now,
      cancelRequested: false,
      recoveries: 0,
      parentId: null,
      createdAt: now,
      updatedAt: now,
      completedAt: null
    })

    const wakeAt = (at: number) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.sleep(Duration.millis(Math.max(0, at - now)))).pipe(
        Effect.zipRight(notify),
        Effect.forkIn(runScope),
        Effect.asVoid
      )

    const start = (run: RunRecord, create?: Unstored) =>
      Effect.gen(function*() {
        const slot: Slot = {
          epoch: run.epoch,
          fiber: undefined,
          stored: create === undefined,
          releasing: false,
          lost: false,
          workflow: run.workflow
        }
        active.set(run.id, slot)
        // The slot is free once the final commit released the run's lease, although the run's
        // fiber still has its metrics to update: see `released`.
        const free = () => {
          if (active.get(run.id) === slot) active.delete(run.id)
        }
        const handler = handlers.get(run.workflow)!
        slot.fiber = yield* Effect.suspend(() => {
          Local.executing(store, run.id)
          return Engine.executeRun({
            run,
            handler,
            store,
            settings,
            hooks,
            released: free,
            releasing: () => {
              slot.releasing = true
            },
            create: create === undefined ? undefined : {
              commit: create.commit,
              created: (created) => {
                slot.stored = created
                create.created(created)
              }
            }
          })
        }).pipe(
          Effect.tap((outcome) =>
            outcome._tag === "Suspended" && outcome.runnableAt !== null
              ? wakeAt(outcome.runnableAt)
              : outcome._tag === "Abandoned"
              ? abandoned(run, slot, outcome)
              : Effect.void
          ),
          Effect.ensuring(Effect.suspend(() => {
            Local.stopped(store, run.id)
            free()
            return backlog ? notify : Effect.void
          })),
          Effect.forkIn(runScope)
        )
      })

    yield* Queue.take(handedOver).pipe(
      Effect.flatMap((item) => {
        reserved--
        return item._tag === "Stored"
          ? start(item.run)
          : Effect.flatMap(Clock.currentTimeMillis, (now) => start(unstored(item.runId, item.create, now), item.create))
      }),
      Effect.forever,
      Effect.forkScoped
    )
    // Withdrawn first at shutdown (finalizers run in reverse): no new hand-overs; runs handed over
    // but not started yet give their leases back.
    const withdraw = Local.register(store, local)
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        accepting = false
        withdraw()
        for (const item of yield* Queue.takeAll(handedOver)) {
          if (item._tag === "Stored") yield* Effect.ignore(store.release(item.run.id, item.run.epoch))
          else item.create.created(false)
        }
      })
    )

    yield* Effect.gen(function*() {
      while (true) {
        const free = concurrency - active.size - reserved
        if (free > 0) {
          backlog = false
          const runs = yield* store.claim({ workerId, workflows: names, limit: free, leaseMs: settings.leaseMs }).pipe(
            Effect.catchAll((error) =>
              Effect.as(
                Effect.zipRight(
                  Effect.sync(() => {
                    backlog = true
                  }),
                  Effect.logWarning(`claim failed: ${error.message}`)
                ),
                []
              )
            )
          )
          yield* Effect.forEach(runs, (run) => start(run), { discard: true })
          if (runs.length > 0 && runs.length === free) {
            backlog = true
            continue
          }
        } else {
          backlog = true
        }
        const jitter = yield* Random.nextRange(0.75, 1.25)
        yield* Queue.take(wake).pipe(Effect.timeout(Duration.millis(settings.pollMs * jitter)), Effect.ignore)
      }
    }).pipe(Effect.forkScoped)
  }).pipe(Effect.annotateLogs("memento.worker", options.workerId ?? "worker"))

/**
 * A worker as a layer: it runs while the layer is in use and shuts down gracefully with it.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const W extends ReadonlyArray<Workflow.Any>>(
  options: Options<W>
): Layer.Layer<never, never, WorkflowStore | Workflow.HandlerOf<W[number]>> => Layer.scopedDiscard(make(options))
