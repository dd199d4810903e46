/**
 * Tunables of the engine, with production defaults. Override with
 * `Layer.succeed(WorkflowConfig, { ...defaults, leaseMs: 60_000 })` or `WorkflowConfig.layer({...})`.
 *
 * @since 0.1.0
 */
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Layer from "effect/Layer"
import * as Schedule from "effect/Schedule"

/**
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  /** Largest encoded payload, step output, error or signal, in bytes. Default 1 MiB. */
  readonly maxValueBytes: number
  /** How long a claim holds a run without a heartbeat or commit. Default 30 s. */
  readonly leaseMs: number
  /** How often a worker extends the leases it holds. Default 10 s. */
  readonly heartbeatMs: number
  /** How often a worker polls for work when no wake-up hint arrives (jittered). Default 1 s. */
  readonly pollMs: number
  /** How often `result` re-reads a run when no wake-up hint arrives. Default 1 s. */
  readonly resultPollMs: number
  /** Recoveries after a worker died before the run is parked as `dead`. Default 5. */
  readonly maxRecoveries: number
  /** How long a worker lets its runs finish on shutdown before releasing their leases. Default 10 s. */
  readonly shutdownGraceMs: number
  /** Retries of a store write that failed with a `StoreError` before the run is abandoned. */
  readonly storeRetry: Schedule.Schedule<unknown, unknown>
  /** The retry policy of steps that set none. */
  readonly defaultRetry: Schedule.Schedule<unknown, unknown>
}

/**
 * The default step retry policy: exponential backoff from 100 ms, factor 2, jittered, each delay
 * capped at 10 s, at most 5 attempts in all.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("100 millis", 2).pipe(
  Schedule.jittered,
  Schedule.modifyDelay((_, delay): Duration.DurationInput => Math.min(10_000, Duration.toMillis(delay))),
  Schedule.intersect(Schedule.recurs(4))
)

/**
 * @since 0.1.0
 * @category constructors
 */
export const defaults: Settings = {
  maxValueBytes: 1024 * 1024,
  leaseMs: 30_000,
  heartbeatMs: 10_000,
  pollMs: 1_000,
  resultPollMs: 1_000,
  maxRecoveries: 5,
  shutdownGraceMs: 10_000,
  storeRetry: Schedule.exponential("50 millis", 2).pipe(
    Schedule.modifyDelay((_, delay): Duration.DurationInput => Math.min(2_000, Duration.toMillis(delay))),
    Schedule.intersect(Schedule.recurs(10))
  ),
  defaultRetry
}

/**
 * @since 0.1.0
 * @category tags
 */
export class WorkflowConfig extends Context.Reference<WorkflowConfig>()("@memento/workflow/WorkflowConfig", {
  defaultValue: (): Settings => defaults
}) {}

/**
 * Overrides some settings, keeping the defaults for the rest.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (settings: Partial<Settings>): Layer.Layer<WorkflowConfig> =>
  Layer.succeed(WorkflowConfig, { ...defaults, ...settings })
