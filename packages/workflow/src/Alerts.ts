/**
 * Alerts: a hook called once per run that ends badly — `failed`, `needs_attention` (a compensation
 * that could not finish, a journal that no longer matches the code, a defect) or `dead` — and, on
 * request, `compensated`.
 *
 * Delivery is durable. The store writes an alert to its outbox in the same atomic write that moves
 * the run to one of those statuses, so no alert is lost however a worker dies. `Alerts.layer`
 * runs a dispatcher that claims alerts with a lease, calls the handler (with retries) and marks
 * them delivered. A dispatcher that dies after claiming an alert and before marking it delivered
 * leaves it to be claimed again when the lease expires: delivery is **at least once**, and every
 * alert carries a stable `id` that the receiver uses to see it once — `Alerts.webhook` sends it as
 * the `Idempotency-Key` header.
 *
 * @since 0.1.0
 */
import type * as HttpClient from "@effect/platform/HttpClient"
import type { Scope } from "effect"
import * as Cause from "effect/Cause"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Queue from "effect/Queue"
import * as Schedule from "effect/Schedule"
import * as Schema from "effect/Schema"
import * as Stream from "effect/Stream"
import * as Tracing from "./Tracing.js"
import { describeRunError, StoreError } from "./WorkflowError.js"
import type { AlertRecord, RunStatus } from "./WorkflowStore.js"
import { WorkflowStore } from "./WorkflowStore.js"

/**
 * An alert as the handler receives it and as `webhook` sends it (`Schema.encode(Alert)` gives the
 * JSON body: `createdAt` as an ISO string). A receiver can decode a webhook body with this Schema.
 *
 * - `id`: stable across redeliveries (`<run ID>/<epoch>/<status>`): use it as an idempotency key.
 * - `message`: the run's error in words; `error`: the run's error as stored (JSON, or `null`).
 * - `attempt`: how many times a dispatcher claimed this alert (1 on the first delivery).
 *
 * @since 0.1.0
 * @category models
 */
export class Alert extends Schema.Class<Alert>("@memento/workflow/Alert")({
  id: Schema.String,
  runId: Schema.String,
  workflow: Schema.String,
  status: Schema.Literal(
    "pending",
    "running",
    "sleeping",
    "waiting",
    "succeeded",
    "failed",
    "compensating",
    "compensated",
    "cancelled",
    "needs_attention",
    "dead"
  ),
  message: Schema.String,
  error: Schema.Unknown,
  createdAt: Schema.Date,
  attempt: Schema.Number
}) {}

/**
 * A webhook did not accept an alert: a transport error or timeout (`status` null) or a response
 * that was not 2xx.
 *
 * @since 0.1.0
 * @category errors
 */
export class WebhookError extends Schema.TaggedError<WebhookError>("@memento/WebhookError")("WebhookError", {
  url: Schema.String,
  status: Schema.NullOr(Schema.Number),
  message: Schema.String
}) {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The statuses the handler is called for. Default: `failed`, `needs_attention`, `dead` (a
   * `compensated` run rolled back as designed). Alerts of other statuses are marked delivered
   * without calling the handler.
   */
  readonly statuses?: ReadonlyArray<RunStatus> | undefined
  /**
   * How long a claimed alert stays with this dispatcher before another may claim it again (after a
   * crash). Keep it longer than the handler's retries can take. Default 5 minutes.
   */
  readonly lease?: Duration.DurationInput | undefined
  /** How often the outbox is polled when no run-finished hint arrives. Default 5 seconds. */
  readonly pollInterval?: Duration.DurationInput | undefined
  /**
   * Retries of a failed handler call. Default: exponential from 1 s, factor 2, 4 retries. An alert
   * whose retries are exhausted stays undelivered and is claimed again after its lease.
   */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Alerts claimed at once. Default 20. */
  readonly batchSize?: number | undefined
  /** Handler calls in flight at once. Default 4. */
  readonly concurrency?: number | undefined
}

