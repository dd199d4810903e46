/**
 * The checkout service's HTTP API on `@effect/platform`:
 *
 * - `POST /checkout` — starts the checkout of a JSON order; 202 with `{ runId }`. Requires an
 *   `Idempotency-Key` header (`IdempotencyKey.middleware` of `@memento/http`): a repeat with the
 *   same key gets the stored response (`Idempotent-Replayed: true`), a repeat while the first is in
 *   flight 409, the same key with another body 422, no key 400. The order ID is the workflow ID,
 *   so the same order under a new key returns the same run (200, `created: false`); the same order
 *   ID with another order is 409. Bad input is 400, as `application/problem+json`.
 * - `POST /webhooks/payments` — the payment provider's signed confirmations (`PaymentWebhook.ts`).
 * - `/admin` — the admin API and the dashboard of `@memento/http` (`ADMIN_TOKEN`, see `adminRouter`).
 * - `GET /orders/:id` — the run's status, receipt or error, and the saga's progress: every step
 *   with its status and attempts, the compensations, the signals received.
 * - `GET /ledger` — the simulated providers' books and whether the saga's invariants hold.
 * - `GET /health` — 200 when the database answers.
 */
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { MigrationError } from "@effect/sql/Migrator"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Admin, IdempotencyKey, Webhook } from "@memento/http"
import { WorkflowClient, WorkflowError, type WorkflowStore } from "@memento/workflow"
import type { Layer } from "effect"
import type { ConfigError } from "effect"
import { Cause, Config, Effect, Exit, Layer as L, Option, ParseResult, Schema } from "effect"
import { Checkout, CheckoutFailed, Order, type Receipt } from "./Checkout.js"
import * as Ledger from "./Ledger.js"
import * as PaymentWebhook from "./PaymentWebhook.js"

/** An RFC 9457 problem details response. */
export const problem = (
  status: number,
  title: string,
  detail: string,
  extensions: Record<string, unknown> = {}
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson({ type: "about:blank", title, status, detail, ...extensions }, {
    status,
    contentType: "application/problem+json"
  })

const maxBodyBytes = 64 * 1024

const startCheckout = Effect.gen(function*() {
  const request = yield* HttpServerRequest.HttpServerRequest
  // Answered before reading: past the limit the platform drops the connection without a response.
  const length = Number(request.headers["content-length"] ?? 0)
  if (length > maxBodyBytes) {
    return problem(413, "Order too large", `the body has ${length} bytes, over the limit of ${maxBodyBytes}`)
  }
  const body = yield* request.json
  const order = yield* Schema.decodeUnknown(Order, { errors: "all", onExcessProperty: "error" })(body)
  const client = yield* WorkflowClient.WorkflowClient
  const run = yield* client.start(Checkout, order)
  return HttpServerResponse.unsafeJson(
    { runId: run.id, created: run.created, status: `/orders/${encodeURIComponent(run.id)}` },
    { status: run.created ? 202 : 200, headers: { location: `/orders/${encodeURIComponent(run.id)}` } }
  )
}).pipe(
  HttpIncomingMessage.withMaxBodySize(Option.some(maxBodyBytes)),
  Effect.catchTags({
    RequestError: (error) =>
      Effect.succeed(
        problem(400, "Unreadable body", `the body must be JSON of at most ${maxBodyBytes} bytes: ${error.message}`)
      ),
    ParseError: (error) => {
      const errors = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
        path: issue.path.join("."),
        message: issue.message
      }))
      const first = errors[0]
      const detail = first === undefined ? "the order is invalid" : `${first.path || "body"}: ${first.message}`
      return Effect.succeed(problem(400, "Invalid order", detail, { errors }))
    },
    InvalidPayload: (error) => Effect.succeed(problem(400, "Invalid order", error.message)),
    WorkflowIdConflict: () =>
      Effect.succeed(problem(409, "Order ID in use", "this order ID was already checked out with another order")),
    PayloadTooLarge: (error) => Effect.succeed(problem(413, "Order too large", error.message)),
    StoreError: (error) => Effect.succeed(problem(503, "Storage unavailable", error.message))
  })
)

const ResultError = Schema.Union(CheckoutFailed, WorkflowError.WorkflowCancelled, WorkflowError.RunParked)

const iso = (ms: number | null) => ms === null ? null : new Date(ms).toISOString()
const json = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

