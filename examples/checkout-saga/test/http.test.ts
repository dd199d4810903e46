/**
 * The HTTP API on a real server (random port) and a real SQLite file.
 */
import { assert, describe, it } from "@effect/vitest"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import { Effect, Layer } from "effect"
import * as Http from "../src/Http.js"
import * as Payments from "../src/providers/Payments.js"
import { env, order } from "./utils.js"

const TestServer = Http.layer.pipe(Layer.provideMerge(NodeHttpServer.layerTest), Layer.provideMerge(env()))

const post = (path: string, body: unknown) =>
  Effect.flatMap(HttpClient.HttpClient, (client) =>
    client.execute(HttpClientRequest.post(path).pipe(HttpClientRequest.bodyUnsafeJson(body))))

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
        client.execute(HttpClientRequest.post("/checkout").pipe(HttpClientRequest.bodyText("{", "application/json"))))
      assert.strictEqual(notJson.status, 400)

      const tooLarge = yield* post("/checkout", { ...order("large-1"), note: "x".repeat(70_000) })
      assert.strictEqual(tooLarge.status, 413)
      assert.strictEqual((yield* json(tooLarge)).title, "Order too large")

      const missing = yield* get("/orders/nope")
      assert.strictEqual(missing.status, 404)
      assert.strictEqual(missing.headers["content-type"], "application/problem+json")
      assert.strictEqual((yield* get("/no-such-route")).status, 404)
      assert.deepStrictEqual(yield* json(yield* get("/health")), { status: "ok" })
    }).pipe(Effect.provide(TestServer)))
})
