/**
 * The metrics the engine records, as Effect `Metric`s. Read them with `Metric.value` or export them
 * with any Effect metrics exporter (`@effect/opentelemetry`'s `Resource` + `Metrics` layers, or a
 * Prometheus scrape of the OpenTelemetry SDK). Counters are tagged with `workflow` (the workflow's
 * name); step metrics also with `step` (the step key without its `#2`, `#3` occurrence suffix),
 * `runsParked` with `status`; the gauge with `worker` (the worker ID). `Metric.value` finds a
 * metric by its tags in the order they were added: `workflow` first, then `step` or `status`.
 *
 * ```ts
 * const failed = yield* Metric.value(Metrics.runsFailed.pipe(Metric.tagged("workflow", "checkout")))
 * ```
 *
 * @since 0.1.0
 */
import { Metric, MetricBoundaries } from "effect"

/**
 * Runs a worker began executing for the first time (their first claim).
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsStarted: Metric.Metric.Counter<number> = Metric.counter("memento_runs_started", {
  description: "workflow runs a worker began executing for the first time",
  incremental: true
})

/**
 * Runs that ended `succeeded`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsSucceeded: Metric.Metric.Counter<number> = Metric.counter("memento_runs_succeeded", {
  description: "workflow runs that ended succeeded",
  incremental: true
})

/**
 * Runs that ended `failed`: a typed failure (or a timeout) with nothing to compensate.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsFailed: Metric.Metric.Counter<number> = Metric.counter("memento_runs_failed", {
  description: "workflow runs that ended failed (nothing to compensate)",
  incremental: true
})

/**
 * Runs that ended `compensated`: a typed failure (or a timeout) whose compensations all ran.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsCompensated: Metric.Metric.Counter<number> = Metric.counter("memento_runs_compensated", {
  description: "workflow runs that failed and were compensated",
  incremental: true
})

/**
 * Runs that ended `cancelled`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsCancelled: Metric.Metric.Counter<number> = Metric.counter("memento_runs_cancelled", {
  description: "workflow runs that were cancelled",
  incremental: true
})

/**
 * Runs parked as `needs_attention` or `dead` (also tagged with `status`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsParked: Metric.Metric.Counter<number> = Metric.counter("memento_runs_parked", {
  description: "workflow runs parked as needs_attention or dead",
  incremental: true
})

/**
 * Runs that reached their deadline (`WorkflowTimeout`); they are also counted as failed or
 * compensated.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsTimedOut: Metric.Metric.Counter<number> = Metric.counter("memento_runs_timed_out", {
  description: "workflow runs that reached their deadline",
  incremental: true
})

/**
 * Duration of every step attempt that ran its effect (steps, transactions and compensations;
 * replayed steps are not measured), in milliseconds.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stepDuration: Metric.Metric.Histogram<number> = Metric.histogram(
  "memento_step_duration_ms",
  MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
  "duration of step attempts in milliseconds"
)

/**
 * Step attempts that failed with a retryable error and were tried again.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stepRetries: Metric.Metric.Counter<number> = Metric.counter("memento_step_retries", {
  description: "step attempts retried after a declared error or a step timeout",
  incremental: true
})

/**
 * Runs a worker is executing right now (sleeping and waiting runs hold no worker and are not
 * counted).
 *
 * @since 0.1.0
 * @category metrics
 */
export const activeRuns: Metric.Metric.Gauge<number> = Metric.gauge("memento_worker_active_runs", {
  description: "runs a worker is executing right now"
})

/**
 * The step name of a key for the `step` tag: `charge#2` is `charge`, `charge#2#compensate` is
 * `charge#compensate`.
 *
 * @since 0.1.0
 * @category utils
 */
export const stepName = (key: string): string => key.replace(/#\d+/g, "")

const stepMetrics = new Map<string, {
  readonly latency: Metric.Metric.Histogram<number>
  readonly retries: Metric.Metric.Counter<number>
}>()

/**
 * The step metrics tagged with a workflow and a step name (`stepName` of the key), made once per
 * pair: tagging on every attempt would cost a metric and a key per step.
 *
 * @internal
 */
export const forStep = (workflow: string, key: string) => {
  const step = stepName(key)
  const id = `${workflow}\u0000${step}`
  let metrics = stepMetrics.get(id)
  if (metrics === undefined) {
    metrics = {
      latency: stepDuration.pipe(Metric.tagged("workflow", workflow), Metric.tagged("step", step)),
      retries: stepRetries.pipe(Metric.tagged("workflow", workflow), Metric.tagged("step", step))
    }
    stepMetrics.set(id, metrics)
  }
  return metrics
}