/**
 * The statuses `Alerts.layer` reports by default.
 *
 * @since 0.1.0
 * @category models
 */
export const defaultStatuses: ReadonlyArray<RunStatus> = ["failed", "needs_attention", "dead"]

const parseJson = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** The run error of an outbox row in words. */
const describeError = (record: AlertRecord): string =>
  describeRunError(record.error) ?? `the run ended ${record.status}`

/**
 * The `Alert` of an outbox row.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromRecord = (record: AlertRecord): Effect.Effect<Alert> =>
  Effect.sync(() =>
    new Alert({
      id: record.id,
      runId: record.runId,
      workflow: record.workflow,
      status: record.status,
      message: describeError(record),
      error: parseJson(record.error),
      createdAt: new Date(record.createdAt),
      attempt: record.attempts
    })
  )

const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("1 second", 2).pipe(
  Schedule.intersect(Schedule.recurs(4))
)

const storeRetry = Schedule.exponential("100 millis", 2).pipe(Schedule.intersect(Schedule.recurs(5)))

/**
 * Starts an alert dispatcher in the current scope: it claims undelivered alerts from the store's
 * outbox (on every run-finished hint, and every `pollInterval`), calls `handler` for those whose
 * status is reported (retrying failures per `retry`) and marks each delivered once the handler
 * succeeded. Several dispatchers (one per worker process) share the outbox: a claim leases an
 * alert to one of them.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <E, R>(
  handler: (alert: Alert) => Effect.Effect<unknown, E, R>,
  options?: Options
): Effect.Effect<void, never, Scope.Scope | WorkflowStore | R> =>
  Effect.gen(function*() {
    const store = yield* WorkflowStore
    const statuses = options?.statuses ?? defaultStatuses
    const leaseMs = Duration.toMillis(Duration.decode(options?.lease ?? "5 minutes"))
    const poll = Duration.decode(options?.pollInterval ?? "5 seconds")
    const retry = options?.retry ?? defaultRetry
    const limit = Math.max(1, Math.floor(options?.batchSize ?? 20))
    const concurrency = Math.max(1, Math.floor(options?.concurrency ?? 4))
    const wake = yield* Queue.sliding<void>(1)

    yield* store.events.pipe(
      Stream.filter((event) => event._tag === "RunFinished"),
      Stream.runForEach(() => Queue.offer(wake, undefined)),
      Effect.forkScoped
    )

    const complete = (record: AlertRecord) =>
      store.completeAlert(record.id).pipe(
        Effect.retry({ schedule: storeRetry, while: (error) => error instanceof StoreError }),
        Effect.catchAll((error) =>
          Effect.logWarning(
            `alert ${record.id} delivered but not marked delivered (sent again later): ${error.message}`
          )
        )
      )

    const deliver = (record: AlertRecord) =>
      Effect.gen(function*() {
        if (!statuses.includes(record.status)) return yield* complete(record)
        const alert = yield* fromRecord(record)
        const exit = yield* Effect.exit(Effect.retry(Effect.suspend(() => handler(alert)), retry))
        if (Exit.isSuccess(exit)) return yield* complete(record)
        if (Cause.isInterruptedOnly(exit.cause)) return yield* Effect.interrupt
        yield* Effect.logWarning(
          `alert ${record.id} (run ${record.runId}, ${record.status}) not delivered, retried after its lease`,
          exit.cause
        )
      }).pipe(Effect.annotateLogs({ "workflow.id": record.runId, "alert.id": record.id }))

    yield* Effect.gen(function*() {
      while (true) {
        const claimed = yield* store.claimAlerts({ limit, leaseMs }).pipe(
          Effect.catchAll((error) => Effect.as(Effect.logWarning(`claiming alerts failed: ${error.message}`), []))
        )
        yield* Effect.forEach(claimed, deliver, { concurrency, discard: true })
        if (claimed.length === limit) continue
        yield* Queue.take(wake).pipe(Effect.timeout(poll), Effect.ignore)
      }
    }).pipe(Effect.annotateLogs("memento.alerts", "dispatcher"), Effect.forkScoped)
  })

/**
 * The alert dispatcher as a layer: it runs while the layer is in use, next to a worker or in any
 * process with the store.
 *
 * ```ts
 * const AlertsLive = Alerts.layer(Alerts.webhook("https://ops.example.com/memento")).pipe(
 *   Layer.provide(FetchHttpClient.layer)
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <E, R>(
  handler: (alert: Alert) => Effect.Effect<unknown, E, R>,
  options?: Options
): Layer.Layer<never, never, WorkflowStore | R> => Layer.scopedDiscard(make(handler, options))

/**
 * @since 0.1.0
 * @category models
 */
