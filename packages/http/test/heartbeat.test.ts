/**
 * A live process renews its in-flight mark while its handler runs, so a handler slower than the
 * in-flight TTL is not executed a second time by a repeat. Driven by `TestClock` (SQLite, whose
 * client uses no timers).
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { IdempotencyKey } from "@memento/http"
import { Deferred, Effect, Fiber, Layer, Schedule, TestClock } from "effect"
import { sqliteClient, tempSqliteFile } from "../../sql/test/utils/database.js"
import { post, serve } from "./utils.js"

describe("the in-flight mark", () => {
  it.scoped("is renewed while the handler runs: a repeat after the TTL still gets 409", () =>
    Effect.gen(function*() {
      let executions = 0
      const started = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const router = HttpRouter.empty.pipe(
        HttpRouter.post(
          "/slow",
          Effect.gen(function*() {
            executions++
            yield* Deferred.succeed(started, undefined)
            yield* Deferred.await(gate)
            return HttpServerResponse.text("done")
          }).pipe(IdempotencyKey.middleware({ inFlightTtl: "60 seconds" }))
        )
      )
      const send = yield* serve(HttpRouter.toHttpApp(router).pipe(Effect.flatten))
      const sql = yield* SqlClient.SqlClient
      const lease = Effect.map(
        sql<{ readonly lease: number }>`SELECT lease_expires_at AS lease FROM memento_idempotency_keys`,
        (rows) => Number(rows[0]?.lease)
      )
      const request = () => send(post("/slow", {}, { "idempotency-key": "long" }))

      const first = yield* Effect.fork(request())
      yield* Deferred.await(started)
      assert.strictEqual(yield* lease, 60_000)
      // renewed every third of the TTL: at 20 s the mark lasts until 80 s
      yield* TestClock.adjust("25 seconds")
      yield* lease.pipe(
        Effect.filterOrFail((until) => until >= 80_000, () => "not renewed yet"),
        Effect.retry(Schedule.recurs(1000))
      )
      yield* TestClock.adjust("45 seconds") // 70 s: past the first mark's expiry
      const repeat = yield* request()
      assert.strictEqual(repeat.status, 409)
      assert.strictEqual(executions, 1)

      yield* Deferred.succeed(gate, undefined)
      assert.strictEqual((yield* Fiber.join(first)).text, "done")
      const replayed = yield* request()
      assert.strictEqual(replayed.headers["idempotent-replayed"], "true")
      assert.strictEqual(executions, 1)
    }).pipe(Effect.provide(IdempotencyKey.layer().pipe(Layer.provideMerge(sqliteClient(tempSqliteFile()))))))
})
