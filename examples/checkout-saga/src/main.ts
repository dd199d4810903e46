/**
 * The checkout service: HTTP API, an in-process worker (unless `WORKER=false`) and, on first
 * start, a scripted scenario driven through the API. Storage is an embedded SQLite file by default
 * and Postgres when `DATABASE_URL` is set (see `App.ts`); the API listens on `PORT` (default
 * 3000). SIGTERM and SIGINT shut down gracefully: the server stops accepting requests and the
 * worker lets running steps finish (or releases their leases).
 */
import { createServer } from "node:http"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpServer from "@effect/platform/HttpServer"
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Config, Console, Effect, Layer } from "effect"
import { BaseLive, describeStorage, WorkerLive } from "./App.js"
import * as Http from "./Http.js"
import * as Scenario from "./Scenario.js"
import { TracingLive } from "./Tracing.js"

const ServerLive = NodeHttpServer.layerConfig(() => createServer(), {
  port: Config.integer("PORT").pipe(Config.withDefault(3000))
})

const AppLive = Http.layer.pipe(
  Layer.provideMerge(ServerLive),
  Layer.provideMerge(BaseLive),
  Layer.provide(TracingLive)
)

const exampleOrder = {
  orderId: "o-1",
  email: "you@example.com",
  items: [{ sku: "mug", quantity: 1 }],
  paymentMethod: "pm_card_visa",
  shippingAddress: { name: "You", line1: "1 Main St", city: "Springfield", postalCode: "12345", country: "US" }
}

const program = Effect.gen(function*() {
  const port = yield* HttpServer.addressWith((address) =>
    Effect.succeed(address._tag === "TcpAddress" ? address.port : 3000)
  )
  const baseUrl = `http://localhost:${port}`
  yield* Console.log(`Memento checkout service — storage: ${yield* describeStorage}`)
  yield* Console.log(`Checkout API listening on ${baseUrl}\n`)
  // the in-process worker starts now, or — on first start — when the scenario has crashed the
  // worker process it drives, so that it is the one that recovers the run
  const workerEnabled = yield* Config.boolean("WORKER").pipe(Config.withDefault(true))
  const scope = yield* Effect.scope
  const startWorker = yield* Effect.once(workerEnabled ? Effect.asVoid(Layer.buildWithScope(WorkerLive, scope)) : Effect.void)
  yield* Scenario.runOnFirstStart(baseUrl, { startWorker, workerEnabled })
  yield* startWorker
  yield* Console.log(`
Serving on ${baseUrl} (Ctrl-C to stop):
  POST ${baseUrl}/checkout       start a checkout (JSON order, Idempotency-Key header) -> 202 { runId }
  POST ${baseUrl}/webhooks/payments  the payment provider's signed confirmations
  GET  ${baseUrl}/orders/:id     status and saga progress, e.g. ${baseUrl}/orders/demo-good-1
  GET  ${baseUrl}/ledger         the providers' books and the saga's invariants
  GET  ${baseUrl}/health
Try:
  curl -s -X POST ${baseUrl}/checkout -H 'content-type: application/json' -H 'idempotency-key: try-o-1' \\
    -d '${JSON.stringify(exampleOrder)}'
  curl -s ${baseUrl}/orders/o-1`)
  return yield* Effect.never.pipe(
    Effect.onInterrupt(() =>
      Console.log("\nShutting down: the server stops, the worker finishes or releases its runs.")
    )
  )
}).pipe(
  Effect.scoped,
  Effect.provide(AppLive),
  Effect.provide(FetchHttpClient.layer)
)

NodeRuntime.runMain(program)
