import * as HttpRouter from "@effect/platform/HttpRouter"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Webhook } from "@memento/http"
import { SqlStore } from "@memento/sql"
import { Workflow, WorkflowClient } from "@memento/workflow"
import { Effect, Layer, Schema } from "effect"
import type { Scope } from "effect"
import { randomUUID } from "node:crypto"
import type { Database } from "./utils.js"
import { offsetClock, post, postgres, serve, sqlite } from "./utils.js"

const Payment = Workflow.make({
  name: "webhook-payment",
  payload: Schema.Struct({ paymentId: Schema.String, amount: Schema.Number }),
  success: Schema.Void
})

const Event = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("payment.succeeded", "payment.confirmed", "payment.broken"),
  paymentId: Schema.String,
  amount: Schema.Number,
  runId: Schema.optional(Schema.String)
})

class Broken extends Schema.TaggedError<Broken>()("Broken", { eventId: Schema.String }) {}

const signature: Webhook.Signature = { secret: "whsec_test", header: "provider-signature", tolerance: "5 minutes" }

/** The app: `/start` starts a run per event (random workflow IDs: only the de-duplication prevents a second run). */
const makeApp = (clock: ReturnType<typeof offsetClock>) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const router = HttpRouter.empty.pipe(
      HttpRouter.post(
        "/start",
        Webhook.receive({
          source: "payments",
          signature,
          schema: Event,
          eventId: (event) => event.id,
          handle: (event) =>
            Effect.gen(function*() {
              yield* client.start(Payment, { paymentId: event.paymentId, amount: event.amount }, { id: randomUUID() })
              // a failure after the start rolls the start back too
              if (event.type === "payment.broken") return yield* new Broken({ eventId: event.id })
            })
        })
      ),
      HttpRouter.post(
        "/signal",
        Webhook.receive({
          source: "payments",
          signature,
          schema: Event,
          eventId: (event) => event.id,
          // a random signal ID: only the de-duplication prevents a second signal
          handle: (event) =>
            client.signal(event.runId!, "confirmed", { amount: event.amount }, { signalId: randomUUID() })
        })
      )
    )
    return yield* serve(HttpRouter.toHttpApp(router).pipe(Effect.flatten, Effect.withClock(clock.clock)))
  })

const deliver = (body: unknown, options: { readonly at?: number; readonly header?: string } = {}) => {
  const text = JSON.stringify(body)
  const header = options.header ?? Webhook.sign(signature, { body: text, timestamp: options.at ?? Date.now() })
  return (path: string) => post(path, text, { "provider-signature": header })
}

