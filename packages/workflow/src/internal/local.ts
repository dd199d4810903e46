import type { Effect } from "effect"
import type { RunRecord } from "../WorkflowStore.js"

/**
 * In-process shortcuts between the workers and the clients of one store object (the same
 * `WorkflowStore` service in one process). They save round trips and wake-ups, never durability:
 * what they carry was committed to the store first, or (a run handed over before it was stored)
 * nothing of it is visible to anyone until its first commit stores it; without them the store's
 * events and polling do the same work.
 *
 * - A client that starts a run of a workflow a local worker executes and has a free slot for
 *   creates the run already claimed by that worker (one statement instead of a create, a wake-up
 *   and a claim) and hands it over; if the process dies, the lease expires and any worker
 *   recovers the run as after any crash.
 * - `execute` goes one step further: it hands the run over before it is stored, and the run's
 *   first commit (the start marker of its first step, or its end) creates it (`Commit.create`).
 *   Nothing runs before that commit but the body's code up to its first journaled operation, which
 *   a replay runs again anyway. If the ID exists, that commit writes nothing and `execute` starts
 *   the run the ordinary way, which finds the existing run (guarantee 1).
 * - A worker that finishes a run tells the local waiters its final record after the final commit,
 *   so `result`/`execute` need not read it back.
 */

/** A worker of this process, as the clients of the same store see it. */
export interface LocalWorker {
  readonly workerId: string
  readonly leaseMs: number
  /** Whether the worker executes this workflow. */
  readonly handles: (workflow: string) => boolean
  /** Reserves a slot for a run about to be created claimed by this worker; false when none is free. */
  readonly reserve: () => boolean
  /** Gives a reservation back (the run was not created, or not by this call). */
  readonly unreserve: () => void
  /** Starts a run created claimed by this worker, in the reserved slot. */
  readonly handOver: (run: RunRecord) => void
  /**
   * Starts a run not stored yet, in the reserved slot: its first commit creates it, claimed by this
   * worker at epoch 1 (`Commit.create`). `created` is told once whether that commit stored the run
   * (false: the ID existed, the store failed, or the worker stopped first).
   */
  readonly handOverNew: (run: {
    readonly id: string
    readonly workflow: string
    readonly payload: string
    readonly created: (created: boolean) => void
  }) => void
}

/** A `result`/`execute` waiting for a run: opened by events, polls or the local worker's finish. */
export interface Waiter {
  readonly latch: Effect.Latch
  /** The run's final record, when a worker of this process finished it. */
  finished: RunRecord | undefined
}

interface Local {
  readonly workers: Set<LocalWorker>
  readonly waiters: Map<string, Set<Waiter>>
  /** Runs a worker of this process is executing (executions per run ID). */
  readonly running: Map<string, number>
}

const registry = new WeakMap<object, Local>()

const of = (store: object): Local => {
  let local = registry.get(store)
  if (local === undefined) {
    local = { workers: new Set(), waiters: new Map(), running: new Map() }
    registry.set(store, local)
  }
  return local
}

/** Makes `worker` available to the clients of `store`; returns the function that withdraws it. */
export const register = (store: object, worker: LocalWorker): () => void => {
  const { workers } = of(store)
  workers.add(worker)
  return () => {
    workers.delete(worker)
  }
}

/** A local worker of `store` that executes `workflow` and has reserved a slot for it, if any. */
export const reserve = (store: object, workflow: string): LocalWorker | undefined => {
  const local = registry.get(store)
  if (local === undefined) return undefined
  for (const worker of local.workers) {
    if (worker.handles(workflow) && worker.reserve()) return worker
  }
  return undefined
}

/** Registers a waiter for `runId`; returns the function that removes it. */
export const wait = (store: object, runId: string, waiter: Waiter): () => void => {
  const { waiters } = of(store)
  let set = waiters.get(runId)
  if (set === undefined) waiters.set(runId, set = new Set())
  set.add(waiter)
  const mine = set
  return () => {
    mine.delete(waiter)
    if (mine.size === 0 && waiters.get(runId) === mine) waiters.delete(runId)
  }
}

const open = (local: Local, runId: string): void => {
  const set = local.waiters.get(runId)
  if (set !== undefined) { for (const waiter of set) waiter.latch.unsafeOpen() }
}

/**
 * Wakes the waiters of `runId` on a `RunFinished` event (they read the run), unless a worker of
 * this process executes it: that worker hands them the final record, and the event, which may
 * overtake the final commit's reply, would only cost them a read.
 */
export const wake = (store: object, runId: string): void => {
  const local = registry.get(store)
  if (local !== undefined && !local.running.has(runId)) open(local, runId)
}

/** A worker of this process begins executing `runId`. */
export const executing = (store: object, runId: string): void => {
  const { running } = of(store)
  running.set(runId, (running.get(runId) ?? 0) + 1)
}

/**
 * A worker of this process stopped executing `runId` (finished, suspended, lost or gave up its
 * lease): waiters without a final record read the run, as a `RunFinished` event would make them.
 */
export const stopped = (store: object, runId: string): void => {
  const local = of(store)
  const n = (local.running.get(runId) ?? 1) - 1
  if (n > 0) {
    local.running.set(runId, n)
    return
  }
  local.running.delete(runId)
  open(local, runId)
}

/** Hands the final record of a run a local worker committed to its local waiters. */
export const finished = (store: object, run: RunRecord): void => {
  const set = registry.get(store)?.waiters.get(run.id)
  if (set === undefined) return
  for (const waiter of set) {
    waiter.finished = run
    waiter.latch.unsafeOpen()
  }
}