export interface WebhookOptions {
  /** Extra request headers (authorization, ...). */
  readonly headers?: Readonly<Record<string, string>> | undefined
  /**
   * Retries of a transport error, a timeout, a 408, 429 or 5xx response. Default: exponential from
   * 500 ms, factor 2, 3 retries. Other responses fail at once.
   */
  readonly retry?: Schedule.Schedule<unknown, WebhookError> | undefined
  /** Timeout of one request. Default 10 seconds. */
  readonly timeout?: Duration.DurationInput | undefined
}

const defaultWebhookRetry: Schedule.Schedule<unknown, WebhookError> = Schedule.exponential("500 millis", 2).pipe(
  Schedule.intersect(Schedule.recurs(3))
)

const retryable = (error: WebhookError): boolean =>
  error.status === null || error.status === 408 || error.status === 429 || error.status >= 500

/**
 * A handler that POSTs each alert as JSON (`Schema.encode(Alert)`) to `url`, with the header
 * `Idempotency-Key: <alert id>` so that a receiver sees a redelivered alert once. Transport errors,
 * timeouts, 408, 429 and 5xx responses are retried; any other non-2xx response fails with
 * `WebhookError`. Requires an `HttpClient` (`FetchHttpClient.layer`, `NodeHttpClient.layer`, ...)
 * from `@effect/platform`, an optional peer dependency loaded only when a webhook is sent.
 *
 * @since 0.1.0
 * @category handlers
 */
export const webhook = (
  url: string,
  options?: WebhookOptions
): (alert: Alert) => Effect.Effect<void, WebhookError, HttpClient.HttpClient> =>
(alert) =>
  Effect.gen(function*() {
    const [Client, Request] = yield* Effect.tryPromise({
      try: () => Promise.all([import("@effect/platform/HttpClient"), import("@effect/platform/HttpClientRequest")]),
      catch: (error) =>
        new WebhookError({ url, status: null, message: `@effect/platform could not be loaded: ${String(error)}` })
    })
    const client = yield* Client.HttpClient
    const request = Request.post(url).pipe(
      Request.setHeaders({ ...options?.headers, "idempotency-key": alert.id }),
      Request.bodyUnsafeJson(Schema.encodeSync(Alert)(alert))
    )
    const timeout = options?.timeout ?? "10 seconds"
    const send = Effect.gen(function*() {
      const response = yield* client.execute(request).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () =>
            new WebhookError({ url, status: null, message: `no response within ${Duration.format(timeout)}` })
        }),
        Effect.catchTag("RequestError", "ResponseError", (error) =>
          Effect.fail(new WebhookError({ url, status: null, message: error.message })))
      )
      const body = yield* Effect.orElseSucceed(response.text, () =>
        "")
      if (response.status < 200 || response.status >= 300) {
        return yield* new WebhookError({
          url,
          status: response.status,
          message: `HTTP ${response.status}${body.length === 0 ? "" : `: ${body.slice(0, 500)}`}`
        })
      }
    })
    yield* Effect.retry(send, { schedule: options?.retry ?? defaultWebhookRetry, while: retryable })
  }).pipe(Tracing.withSpan("Alerts.webhook", { attributes: { "alert.id": alert.id, "workflow.id": alert.runId } }))
