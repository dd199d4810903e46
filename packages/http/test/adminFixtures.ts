/**
 * Shared set-up of the admin API and dashboard tests: a small checkout saga, a real HTTP server
 * (NodeHttpServer on 127.0.0.1, port 0) serving the admin router under `/admin`, a MemoryStore, a
 * WorkflowClient and a Worker, and helpers to call the server and wait for a run's status.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Admin } from "@memento/http"
import { MemoryStore, Step, Worker, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import type { WorkflowStore } from "@memento/workflow"
import { Effect, Layer, Schedule, Schema } from "effect"
import { createServer } from "node:http"

export class CardDeclined extends Schema.TaggedError<CardDeclined>()("CardDeclined", { reason: Schema.String }) {}

export class NoCarrier extends Schema.TaggedError<NoCarrier>()("NoCarrier", { message: Schema.String }) {}

export const Order = Schema.Struct({
  orderId: Schema.String,
  /** Wait for a "payment-confirmed" signal between charging and shipping. */
  confirm: Schema.Boolean
})

export const Checkout = Workflow.make({
  name: "admin-checkout",
  payload: Order,
  success: Schema.Struct({ shipment: Schema.String }),
  error: Schema.Union(CardDeclined, NoCarrier),
  idempotencyKey: (order) => order.orderId
})

/** Switches the tests flip to steer the saga; the implementation reads them when a step runs. */
export interface Control {
  /** Order IDs whose charge is declined (every attempt). */
  readonly decline: Set<string>
  /** Order IDs whose shipment step dies with a defect (parks the run as needs_attention). */
  readonly crash: Set<string>
  /** Order IDs whose shipment finds no carrier (every attempt): the last step fails, the saga compensates. */
  readonly noCarrier: Set<string>
  /** Milliseconds each step takes, so that the timeline has visible bars. */
  stepMs: number
}

export const makeControl = (): Control => ({ decline: new Set(), crash: new Set(), noCarrier: new Set(), stepMs: 0 })

/**
 * reserve-inventory (compensated: release-inventory) → charge-card (2 attempts; compensated:
 * refund) → [await "payment-confirmed"] → create-shipment (2 attempts; compensated: cancel) → done.
 */
export const checkoutLive = (control: Control) =>
  Checkout.implement((order) =>
    Effect.gen(function*() {
      const work = Effect.sleep(control.stepMs)
      const reservation = yield* Step.run("reserve-inventory", {
        success: Schema.String,
        compensate: () => work
      }, Effect.as(work, `res-${order.orderId}`))
      const charge = yield* Step.run(
        "charge-card",
        {
          success: Schema.String,
          error: CardDeclined,
          retry: Schedule.recurs(1),
          compensate: () => work
        },
        Effect.zipRight(
          work,
          Effect.suspend(() =>
            control.decline.has(order.orderId)
              ? Effect.fail(new CardDeclined({ reason: `card of ${order.orderId} declined by the <issuer> & bank` }))
              : Effect.succeed(`ch-${reservation}`)
          )
        )
      )
      if (order.confirm) {
        const confirmed = yield* Workflow.awaitSignal("payment-confirmed", Schema.Struct({ ok: Schema.Boolean })).pipe(
          Effect.catchTag("SignalTimeout", () => Effect.succeed({ ok: false }))
        )
        if (!confirmed.ok) return yield* new CardDeclined({ reason: "the provider did not confirm the payment" })
      }
      const shipment = yield* Step.run(
        "create-shipment",
        {
          success: Schema.String,
          error: NoCarrier,
          retry: Schedule.recurs(1),
          compensate: () => work
        },
        Effect.zipRight(
          work,
          Effect.suspend(() =>
            control.crash.has(order.orderId)
              ? Effect.die("shipping label printer on fire")
              : control.noCarrier.has(order.orderId)
              ? Effect.fail(new NoCarrier({ message: `no carrier <accepts> parcels for ${order.orderId} today` }))
              : Effect.succeed(`sh-${charge}`)
          )
        )
      )
      return { shipment }
    })
  )

export const settings = WorkflowConfig.layer({ pollMs: 50, resultPollMs: 50, leaseMs: 10_000, heartbeatMs: 2_000 })

/** Store (default: a MemoryStore), client and worker, with the config also provided to the test. */
export const memento = <SE = never>(
  control: Control,
  store: Layer.Layer<WorkflowStore.WorkflowStore, SE> = MemoryStore.layer as Layer.Layer<WorkflowStore.WorkflowStore>
) =>
  Layer.mergeAll(
    WorkflowClient.layer,
    Worker.layer({ workflows: [Checkout], concurrency: 10 }).pipe(Layer.provide(checkoutLive(control)))
  ).pipe(Layer.provideMerge(store), Layer.provideMerge(settings))

/** A real HTTP server on `host`, port 0. */
export const server = (host = "127.0.0.1") => NodeHttpServer.layer(createServer, { port: 0, host })

/** An app with its own route and the admin router mounted at `/admin`, as a service would serve it. */
export const app = <E = never, R = never>(options: Admin.Options<E, R> = {}) =>
  Layer.unwrapEffect(Effect.map(Admin.router(options), (admin) =>
    HttpServer.serve(
      HttpRouter.empty.pipe(
        HttpRouter.get("/health", HttpServerResponse.text("ok")),
        HttpRouter.mount("/admin", admin)
      )
    )))

/** The whole environment: server, admin app, store, client and worker. */
export const env = <E = never, R = never, SE = never>(
  control: Control,
  options: Admin.Options<E, R> = {},
  store?: Layer.Layer<WorkflowStore.WorkflowStore, SE>
) => app(options).pipe(Layer.provideMerge(server()), Layer.provideMerge(memento(control, store)))

/** The base URL of the server in context. */
export const baseUrl = Effect.flatMap(HttpServer.HttpServer, (server) =>
  server.address._tag === "TcpAddress"
    ? Effect.succeed(`http://127.0.0.1:${server.address.port}`)
    : Effect.dieMessage("expected a TCP server"))

export interface Reply {
  readonly status: number
  readonly headers: Headers
  readonly text: string
  readonly json: any
}

/** One HTTP request to the server in context. */
export const call = (
  method: string,
  path: string,
  options: { readonly body?: unknown; readonly headers?: Record<string, string>; readonly raw?: string } = {}
): Effect.Effect<Reply, never, HttpServer.HttpServer> =>
  Effect.flatMap(baseUrl, (base) =>
    Effect.promise(async () => {
      const body = options.raw ?? (options.body === undefined ? undefined : JSON.stringify(options.body))
      const response = await fetch(`${base}${path}`, {
        method,
        headers: {
          ...(method === "POST" ? { "content-type": "application/json" } : {}),
          ...options.headers
        },
        ...(body === undefined ? {} : { body })
      })
      const text = await response.text()
      let json: unknown = undefined
      try {
        json = JSON.parse(text)
      } catch {
        // not JSON
      }
      return { status: response.status, headers: response.headers, text, json }
    }))

/** Waits (polling the store every 10 ms, up to 15 s) until the run has one of `statuses`. */
export const awaitStatus = (
  id: string,
  ...statuses: ReadonlyArray<WorkflowStore.RunStatus>
): Effect.Effect<WorkflowStore.RunRecord, unknown, WorkflowClient.WorkflowClient> =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    return yield* client.get(id).pipe(
      Effect.filterOrFail(
        (run) => statuses.includes(run.status),
        (run) => `run ${id} is ${run.status}, waiting for ${statuses.join(" or ")}`
      ),
      Effect.retry(Schedule.spaced("10 millis").pipe(Schedule.upTo("15 seconds")))
    )
  })