/** The progress of one checkout, as `GET /orders/:id` returns it. */
export const orderView = (
  details: WorkflowStore.RunDetails,
  outcome: Option.Option<Exit.Exit<Receipt, typeof ResultError.Type>>
) => {
  const entries = [...details.entries].sort((a, b) => a.seq - b.seq)
  const attemptsOf = (key: string) => details.attempts.filter((attempt) => attempt.key === key)
  const lastError = (key: string) => attemptsOf(key).reduce<string | null>((last, a) => a.error ?? last, null)
  return {
    orderId: details.run.id,
    status: details.run.status,
    createdAt: iso(details.run.createdAt),
    updatedAt: iso(details.run.updatedAt),
    completedAt: iso(details.run.completedAt),
    receipt: Option.isSome(outcome) && Exit.isSuccess(outcome.value) ? outcome.value.value : null,
    error: Option.isSome(outcome) && Exit.isFailure(outcome.value)
      ? Option.match(Cause.failureOption(outcome.value.cause), {
        onNone: () => null,
        onSome: (error) => ({ ...Schema.encodeSync(ResultError)(error), message: error.message })
      })
      : null,
    steps: entries.filter((entry) => entry.kind !== "compensation").map((entry) => ({
      key: entry.key,
      kind: entry.kind,
      status: entry.status,
      attempts: entry.attempts,
      startedAt: iso(entry.startedAt),
      completedAt: iso(entry.completedAt),
      ...(entry.output === null ? {} : { output: json(entry.output) }),
      ...(entry.error === null ? {} : { error: json(entry.error) }),
      ...(lastError(entry.key) === null ? {} : { lastAttemptError: lastError(entry.key) })
    })),
    compensations: entries.filter((entry) => entry.kind === "compensation").map((entry) => ({
      step: entry.key.replace(/#compensate$/, ""),
      status: entry.status,
      attempts: entry.attempts,
      completedAt: iso(entry.completedAt),
      ...(lastError(entry.key) === null ? {} : { lastAttemptError: lastError(entry.key) })
    })),
    signals: details.signals.map((signal) => ({
      name: signal.name,
      signalId: signal.signalId,
      receivedAt: iso(signal.receivedAt)
    }))
  }
}

const getOrder = Effect.gen(function*() {
  const { id } = yield* HttpRouter.schemaPathParams(Schema.Struct({ id: Schema.String }))
  const client = yield* WorkflowClient.WorkflowClient
  const details = yield* client.inspect(id)
  if (details.run.workflow !== Checkout.name) return problem(404, "No such order", `no checkout for order ${id}`)
  const outcome = yield* client.poll(Checkout, id)
  return HttpServerResponse.unsafeJson(orderView(details, outcome))
}).pipe(
  Effect.catchTags({
    ParseError: () => Effect.succeed(problem(400, "Invalid order ID", "the order ID is missing")),
    RunNotFound: (error) => Effect.succeed(problem(404, "No such order", error.message)),
    StoreError: (error) => Effect.succeed(problem(503, "Storage unavailable", error.message))
  })
)

const getLedger = Effect.gen(function*() {
  const books = yield* Ledger.read
  const runs = yield* Ledger.statuses
  const violations = Ledger.check(books, runs)
  return HttpServerResponse.unsafeJson({
    invariants: { hold: violations.length === 0, violations },
    chargedCents: books.chargedCents,
    refundedCents: books.refundedCents,
    paymentWebhooks: { deliveries: books.webhookDeliveries, duplicates: books.webhookDuplicates },
    stock: books.stock,
    orders: books.orders.map((order) => ({ ...order, status: runs.get(order.orderId) ?? null }))
  })
}).pipe(
  Effect.catchTags({
    SqlError: (error) => Effect.succeed(problem(503, "Storage unavailable", error.message)),
    StoreError: (error) => Effect.succeed(problem(503, "Storage unavailable", error.message))
  })
)

const health = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  yield* client.list({ limit: 1 })
  return HttpServerResponse.unsafeJson({ status: "ok" })
}).pipe(
  Effect.catchTag("StoreError", (error) => Effect.succeed(problem(503, "Storage unavailable", error.message)))
)

export const router = HttpRouter.empty.pipe(
  HttpRouter.post("/checkout", startCheckout.pipe(IdempotencyKey.middleware())),
  HttpRouter.post("/webhooks/payments", PaymentWebhook.receive),
  HttpRouter.get("/orders/:id", getOrder),
  HttpRouter.get("/ledger", getLedger),
  HttpRouter.get("/health", health)
)

/** Problem+json answers for unknown routes and unexpected failures. */
const withProblems = <E, R>(app: HttpApp.Default<E, R>) =>
  app.pipe(
    Effect.catchAllCause((cause) => {
      const failure = Cause.failureOption(cause)
      if (Option.isSome(failure) && (failure.value as { readonly _tag?: unknown })._tag === "RouteNotFound") {
        const request = (failure.value as unknown as HttpServerError.RouteNotFound).request
        return Effect.succeed(problem(404, "Not found", `no route for ${request.method} ${request.url}`))
      }
      return Cause.isInterruptedOnly(cause)
        ? Effect.failCause(cause)
        : Effect.as(Effect.logError("request failed", cause), problem(500, "Internal error", "see the service log"))
    })
  )

/** The router with problem+json answers for unknown routes and unexpected failures. */
export const app = withProblems(router)

/** The tables of `@memento/http`: idempotency keys (expired ones purged hourly) and received webhooks. */
export const StoresLive: Layer.Layer<
  IdempotencyKey.IdempotencyStore | Webhook.WebhookStore,
  SqlError | MigrationError,
  SqlClient
> = L.merge(IdempotencyKey.layer({ purgeEvery: "1 hour" }), Webhook.layer())

/**
 * The admin API and dashboard of `@memento/http`, mounted under `/admin`. With `ADMIN_TOKEN` set,
 * they require it (`Authorization: Bearer <token>`, or the dashboard's sign-in form); without it,
 * the server must listen on a loopback address (the default `HOST=127.0.0.1`), else the service
 * refuses to start.
 */
export const adminRouter = Effect.gen(function*() {
  const token = yield* Config.option(Config.redacted("ADMIN_TOKEN"))
  return yield* Option.match(token, {
    onNone: () => Admin.router(),
    onSome: (token) => Admin.router({ auth: Admin.bearer(token) })
  })
})

/** Serves the API, and the admin API and dashboard under `/admin`, on the `HttpServer` in context. */
export const layer: Layer.Layer<
  never,
  SqlError | MigrationError | Admin.AdminAuthRequired | ConfigError.ConfigError,
  HttpServer.HttpServer | WorkflowClient.WorkflowClient | SqlClient
> = L.unwrapEffect(
  Effect.map(adminRouter, (admin) => HttpServer.serve(withProblems(router.pipe(HttpRouter.mount("/admin", admin)))))
).pipe(L.provide(StoresLive))
