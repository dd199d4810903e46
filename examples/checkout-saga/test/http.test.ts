/**
 * The HTTP API on a real server (random port) and a real SQLite file.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpServer from "@effect/platform/HttpServer"
import { assert, describe, it } from "@effect/vitest"
import { Webhook } from "@memento/http"
import { Cause, ConfigProvider, Effect, Exit, Layer } from "effect"
import { createServer } from "node:http"
import * as Http from "../src/Http.js"
import * as PaymentWebhook from "../src/PaymentWebhook.js"
import * as Payments from "../src/providers/Payments.js"
import { books, env, order } from "./utils.js"

/** A real server on 127.0.0.1 (a loopback address: the admin API needs no token) and a client for it. */
export const LoopbackServer = HttpServer.layerTestClient.pipe(
  Layer.provide(NodeHttpClient.layerWithoutAgent),
  Layer.provide(NodeHttpClient.makeAgentLayer({ keepAlive: false })),
  Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0, host: "127.0.0.1" }))
)

const TestServer = Http.layer.pipe(Layer.provideMerge(LoopbackServer), Layer.provideMerge(env()))

let keys = 0
/** POST with a fresh Idempotency-Key (or the one given; `null`: none). */
const post = (path: string, body: unknown, key: string | null = `key-${++keys}`) =>
  Effect.flatMap(HttpClient.HttpClient, (client) =>
    client.execute(
      HttpClientRequest.post(path).pipe(
        key === null ? (request) => request : HttpClientRequest.setHeader("idempotency-key", key),
        HttpClientRequest.bodyUnsafeJson(body)
      )
    ))

const get = (path: string) => Effect.flatMap(HttpClient.HttpClient, (client) => client.get(path))

const json = <A = any>(response: { readonly json: Effect.Effect<unknown, unknown> }) =>
  Effect.map(Effect.orDie(response.json), (body) => body as A)

const ended = ["succeeded", "failed", "compensated", "cancelled", "needs_attention", "dead"]

/** Polls `GET /orders/:id` until the run has finished. */
const finished = (id: string) =>
  Effect.gen(function*() {
    for (let i = 0; i < 200; i++) {
      const view = yield* json(yield* get(`/orders/${id}`))
      if (ended.includes(view.status)) return view
      yield* Effect.sleep("50 millis")
    }
    return assert.fail(`order ${id} did not finish`)
  })

