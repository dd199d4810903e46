/**
 * Alerts on a real database (a temporary SQLite file), in real time: an alert claimed by a
 * dispatcher that dies before marking it delivered is delivered after the restart and recorded
 * delivered once; the webhook sender POSTs it to a real local HTTP server with the alert's id as
 * `Idempotency-Key`, retries 5xx responses and fails typed on other non-2xx responses.
 */
import * as FetchHttpClient from "@effect/platform/FetchHttpClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Alerts, Step, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Deferred, Effect, Exit, Layer, Schedule, Schema, Scope } from "effect"
import type { IncomingHttpHeaders } from "node:http"
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { tempSqliteFile } from "./utils/database.js"
import { ns, settings, waitUntil, workerLayer } from "./utils/engine.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

interface Received {
  readonly method: string | undefined
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

/**
 * A real HTTP server on a free local port. `respond(n)` gives the status of the n-th request
 * (1-based); every request is recorded.
 */
const httpServer = (respond: (n: number) => number = () => 200) =>
  Effect.acquireRelease(
    Effect.async<{ readonly url: string; readonly received: Array<Received>; readonly close: () => Promise<void> }>(
      (resume) => {
        const received: Array<Received> = []
        const server = createServer((request, response) => {
          let body = ""
          request.setEncoding("utf8")
          request.on("data", (chunk: string) => {
            body += chunk
          })
          request.on("end", () => {
            received.push({ method: request.method, headers: request.headers, body })
            response.statusCode = respond(received.length)
            response.end(response.statusCode < 300 ? "ok" : "not now")
          })
        })
        server.listen(0, "127.0.0.1", () => {
          const { port } = server.address() as AddressInfo
          resume(Effect.succeed({
            url: `http://127.0.0.1:${port}/alerts`,
            received,
            close: () =>
              new Promise<void>((done) => {
                server.closeAllConnections()
                server.close(() => done())
              })
          }))
        })
      }
    ),
    (server) => Effect.promise(server.close)
  )

const failing = (id: string) => {
  const W = Workflow.make({ name: `alerting-${id}`, payload: Schema.String, error: Declined })
  const implementations = W.implement((reason) =>
    Step.run(
      "charge",
      { success: Schema.Void, error: Declined, retryOn: () => false },
      Effect.fail(new Declined({ reason }))
    )
  )
  return { W, implementations }
}

/** Fast polls and a short lease: a redelivery after a crash takes about a second. */
const dispatcherOptions: Alerts.Options = { lease: "1 second", pollInterval: "100 millis", retry: Schedule.recurs(0) }

describe("alerts on SQLite", () => {
  it.scopedLive(
    "an alert claimed by a dispatcher that died is delivered after the restart, once, with its key",
    () =>
      Effect.gen(function*() {
        const filename = tempSqliteFile()
        const server = yield* httpServer()
        const { W, implementations } = failing(ns())

        // Process 1: a worker, and a dispatcher that dies while delivering (its handler never returns).
        const first = yield* Scope.make()
        const claimed = yield* Deferred.make<Alerts.Alert>()
        const process1 = yield* Layer.buildWithScope(
          Layer.mergeAll(
            WorkflowClient.layer,
            workerLayer({ workflows: [W], implementations }),
            Alerts.layer((alert) => Effect.zipRight(Deferred.succeed(claimed, alert), Effect.never), dispatcherOptions)
          ).pipe(
            Layer.provideMerge(SqlStore.layerSqlite({ filename })),
            Layer.provideMerge(WorkflowConfig.layer(settings))
          ),
          first
        )
        const { id } = yield* Effect.flatMap(
          WorkflowClient.WorkflowClient,
          (client) => client.start(W, "card expired", { id: "crash-1" })
        ).pipe(Effect.provide(process1))
        const inFlight = yield* Deferred.await(claimed).pipe(Effect.timeout("15 seconds"))
        assert.strictEqual(inFlight.runId, id)
        assert.strictEqual(inFlight.attempt, 1)
        yield* Scope.close(first, Exit.void)

        // Process 2 (the restart): only a dispatcher, sending webhooks.
        const second = yield* Scope.make()
        const process2 = yield* Layer.buildWithScope(
          Alerts.layer(Alerts.webhook(server.url, { retry: Schedule.recurs(0) }), dispatcherOptions).pipe(
            Layer.provide(FetchHttpClient.layer),
            Layer.provideMerge(SqlStore.layerSqlite({ filename }))
          ),
          second
        )
        const store = yield* Effect.provide(WorkflowStore, process2)
        const pending = yield* store.alerts(id)
        assert.strictEqual(pending.length, 1)
        yield* waitUntil(Effect.sync(() => server.received.length >= 1), { what: "the webhook" })
        yield* waitUntil(Effect.map(store.alerts(id), (alerts) => alerts[0].deliveredAt !== null), {
          what: "the alert to be recorded delivered"
        })
        // Several leases and polls later, nothing more was sent.
        yield* Effect.sleep("2500 millis")
        assert.strictEqual(server.received.length, 1)

        const [request] = server.received
        assert.strictEqual(request.method, "POST")
        assert.strictEqual(request.headers["idempotency-key"], inFlight.id)
        assert.include(String(request.headers["content-type"]), "application/json")
        const alert = yield* Schema.decodeUnknown(Schema.parseJson(Alerts.Alert))(request.body)
        assert.strictEqual(alert.id, inFlight.id)
        assert.strictEqual(alert.runId, id)
        assert.strictEqual(alert.workflow, W.name)
        assert.strictEqual(alert.status, "failed")
        assert.strictEqual(alert.message, "Declined {\"reason\":\"card expired\"}")
        assert.strictEqual(alert.attempt, 2, "claimed a second time after the lease")
        assert.strictEqual(alert.createdAt.getTime(), inFlight.createdAt.getTime())

        const [record] = yield* store.alerts(id)
        assert.strictEqual(record.id, inFlight.id)
        assert.strictEqual(record.attempts, 2)
        assert.isNotNull(record.deliveredAt)
        yield* Scope.close(second, Exit.void)
      }),
    { timeout: 60_000 }
  )

  it.scopedLive("the webhook retries a 5xx response with the same Idempotency-Key", () =>
    Effect.gen(function*() {
      const server = yield* httpServer((n) => n <= 2 ? 503 : 204)
      const alert = new Alerts.Alert({
        id: "run-1/1/failed",
        runId: "run-1",
        workflow: "checkout",
        status: "failed",
        message: "Declined",
        error: null,
        createdAt: new Date(0),
        attempt: 1
      })
      yield* Alerts.webhook(server.url, {
        retry: Schedule.spaced("20 millis"),
        headers: { authorization: "Bearer s3cret" }
      })(alert).pipe(Effect.provide(FetchHttpClient.layer))
      assert.strictEqual(server.received.length, 3)
      assert.deepStrictEqual(server.received.map((r) => r.headers["idempotency-key"]), [alert.id, alert.id, alert.id])
      assert.strictEqual(server.received[2].headers.authorization, "Bearer s3cret")
      assert.deepStrictEqual(JSON.parse(server.received[2].body), {
        id: "run-1/1/failed",
        runId: "run-1",
        workflow: "checkout",
        status: "failed",
        message: "Declined",
        error: null,
        createdAt: "1970-01-01T00:00:00.000Z",
        attempt: 1
      })
    }))

  it.scopedLive("a non-2xx response that is not worth retrying fails with WebhookError at once", () =>
    Effect.gen(function*() {
      const server = yield* httpServer(() => 400)
      const alert = new Alerts.Alert({
        id: "run-2/1/dead",
        runId: "run-2",
        workflow: "checkout",
        status: "dead",
        message: "recovered 5 times",
        error: null,
        createdAt: new Date(0),
        attempt: 1
      })
      const error = yield* Effect.flip(
        Alerts.webhook(server.url, { retry: Schedule.spaced("20 millis") })(alert).pipe(
          Effect.provide(FetchHttpClient.layer)
        )
      )
      assert.instanceOf(error, Alerts.WebhookError)
      assert.strictEqual(error.status, 400)
      assert.strictEqual(error.url, server.url)
      assert.include(error.message, "HTTP 400")
      assert.strictEqual(server.received.length, 1)

      // A server that is not there: a transport error, retried, then WebhookError without status.
      yield* Effect.promise(server.close)
      const down = yield* Effect.flip(
        Alerts.webhook(server.url, { retry: Schedule.recurs(1) })(alert).pipe(Effect.provide(FetchHttpClient.layer))
      )
      assert.instanceOf(down, Alerts.WebhookError)
      assert.isNull(down.status)
    }))
})
