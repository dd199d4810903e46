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
import type { MetricKeyType } from "effect"
import * as Metric from "effect/Metric"
import * as MetricBoundaries from "effect/MetricBoundaries"
import * as MetricKey from "effect/MetricKey"
import * as MetricLabel from "effect/MetricLabel"

/** The key of each metric below: tagged variants are made from it (see `tagged`). */
const keys = new WeakMap<object, MetricKey.MetricKey<MetricKeyType.MetricKeyType<any, any>>>()

const keyed = <Type extends MetricKeyType.MetricKeyType<any, any>>(
  key: MetricKey.MetricKey<Type>
): Metric.Metric<Type, MetricKeyType.MetricKeyType.InType<Type>, MetricKeyType.MetricKeyType.OutType<Type>> => {
  const metric = Metric.fromMetricKey(key)
  keys.set(metric, key)
  return metric
}

const counter = (name: string, description: string): Metric.Metric.Counter<number> =>
  keyed(MetricKey.counter(name, { description, incremental: true }))

/**
 * Runs a worker began executing for the first time (their first claim).
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsStarted: Metric.Metric.Counter<number> = counter(
  "memento_runs_started",
  "workflow runs a worker began executing for the first time"
)

/**
 * Runs that ended `succeeded`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsSucceeded: Metric.Metric.Counter<number> = counter(
  "memento_runs_succeeded",
  "workflow runs that ended succeeded"
)

/**
 * Runs that ended `failed`: a typed failure (or a timeout) with nothing to compensate.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsFailed: Metric.Metric.Counter<number> = counter(
  "memento_runs_failed",
  "workflow runs that ended failed (nothing to compensate)"
)

/**
 * Runs that ended `compensated`: a typed failure (or a timeout) whose compensations all ran.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsCompensated: Metric.Metric.Counter<number> = counter(
  "memento_runs_compensated",
  "workflow runs that failed and were compensated"
)

/**
 * Runs that ended `cancelled`.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsCancelled: Metric.Metric.Counter<number> = counter(
  "memento_runs_cancelled",
  "workflow runs that were cancelled"
)

/**
 * Runs parked as `needs_attention` or `dead` (also tagged with `status`).
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsParked: Metric.Metric.Counter<number> = counter(
  "memento_runs_parked",
  "workflow runs parked as needs_attention or dead"
)

/**
 * Runs that reached their deadline (`WorkflowTimeout`); they are also counted as failed or
 * compensated.
 *
 * @since 0.1.0
 * @category metrics
 */
export const runsTimedOut: Metric.Metric.Counter<number> = counter(
  "memento_runs_timed_out",
  "workflow runs that reached their deadline"
)

/**
 * Runs a worker stopped because it no longer held their lease: it expired (the worker was paused,
 * starved or cut off for longer than `leaseMs`) or another worker claimed the run. Found by a
 * heartbeat or by a fenced commit; the run itself goes on wherever it was claimed again. A steady
 * rate means workers are overloaded or their leases are too short.
 *
 * @since 0.1.0
 * @category metrics
 */
export const leasesLost: Metric.Metric.Counter<number> = counter(
  "memento_leases_lost",
  "runs a worker stopped because it no longer held their lease"
)

/**
 * Duration of every step attempt that ran its effect (steps, transactions and compensations;
 * replayed steps are not measured), in milliseconds.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stepDuration: Metric.Metric.Histogram<number> = keyed(
  MetricKey.histogram(
    "memento_step_duration_ms",
    MetricBoundaries.exponential({ start: 1, factor: 2, count: 20 }),
    "duration of step attempts in milliseconds"
  )
)

/**
 * Step attempts that failed with a retryable error and were tried again.
 *
 * @since 0.1.0
 * @category metrics
 */
export const stepRetries: Metric.Metric.Counter<number> = counter(
  "memento_step_retries",
  "step attempts retried after a declared error or a step timeout"
)

/**
 * Runs a worker is executing right now (sleeping and waiting runs hold no worker and are not
 * counted).
 *
 * @since 0.1.0
 * @category metrics
 */
export const activeRuns: Metric.Metric.Gauge<number> = keyed(
  MetricKey.gauge("memento_worker_active_runs", {
    description: "runs a worker is executing right now"
  })
)

/**
 * The step name of a key for the `step` tag: `charge#2` is `charge`, `charge#2#compensate` is
 * `charge#compensate`.
 *
 * @since 0.1.0
 * @category utils
 */
export const stepName = (key: string): string => key.replace(/#\d+/g, "")

/** Tagged metrics made so far: one tree per metric, a level per tag (name, then value). */
interface TagNode {
  readonly children: Map<string, TagNode>
  metric: Metric.Metric<any, any, any> | undefined
}

const tagTrees = new WeakMap<object, TagNode>()

const child = (node: TagNode, key: string): TagNode => {
  let next = node.children.get(key)
  if (next === undefined) node.children.set(key, next = { children: new Map(), metric: undefined })
  return next
}

/**
 * `metric` (one of the above) with the tags `tags` (name, value pairs, in this order), made once per
 * metric and tags: the same metric as `Metric.tagged` gives (`Metric.value` finds it), but its
 * registry entry is looked up once. Each update of a `Metric.tagged` metric makes a new metric key
 * and hashes it to find the entry, several times per step and run.
 *
 * @internal
 */
export const tagged = <Type, In, Out>(
  metric: Metric.Metric<Type, In, Out>,
  ...tags: ReadonlyArray<readonly [string, string]>
): Metric.Metric<Type, In, Out> => {
  const key = keys.get(metric)
  if (key === undefined) return tags.reduce((m, [name, value]) => Metric.tagged(m, name, value), metric)
  let node = tagTrees.get(metric)
  if (node === undefined) tagTrees.set(metric, node = { children: new Map(), metric: undefined })
  for (const [name, value] of tags) node = child(child(node, name), value)
  node.metric ??= Metric.fromMetricKey(
    MetricKey.taggedWithLabels(key, tags.map(([name, value]) => MetricLabel.make(name, value)))
  )
  return node.metric
}

/**
 * The step metrics tagged with a workflow and a step name (`stepName` of the key).
 *
 * @internal
 */
export const forStep = (workflow: string, key: string) => {
  const step = stepName(key)
  return {
    latency: tagged(stepDuration, ["workflow", workflow], ["step", step]),
    retries: tagged(stepRetries, ["workflow", workflow], ["step", step])
  }
}