describe("HTTP API", () => {
  it.live("POST /checkout starts a checkout (202), GET /orders/:id shows its progress", () =>
    Effect.gen(function*() {
      const started = yield* post("/checkout", order("http-1"))
      assert.strictEqual(started.status, 202)
      assert.deepStrictEqual(yield* json(started), { runId: "http-1", created: true, status: "/orders/http-1" })

      const view = yield* finished("http-1")
      assert.strictEqual(view.status, "succeeded")
      assert.strictEqual(view.receipt.amountCents, 2400)
      assert.deepStrictEqual(view.steps.map((s: any) => [s.key, s.status]), [
        ["reserve-inventory", "succeeded"],
        ["charge-card", "succeeded"],
        ["payment-confirmed", "succeeded"],
        ["create-shipment", "succeeded"],
        ["send-confirmation-email", "succeeded"]
      ])
      assert.deepStrictEqual(view.signals.map((s: any) => [s.name, s.signalId]), [
        ["payment-confirmed", view.receipt.chargeId]
      ])

      // the same order again: the same run; another order under the same ID: 409
      const repeated = yield* post("/checkout", order("http-1"))
      assert.strictEqual(repeated.status, 200)
      assert.isFalse((yield* json(repeated)).created)
      const conflict = yield* post("/checkout", order("http-1", { items: [{ sku: "mug", quantity: 5 }] }))
      assert.strictEqual(conflict.status, 409)
      assert.strictEqual(conflict.headers["content-type"], "application/problem+json")

      const ledger = yield* json(yield* get("/ledger"))
      assert.isTrue(ledger.invariants.hold)
      assert.strictEqual(ledger.chargedCents, 2400)
    }).pipe(Effect.provide(TestServer)))

  it.live("a declined card is shown compensated with its typed error", () =>
    Effect.gen(function*() {
      yield* post("/checkout", order("http-declined", { paymentMethod: Payments.TestCards.declined }))
      const view = yield* finished("http-declined")
      assert.strictEqual(view.status, "compensated")
      assert.strictEqual(view.error._tag, "CheckoutFailed")
      assert.strictEqual(view.error.reason, "card-declined")
      assert.deepStrictEqual(view.compensations.map((c: any) => [c.step, c.status]), [
        ["reserve-inventory", "succeeded"]
      ])
    }).pipe(Effect.provide(TestServer)))

  it.live("bad input is a 400 problem+json, unknown orders and routes 404", () =>
    Effect.gen(function*() {
      const invalid = yield* post("/checkout", { ...order("bad id!"), items: [{ sku: "mug", quantity: 0 }] })
      assert.strictEqual(invalid.status, 400)
      assert.strictEqual(invalid.headers["content-type"], "application/problem+json")
      const problem = yield* json(invalid)
      assert.strictEqual(problem.title, "Invalid order")
      assert.deepStrictEqual(problem.errors.map((e: any) => e.path).sort(), ["items.0.quantity", "orderId"])

      const extra = yield* post("/checkout", { ...order("extra-1"), coupon: "FREE" })
      assert.strictEqual(extra.status, 400)

      const notJson = yield* Effect.flatMap(HttpClient.HttpClient, (client) =>
        client.execute(
          HttpClientRequest.post("/checkout").pipe(
            HttpClientRequest.setHeader("idempotency-key", "not-json-1"),
            HttpClientRequest.bodyText("{", "application/json")
          )
        ))
      assert.strictEqual(notJson.status, 400)
      assert.strictEqual((yield* json(notJson)).title, "Unreadable body")

      const tooLarge = yield* post("/checkout", { ...order("large-1"), note: "x".repeat(70_000) })
      assert.strictEqual(tooLarge.status, 413)
      assert.strictEqual((yield* json(tooLarge)).title, "Order too large")

      const missing = yield* get("/orders/nope")
      assert.strictEqual(missing.status, 404)
      assert.strictEqual(missing.headers["content-type"], "application/problem+json")
      assert.strictEqual((yield* get("/no-such-route")).status, 404)
      assert.deepStrictEqual(yield* json(yield* get("/health")), { status: "ok" })
    }).pipe(Effect.provide(TestServer)))

  it.live("POST /checkout requires an Idempotency-Key; a repeat is replayed, another body under the key is 422", () =>
    Effect.gen(function*() {
      const missing = yield* post("/checkout", order("idem-1"), null)
      assert.strictEqual(missing.status, 400)
      assert.strictEqual(missing.headers["content-type"], "application/problem+json")

      const first = yield* post("/checkout", order("idem-1"), "checkout-idem-1")
      assert.strictEqual(first.status, 202)
      const body = yield* json(first)
      const repeat = yield* post("/checkout", order("idem-1"), "checkout-idem-1")
      assert.strictEqual(repeat.status, 202)
      assert.strictEqual(repeat.headers["idempotent-replayed"], "true")
      assert.deepStrictEqual(yield* json(repeat), body)

      const other = yield* post("/checkout", order("idem-2"), "checkout-idem-1")
      assert.strictEqual(other.status, 422)
      assert.strictEqual((yield* get("/orders/idem-2")).status, 404)

      yield* finished("idem-1")
      assert.strictEqual((yield* books).order("idem-1").charges.length, 1)
    }).pipe(Effect.provide(TestServer)))

  it.live("POST /webhooks/payments: a signed confirmation delivered five times signals the run once", () =>
    Effect.gen(function*() {
      // a card the provider never confirms: only the webhook below can confirm it
      yield* post("/checkout", order("hook-1", { paymentMethod: Payments.TestCards.noConfirmation }))
      let view = yield* json(yield* get("/orders/hook-1"))
      for (let i = 0; i < 200 && view.status !== "waiting"; i++) {
        yield* Effect.sleep("25 millis")
        view = yield* json(yield* get("/orders/hook-1"))
      }
      assert.strictEqual(view.status, "waiting")
      const charge = (yield* books).order("hook-1").charges[0]!
      const signature = { secret: "whsec_memento_checkout_demo", header: "webhook-signature" }
      const event = PaymentWebhook.eventOf({ runId: "hook-1", chargeId: charge.id, amountCents: charge.amountCents })
      const text = JSON.stringify(event)
      const deliver = (signed: string) =>
        Effect.flatMap(
          HttpClient.HttpClient,
          (client) =>
            client.execute(
              HttpClientRequest.post("/webhooks/payments").pipe(
                HttpClientRequest.setHeader("webhook-signature", signed),
                HttpClientRequest.bodyText(text, "application/json")
              )
            )
        )

      // a wrong signature is refused and stores nothing
      const forged = yield* deliver(Webhook.sign({ ...signature, secret: "not-the-secret" }, {
        body: text,
        timestamp: Date.now()
      }))
      assert.strictEqual(forged.status, 401)

      const answers = yield* Effect.forEach(
        [1, 2, 3, 4, 5],
        () => Effect.flatMap(deliver(Webhook.sign(signature, { body: text, timestamp: Date.now() })), json),
        { concurrency: "unbounded" }
      )
      assert.deepStrictEqual(answers.map((a) => a.duplicate).sort(), [false, true, true, true, true])

      const done = yield* finished("hook-1")
      assert.strictEqual(done.status, "succeeded")
      assert.deepStrictEqual(done.signals.map((s: any) => [s.name, s.signalId]), [["payment-confirmed", charge.id]])
    }).pipe(Effect.provide(TestServer)))

  it.live("the admin API and the dashboard are mounted under /admin", () =>
    Effect.gen(function*() {
      yield* post("/checkout", order("admin-declined", { paymentMethod: Payments.TestCards.declined }))
      yield* finished("admin-declined")

      const list = yield* json(yield* get("/admin/api/runs?status=compensated"))
      assert.deepStrictEqual(list.runs.map((run: any) => [run.id, run.status]), [["admin-declined", "compensated"]])
      const run = yield* json(yield* get("/admin/api/runs/admin-declined"))
      assert.strictEqual(run.run.workflow, "checkout")

      const dashboard = yield* get("/admin/")
      assert.strictEqual(dashboard.status, 200)
      assert.match(dashboard.headers["content-type"] ?? "", /^text\/html/)
      assert.include(yield* Effect.orDie(dashboard.text), "admin-declined")
      const page = yield* Effect.orDie(Effect.flatMap(get("/admin/runs/admin-declined"), (response) => response.text))
      assert.include(page, "<svg")
      assert.include(page, "reserve-inventory")
    }).pipe(Effect.provide(TestServer)))

  it.live("without ADMIN_TOKEN the service refuses a non-loopback address; with it, /admin requires the token", () =>
    Effect.gen(function*() {
      // NodeHttpServer.layerTest listens on 0.0.0.0
      const open = yield* Effect.exit(Effect.provide(
        Effect.void,
        Http.layer.pipe(
          Layer.provideMerge(NodeHttpServer.layerTest),
          Layer.provideMerge(env())
        )
      ))
      assert.isTrue(Exit.isFailure(open))
      assert.include(String(Cause.squash((open as Exit.Failure<unknown, unknown>).cause)), "AdminAuthRequired")

      const withToken = Http.layer.pipe(
        Layer.provideMerge(NodeHttpServer.layerTest),
        Layer.provideMerge(env()),
        Layer.provide(Layer.setConfigProvider(ConfigProvider.fromMap(new Map([["ADMIN_TOKEN", "s3cret-token"]]))))
      )
      yield* Effect.gen(function*() {
        assert.strictEqual((yield* get("/admin/api/runs")).status, 401)
        const authorized = yield* Effect.flatMap(
          HttpClient.HttpClient,
          (client) =>
            client.execute(
              HttpClientRequest.get("/admin/api/runs").pipe(
                HttpClientRequest.bearerToken("s3cret-token")
              )
            )
        )
        assert.strictEqual(authorized.status, 200)
        // the rest of the API needs no token
        assert.strictEqual((yield* get("/health")).status, 200)
      }).pipe(Effect.provide(withToken))
    }))
})
