// The example of README.md, run by the test suite.
import { HttpRouter, HttpServer, HttpServerRequest, HttpServerResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { IdempotencyKey, Webhook } from "@memento/http"
import { SqlStore } from "@memento/sql"
import { Workflow, WorkflowClient } from "@memento/workflow"
import { Effect, Layer, Schema } from "effect"
import { createServer } from "node:http"

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number })
const Checkout = Workflow.make({ name: "checkout", payload: Order, idempotencyKey: (order) => order.orderId })

const signature: Webhook.Signature = { secret: "whsec_example", header: "provider-signature" }

const router = HttpRouter.empty.pipe(
  // POST /checkout requires an Idempotency-Key; a repeat gets the stored 202
  HttpRouter.post(
    "/checkout",
    Effect.gen(function*() {
      const order = yield* HttpServerRequest.schemaBodyJson(Order)
      const run = yield* WorkflowClient.WorkflowClient.pipe(Effect.flatMap((client) => client.start(Checkout, order)))
      return yield* HttpServerResponse.json({ runId: run.id }, { status: 202 })
    }).pipe(
      IdempotencyKey.middleware({
        principal: (request) => Effect.succeed(request.headers["x-api-client"] ?? "anonymous")
      })
    )
  ),
  // the payment provider's confirmations: verified, de-duplicated, signalled in one transaction
  HttpRouter.post(
    "/webhooks/payments",
    Webhook.receive({
      source: "payments",
      signature,
      schema: Schema.Struct({ id: Schema.String, orderId: Schema.String }),
      eventId: (event) => event.id,
      handle: (event) =>
        Effect.flatMap(
          WorkflowClient.WorkflowClient,
          (client) => client.signal(event.orderId, "payment-confirmed", true, { signalId: event.id })
        )
    })
  )
)

export const MementoLive = WorkflowClient.layer.pipe(
  Layer.provideMerge(Layer.mergeAll(IdempotencyKey.layer({ purgeEvery: "1 hour" }), Webhook.layer())),
  Layer.provideMerge(SqlStore.layerSqlite({ filename: "memento.db" })) // or SqlStore.layerPg({ url })
)

export const ServerLive = HttpServer.serve(router).pipe(
  Layer.provide(NodeHttpServer.layer(createServer, { port: 3000 })),
  Layer.provide(MementoLive)
)
// NodeRuntime.runMain(Layer.launch(ServerLive))

// ---- the test (not in the README) ----
import { assert, it } from "@effect/vitest"
import { tempSqliteFile } from "../../sql/test/utils/database.js"

it.live("the README example", () =>
  Effect.gen(function*() {
    const sqlite = SqlStore.layerSqlite({ filename: tempSqliteFile() })
    const memento = WorkflowClient.layer.pipe(
      Layer.provideMerge(Layer.mergeAll(IdempotencyKey.layer(), Webhook.layer())),
      Layer.provideMerge(sqlite)
    )
    const context = yield* Layer.build(
      HttpServer.serve(router).pipe(
        Layer.provideMerge(NodeHttpServer.layer(createServer, { port: 0 })),
        Layer.provideMerge(memento)
      )
    )
    const server = yield* Effect.provide(HttpServer.HttpServer, context)
    const base = `http://127.0.0.1:${(server.address as HttpServer.TcpAddress).port}`
    const checkout = () =>
      Effect.promise(() =>
        fetch(`${base}/checkout`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": "a1b2" },
          body: JSON.stringify({ orderId: "o-1", amount: 20 })
        })
      )
    const first = yield* checkout()
    const second = yield* checkout()
    assert.deepStrictEqual([first.status, second.status], [202, 202])
    assert.strictEqual(second.headers.get("idempotent-replayed"), "true")

    const body = JSON.stringify({ id: "evt_1", orderId: "o-1" })
    const deliver = () =>
      Effect.promise(() =>
        fetch(`${base}/webhooks/payments`, {
          method: "POST",
          headers: { "provider-signature": Webhook.sign(signature, { body, timestamp: Date.now() }) },
          body
        }).then((response) => response.json() as Promise<Webhook.Received>)
      )
    assert.strictEqual((yield* deliver()).duplicate, false)
    assert.strictEqual((yield* deliver()).duplicate, true)
    const client = yield* Effect.provide(WorkflowClient.WorkflowClient, context)
    assert.strictEqual((yield* client.inspect("o-1")).signals.length, 1)
  }).pipe(Effect.scoped))
