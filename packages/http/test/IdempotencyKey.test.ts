import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { IdempotencyKey } from "@memento/http"
import { Deferred, Effect, Fiber, Layer, Schedule } from "effect"
import type { Scope } from "effect"
import type { Database } from "./utils.js"
import { offsetClock, post, postgres, serve, sqlite } from "./utils.js"

const options = { ttl: "1 hour", inFlightTtl: "10 seconds", retryAfter: "2 seconds", maxResponseBytes: 1000 } as const

/** The test app: counts executions per route; `/slow` waits for `gate`. */
const makeApp = (clock: ReturnType<typeof offsetClock>) =>
  Effect.gen(function*() {
    const executions = { orders: 0, fail: 0, bad: 0, big: 0, slow: 0, die: 0, notFound: 0 }
    const gate = yield* Deferred.make<void>()
    const started = yield* Deferred.make<void>()
    const idempotent = IdempotencyKey.middleware({
      ...options,
      principal: (request) => Effect.succeed(request.headers["x-user"] ?? "anonymous")
    })
    const router = HttpRouter.empty.pipe(
      HttpRouter.post(
        "/orders",
        Effect.gen(function*() {
          const request = yield* HttpServerRequest.HttpServerRequest
          const body = yield* request.json
          executions.orders++
          return HttpServerResponse.unsafeJson({ execution: executions.orders, body }, {
            status: 201,
            headers: { "x-order": `order-${executions.orders}`, "connection": "keep-alive" }
          }).pipe(HttpServerResponse.setCookie("session", "secret"), Effect.orDie)
        }).pipe(Effect.flatten, idempotent)
      ),
      HttpRouter.post(
        "/fail",
        Effect.sync(() => {
          executions.fail++
          return HttpServerResponse.text("upstream down", { status: 503 })
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/bad",
        Effect.sync(() => {
          executions.bad++
          return HttpServerResponse.unsafeJson({ error: "out of stock" }, { status: 409 })
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/die",
        Effect.suspend(() => {
          executions.die++
          return Effect.dieMessage("bug")
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/not-found",
        Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) => {
          executions.notFound++
          return Effect.fail(new HttpServerError.RouteNotFound({ request }))
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/big",
        Effect.sync(() => {
          executions.big++
          return HttpServerResponse.text("x".repeat(5000))
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/slow",
        Effect.gen(function*() {
          executions.slow++
          yield* Deferred.succeed(started, undefined)
          yield* Deferred.await(gate)
          return HttpServerResponse.unsafeJson({ execution: executions.slow })
        }).pipe(idempotent)
      ),
      HttpRouter.post(
        "/small",
        Effect.sync(() => {
          executions.orders++
          return HttpServerResponse.text("ok")
        }).pipe(IdempotencyKey.middleware({ maxRequestBytes: 100 }))
      ),
      HttpRouter.post(
        "/optional",
        Effect.succeed(HttpServerResponse.text("ok")).pipe(IdempotencyKey.middleware({ required: false }))
      )
    )
    const send = yield* serve(HttpRouter.toHttpApp(router).pipe(Effect.flatten, Effect.withClock(clock.clock)))
    return { send, executions, gate, started }
  })

const suite = (database: Database) =>
  describe(`IdempotencyKey on ${database.name}`, () => {
    const withStore = <A, E>(
      effect: Effect.Effect<A, E, IdempotencyKey.IdempotencyStore | SqlClient.SqlClient | Scope.Scope>
    ) => Effect.provide(effect, IdempotencyKey.layer().pipe(Layer.provideMerge(database.fresh()))).pipe(Effect.scoped)

    it.live("the first request is processed; a repeat gets the stored response with Idempotent-Replayed", () =>
      withStore(Effect.gen(function*() {
        const clock = offsetClock()
        const { executions, send } = yield* makeApp(clock)
        const first = yield* send(post("/orders", { item: "book", qty: 1 }, { "idempotency-key": "k-1" }))
        assert.strictEqual(first.status, 201)
        assert.strictEqual(first.headers["idempotent-replayed"], undefined)
        assert.deepStrictEqual(first.json, { execution: 1, body: { item: "book", qty: 1 } })
        assert.isDefined(first.headers["set-cookie"])

        // same request, keys in another order: the same JSON body
        const again = yield* send(post("/orders", "{ \"qty\": 1, \"item\": \"book\" }", { "idempotency-key": "k-1" }))
        assert.strictEqual(again.status, 201)
        assert.strictEqual(again.headers["idempotent-replayed"], "true")
        assert.strictEqual(again.headers["x-order"], "order-1")
        assert.strictEqual(again.headers["content-type"], "application/json")
        assert.strictEqual(again.headers["set-cookie"], undefined)
        assert.strictEqual(again.text, first.text)
        assert.strictEqual(executions.orders, 1)

        // the quoted Structured Field form names the same key
        const quoted = yield* send(post("/orders", { item: "book", qty: 1 }, { "idempotency-key": "\"k-1\"" }))
        assert.strictEqual(quoted.headers["idempotent-replayed"], "true")
        assert.strictEqual(executions.orders, 1)

        // another key is another request
        const other = yield* send(post("/orders", { item: "book", qty: 1 }, { "idempotency-key": "k-2" }))
        assert.deepStrictEqual(other.json, { execution: 2, body: { item: "book", qty: 1 } })
      })))

    it.live("the same key with another body, path or principal", () =>
      withStore(Effect.gen(function*() {
        const { executions, send } = yield* makeApp(offsetClock())
        yield* send(post("/orders", { item: "book" }, { "idempotency-key": "k" }))
        const mismatch = yield* send(post("/orders", { item: "pen" }, { "idempotency-key": "k" }))
        assert.strictEqual(mismatch.status, 422)
        assert.strictEqual(mismatch.headers["content-type"], "application/problem+json")
        assert.strictEqual(mismatch.json.status, 422)
        assert.strictEqual(mismatch.json.title, "Idempotency-Key reused for another request")
        assert.include(mismatch.json.type, "mismatch")
        assert.strictEqual(executions.orders, 1)
        // another principal has keys of its own
        const bob = yield* send(post("/orders", { item: "pen" }, { "idempotency-key": "k", "x-user": "bob" }))
        assert.strictEqual(bob.status, 201)
        assert.strictEqual(executions.orders, 2)
      })))

    it.live("a missing or invalid key gets 400, a body over the limit 413, as problem+json; nothing runs", () =>
      withStore(Effect.gen(function*() {
        const { executions, send } = yield* makeApp(offsetClock())
        const missing = yield* send(post("/orders", { item: "book" }))
        assert.strictEqual(missing.status, 400)
        assert.strictEqual(missing.headers["content-type"], "application/problem+json")
        assert.strictEqual(missing.json.title, "Idempotency-Key is missing")
        for (const bad of ["\"\"", "a b", "k,l", "\"unterminated", "\"x\";p=1", "x".repeat(256), "\"é\""]) {
          const response = yield* send(post("/orders", { item: "book" }, { "idempotency-key": bad }))
          assert.strictEqual(response.status, 400, bad)
          assert.strictEqual(response.json.title, "Idempotency-Key is invalid", bad)
        }
        assert.strictEqual(executions.orders, 0)
        const longest = yield* send(post("/orders", { item: "book" }, { "idempotency-key": "x".repeat(255) }))
        assert.strictEqual(longest.status, 201)
        const uuid = yield* send(
          post("/orders", { item: "book" }, { "idempotency-key": "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"" })
        )
        assert.strictEqual(uuid.status, 201)
        // a body over the limit is refused before anything is reserved
        const large = yield* send(post("/small", { text: "x".repeat(200) }, { "idempotency-key": "large" }))
        assert.strictEqual(large.status, 413)
        assert.strictEqual(large.headers["content-type"], "application/problem+json")
        assert.strictEqual(executions.orders, 2)
        const small = yield* send(post("/small", { text: "x" }, { "idempotency-key": "large" }))
        assert.strictEqual(small.status, 200)
        // not required on this route: no key passes through
        const optional = yield* send(post("/optional", {}))
        assert.strictEqual(optional.status, 200)
      })))

    it.live("a repeat while the first is in flight gets 409 with Retry-After", () =>
      withStore(Effect.gen(function*() {
        const { executions, gate, send, started } = yield* makeApp(offsetClock())
        const first = yield* Effect.fork(send(post("/slow", {}, { "idempotency-key": "s" })))
        yield* Deferred.await(started)
        const repeat = yield* send(post("/slow", {}, { "idempotency-key": "s" }))
        assert.strictEqual(repeat.status, 409)
        assert.strictEqual(repeat.headers["retry-after"], "2")
        assert.strictEqual(repeat.headers["content-type"], "application/problem+json")
        yield* Deferred.succeed(gate, undefined)
        const done = yield* first
        assert.strictEqual(done.status, 200)
        const replayed = yield* send(post("/slow", {}, { "idempotency-key": "s" }))
        assert.strictEqual(replayed.headers["idempotent-replayed"], "true")
        assert.strictEqual(executions.slow, 1)
      })))

    it.live("5xx responses and defects release the key; 4xx responses and errors rendered as 4xx are stored", () =>
      withStore(Effect.gen(function*() {
        const { executions, send } = yield* makeApp(offsetClock())
        const a = yield* send(post("/fail", {}, { "idempotency-key": "f" }))
        const b = yield* send(post("/fail", {}, { "idempotency-key": "f" }))
        assert.deepStrictEqual([a.status, b.status, b.headers["idempotent-replayed"]], [503, 503, undefined])
        assert.strictEqual(executions.fail, 2)
        const d1 = yield* send(post("/die", {}, { "idempotency-key": "d" }))
        const d2 = yield* send(post("/die", {}, { "idempotency-key": "d" }))
        assert.deepStrictEqual([d1.status, d2.status], [500, 500])
        assert.strictEqual(executions.die, 2)
        const c = yield* send(post("/bad", {}, { "idempotency-key": "b" }))
        const d = yield* send(post("/bad", {}, { "idempotency-key": "b" }))
        assert.deepStrictEqual([c.status, d.status, d.headers["idempotent-replayed"]], [409, 409, "true"])
        assert.deepStrictEqual(d.json, { error: "out of stock" })
        assert.strictEqual(executions.bad, 1)
        // a failure the server renders as 404 (a Respondable error) is stored like a 404 response
        const n1 = yield* send(post("/not-found", {}, { "idempotency-key": "n" }))
        const n2 = yield* send(post("/not-found", {}, { "idempotency-key": "n" }))
        assert.deepStrictEqual([n1.status, n2.status, n2.headers["idempotent-replayed"]], [404, 404, "true"])
        assert.strictEqual(executions.notFound, 1)
      })))

    it.live("a response over the size limit is sent but not stored: repeats get 410", () =>
      withStore(Effect.gen(function*() {
        const { executions, send } = yield* makeApp(offsetClock())
        const first = yield* send(post("/big", {}, { "idempotency-key": "big" }))
        assert.strictEqual(first.status, 200)
        assert.strictEqual(first.text.length, 5000)
        const repeat = yield* send(post("/big", {}, { "idempotency-key": "big" }))
        assert.strictEqual(repeat.status, 410)
        assert.strictEqual(repeat.headers["content-type"], "application/problem+json")
        assert.strictEqual(executions.big, 1)
      })))

    it.live("keys expire after the TTL: then the key is new, and purge deletes it", () =>
      withStore(Effect.gen(function*() {
        const clock = offsetClock()
        const { executions, send } = yield* makeApp(clock)
        const sql = yield* SqlClient.SqlClient
        const count = Effect.map(
          sql<{ readonly n: number }>`SELECT count(*) AS n FROM memento_idempotency_keys`,
          (rows) => Number(rows[0]!.n)
        )
        yield* send(post("/orders", { item: "book" }, { "idempotency-key": "e" }))
        yield* send(post("/orders", { item: "pen" }, { "idempotency-key": "e2" }))
        yield* clock.advance("59 minutes")
        const before = yield* send(post("/orders", { item: "book" }, { "idempotency-key": "e" }))
        assert.strictEqual(before.headers["idempotent-replayed"], "true")
        assert.strictEqual(yield* IdempotencyKey.purge().pipe(Effect.withClock(clock.clock)), 0)
        yield* clock.advance("2 minutes")
        // expired: another body is not a mismatch any more, it is a new request
        const after = yield* send(post("/orders", { item: "lamp" }, { "idempotency-key": "e" }))
        assert.strictEqual(after.status, 201)
        assert.strictEqual(after.headers["idempotent-replayed"], undefined)
        assert.strictEqual(executions.orders, 3)
        assert.strictEqual(yield* count, 2)
        // "e2" expired, "e" was just renewed
        assert.strictEqual(yield* IdempotencyKey.purge().pipe(Effect.withClock(clock.clock)), 1)
        assert.strictEqual(yield* count, 1)
      })))

    it.live("a handler interrupted mid-request (the client went away) releases the key", () =>
      withStore(Effect.gen(function*() {
        const { executions, send, started } = yield* makeApp(offsetClock())
        const first = yield* Effect.fork(send(post("/slow", {}, { "idempotency-key": "gone" })))
        yield* Deferred.await(started)
        yield* Fiber.interrupt(first)
        // the server sees the closed connection and interrupts the handler, which releases the key
        const sql = yield* SqlClient.SqlClient
        const released = sql`SELECT 1 AS x FROM memento_idempotency_keys WHERE idempotency_key = 'gone'`.pipe(
          Effect.filterOrFail((rows) => rows.length === 0, () => "the key is still in flight"),
          Effect.retry(Schedule.spaced("20 millis")),
          Effect.timeout("5 seconds")
        )
        yield* released
        const again = yield* Effect.fork(send(post("/slow", {}, { "idempotency-key": "gone" })))
        yield* Effect.repeat(Effect.sync(() => executions.slow), {
          until: (n) => n === 2,
          schedule: Schedule.spaced("20 millis")
        }).pipe(Effect.timeout("5 seconds"))
        yield* Fiber.interrupt(again)
        yield* released
        assert.strictEqual(executions.slow, 2)
      })))

    it.live("a concurrent burst of 20 identical requests executes the handler once", () =>
      withStore(Effect.gen(function*() {
        const { executions, send } = yield* makeApp(offsetClock())
        const responses = yield* Effect.forEach(
          Array.from({ length: 20 }, () => post("/orders", { item: "burst" }, { "idempotency-key": "burst" })),
          send,
          { concurrency: "unbounded" }
        )
        assert.strictEqual(executions.orders, 1)
        const statuses = responses.map((r) => r.status)
        assert.isTrue(statuses.every((s) => s === 201 || s === 409), statuses.join(","))
        const created = responses.filter((r) => r.status === 201)
        assert.strictEqual(created.filter((r) => r.headers["idempotent-replayed"] === undefined).length, 1)
        for (const r of created) assert.deepStrictEqual(r.json, { execution: 1, body: { item: "burst" } })
        for (const r of responses.filter((r) => r.status === 409)) assert.strictEqual(r.headers["retry-after"], "2")
      })))
  })

suite(sqlite)
suite(postgres)