const suite = (database: Database) =>
  describe(`Webhook.receive on ${database.name}`, () => {
    const withMemento = <A, E>(
      effect: Effect.Effect<
        A,
        E,
        WorkflowClient.WorkflowClient | Webhook.WebhookStore | SqlClient.SqlClient | Scope.Scope
      >
    ) =>
      Effect.provide(
        effect,
        Layer.mergeAll(WorkflowClient.layer.pipe(Layer.provideMerge(SqlStore.layer())), Webhook.layer()).pipe(
          Layer.provideMerge(database.fresh())
        )
      ).pipe(Effect.scoped)

    const countRuns = Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      return (yield* client.list({ workflow: Payment.name, limit: 1000 })).runs.length
    })
    const countEvents = Effect.flatMap(
      SqlClient.SqlClient,
      (sql) => sql<{ readonly n: number }>`SELECT count(*) AS n FROM memento_webhook_events`
    ).pipe(Effect.map((rows) => Number(rows[0]!.n)))

    it.live("a bad, missing or stale signature gets 401 and stores nothing", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        const event = { id: "evt_1", type: "payment.succeeded", paymentId: "p1", amount: 10 }
        const text = JSON.stringify(event)
        const now = Date.now()
        const forged = Webhook.sign({ ...signature, secret: "another secret" }, { body: text, timestamp: now })
        const tampered = Webhook.sign(signature, { body: JSON.stringify({ ...event, amount: 1000 }), timestamp: now })
        const stale = Webhook.sign(signature, { body: text, timestamp: now - 6 * 60_000 })
        const cases: ReadonlyArray<readonly [string, Record<string, string>]> = [
          ["forged", { "provider-signature": forged }],
          ["tampered", { "provider-signature": tampered }],
          ["stale", { "provider-signature": stale }],
          ["missing", {}],
          ["garbage", { "provider-signature": "t=abc,v1=zz" }]
        ]
        for (const [name, headers] of cases) {
          const response = yield* send(post("/start", text, headers))
          assert.strictEqual(response.status, 401, name)
          assert.strictEqual(response.headers["content-type"], "application/problem+json", name)
          assert.strictEqual(response.json.status, 401, name)
        }
        assert.include((yield* send(post("/start", text, { "provider-signature": stale }))).json.detail, "tolerance")
        assert.strictEqual(yield* countEvents, 0)
        assert.strictEqual(yield* countRuns, 0)
        // the genuine delivery, four minutes late, is accepted
        const late = yield* send(deliver(event, { at: now - 4 * 60_000 })("/start"))
        assert.strictEqual(late.status, 200)
        assert.strictEqual(yield* countRuns, 1)
      })))

    it.live("a webhook delivered five times, one after the other, starts one run", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        const event = { id: "evt_seq", type: "payment.succeeded", paymentId: "p2", amount: 20 }
        const responses = yield* Effect.forEach([1, 2, 3, 4, 5], () => send(deliver(event)("/start")))
        assert.deepStrictEqual(responses.map((r) => r.status), [200, 200, 200, 200, 200])
        assert.deepStrictEqual(responses.map((r) => r.json.duplicate), [false, true, true, true, true])
        assert.deepStrictEqual(responses[0]!.json, {
          received: true,
          source: "payments",
          eventId: "evt_seq",
          duplicate: false
        })
        assert.strictEqual(yield* countRuns, 1)
        assert.strictEqual(yield* countEvents, 1)
      })))

    it.live("five concurrent deliveries of one webhook start one run", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        for (const id of ["evt_a", "evt_b", "evt_c"]) {
          const event = { id, type: "payment.succeeded", paymentId: id, amount: 30 }
          const responses = yield* Effect.forEach([1, 2, 3, 4, 5], () => send(deliver(event)("/start")), {
            concurrency: "unbounded"
          })
          assert.deepStrictEqual(responses.map((r) => r.status), [200, 200, 200, 200, 200])
          assert.strictEqual(responses.filter((r) => r.json.duplicate === false).length, 1)
        }
        assert.strictEqual(yield* countRuns, 3)
        assert.strictEqual(yield* countEvents, 3)
      })))

    it.live("a failing handler rolls back the record and the run it started, while other starts are batched", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        const client = yield* WorkflowClient.WorkflowClient
        const broken = { id: "evt_broken", type: "payment.broken", paymentId: "p3", amount: 40 }
        // other callers' starts keep the store's create batches busy meanwhile (Postgres batches creates)
        const [, responses] = yield* Effect.all([
          Effect.forEach(
            Array.from({ length: 200 }, (_, i) => i),
            (i) => client.start(Payment, { paymentId: `other-${i}`, amount: i }, { id: `other-${i}` }),
            { concurrency: 50 }
          ),
          Effect.forEach([1, 2, 3, 4, 5], () => send(deliver(broken)("/start")), { concurrency: "unbounded" })
        ], { concurrency: "unbounded" })
        assert.deepStrictEqual(responses.map((r) => r.status), [500, 500, 500, 500, 500])
        assert.strictEqual(yield* countRuns, 200)
        assert.strictEqual(yield* countEvents, 0)
        // the sender retries after a fix: now it is recorded, once
        const fixed = yield* send(deliver({ ...broken, type: "payment.succeeded" })("/start"))
        assert.strictEqual(fixed.json.duplicate, false)
        assert.strictEqual(yield* countRuns, 201)
      })))

    it.live("signal mode: five deliveries (sequential and concurrent) signal the run once", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        const client = yield* WorkflowClient.WorkflowClient
        const run = yield* client.start(Payment, { paymentId: "p4", amount: 50 }, { id: "run-p4" })
        const first = { id: "evt_confirm_1", type: "payment.confirmed", paymentId: "p4", amount: 50, runId: run.id }
        const second = { ...first, id: "evt_confirm_2" }
        yield* Effect.forEach([1, 2, 3, 4, 5], () => send(deliver(first)("/signal")))
        yield* Effect.forEach([1, 2, 3, 4, 5], () => send(deliver(second)("/signal")), { concurrency: "unbounded" })
        const details = yield* client.inspect(run.id)
        assert.deepStrictEqual(details.signals.map((s) => s.name), ["confirmed", "confirmed"])
        // a signal for an unknown run fails the delivery and records nothing: the sender retries
        const unknown = yield* send(deliver({ ...first, id: "evt_x", runId: "no-such-run" })("/signal"))
        assert.strictEqual(unknown.status, 500)
        assert.strictEqual(yield* countEvents, 2)
      })))

    it.live("an undecodable body gets 400 and stores nothing", () =>
      withMemento(Effect.gen(function*() {
        const send = yield* makeApp(offsetClock())
        const response = yield* send(deliver({ id: "evt_bad", type: "unknown" })("/start"))
        assert.strictEqual(response.status, 400)
        assert.strictEqual(response.headers["content-type"], "application/problem+json")
        assert.strictEqual(yield* countEvents, 0)
      })))

    it.live("purge deletes records older than the retention", () =>
      withMemento(Effect.gen(function*() {
        const clock = offsetClock()
        const send = yield* makeApp(clock)
        yield* send(deliver({ id: "evt_old", type: "payment.succeeded", paymentId: "p5", amount: 1 })("/start"))
        assert.strictEqual(yield* Webhook.purge({ olderThan: "1 day" }).pipe(Effect.withClock(clock.clock)), 0)
        yield* clock.advance("2 days")
        assert.strictEqual(yield* Webhook.purge({ olderThan: "1 day" }).pipe(Effect.withClock(clock.clock)), 1)
        assert.strictEqual(yield* countEvents, 0)
      })))
  })

suite(sqlite)
suite(postgres)
