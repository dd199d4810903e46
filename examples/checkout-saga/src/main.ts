/**
 * The checkout service: HTTP API, an in-process worker (unless `WORKER=false`) and, on first
 * start, a scripted scenario driven through the API. Storage is an embedded SQLite file by default
 * and Postgres when `DATABASE_URL` is set (see `App.ts`); the API listens on `PORT` (default
 * 3000) on `HOST` (default 127.0.0.1: the admin API and dashboard under `/admin` need no token
 * on a loopback address; set `ADMIN_TOKEN` to listen elsewhere). SIGTERM and SIGINT shut down
 * gracefully: the server stops accepting requests and the worker lets running steps finish (or
 * releases their leases).
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import * as HttpServer from "@effect/platform/HttpServer"
import { Config, Console, Effect, Layer } from "effect"
import { createServer } from "node:http"
import { BaseLive, describeStorage, WorkerLive } from "./App.js"
import * as Http from "./Http.js"
import * as Scenario from "./Scenario.js"
import { TracingLive } from "./Tracing.js"

const ServerLive = NodeHttpServer.layerConfig(() => createServer(), {
  port: Config.integer("PORT").pipe(Config.withDefault(3000)),
  host: Config.string("HOST").pipe(Config.withDefault("127.0.0.1"))
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
  const { host, port } = yield* HttpServer.addressWith((address) =>
    Effect.succeed(
      address._tag === "TcpAddress" ? { host: address.hostname, port: address.port } : { host: "", port: 3000 }
    )
  )
  const baseUrl = `http://localhost:${port}`
  // what the scenario and its worker process call: the address the server listens on
  const callUrl = host === "127.0.0.1" || host === "::1"
    ? `http://${host.includes(":") ? `[${host}]` : host}:${port}`
    : baseUrl
  yield* Console.log(`Memento checkout service — storage: ${yield* describeStorage}`)
  yield* Console.log(`Checkout API listening on ${baseUrl}, dashboard on ${baseUrl}/admin/\n`)
  // the in-process worker starts now, or — on first start — when the scenario has crashed the
  // worker process it drives, so that it is the one that recovers the run
  const workerEnabled = yield* Config.boolean("WORKER").pipe(Config.withDefault(true))
  const scope = yield* Effect.scope
  const startWorker = yield* Effect.once(
    workerEnabled ? Effect.asVoid(Layer.buildWithScope(WorkerLive, scope)) : Effect.void
  )
  const ranScenario = yield* Scenario.runOnFirstStart(callUrl, { startWorker, workerEnabled })
  yield* startWorker
  yield* Console.log(`
Serving on ${baseUrl} (Ctrl-C to stop):
  POST ${baseUrl}/checkout       start a checkout (JSON order, Idempotency-Key header) -> 202 { runId }
  POST ${baseUrl}/webhooks/payments  the payment provider's signed confirmations
  GET  ${baseUrl}/orders/:id     status and saga progress, e.g. ${baseUrl}/orders/demo-good-1
  GET  ${baseUrl}/ledger         the providers' books and the saga's invariants
  GET  ${baseUrl}/health
  Dashboard: ${baseUrl}/admin/  (runs, each saga's timeline; admin API under ${baseUrl}/admin/api/runs)${
    ranScenario ? `\n             the recovered saga: ${baseUrl}/admin/runs/${Scenario.crashOrder.order.orderId}` : ""
  }
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
