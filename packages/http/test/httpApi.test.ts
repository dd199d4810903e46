/**
 * The middleware on an `HttpApi` app, applied with `HttpApiBuilder.middleware(…, { withContext: true })`.
 */
import { HttpApi, HttpApiBuilder, HttpApiEndpoint, HttpApiGroup } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { IdempotencyKey } from "@memento/http"
import { Effect, Layer, Schema } from "effect"
import { sqliteClient, tempSqliteFile } from "../../sql/test/utils/database.js"
import { post, serve } from "./utils.js"

const Api = HttpApi.make("shop").add(
  HttpApiGroup.make("orders").add(
    HttpApiEndpoint.post("create", "/orders")
      .setPayload(Schema.Struct({ item: Schema.String }))
      .addSuccess(Schema.Struct({ execution: Schema.Number, item: Schema.String }), { status: 201 })
  )
)

describe("IdempotencyKey with HttpApi", () => {
  it.scoped("replays the stored response of an HttpApi endpoint", () =>
    Effect.gen(function*() {
      let executions = 0
      const OrdersLive = HttpApiBuilder.group(Api, "orders", (handlers) =>
        handlers.handle("create", ({ payload }) =>
          Effect.sync(() => ({ execution: ++executions, item: payload.item }))))
      const ApiLive = HttpApiBuilder.api(Api).pipe(Layer.provide(OrdersLive))
      const context = yield* Layer.build(
        Layer.mergeAll(
          ApiLive,
          HttpApiBuilder.Router.Live,
          HttpApiBuilder.Middleware.layer,
          HttpApiBuilder.middleware<IdempotencyKey.IdempotencyStore>(IdempotencyKey.middleware(), {
            withContext: true
          })
        ).pipe(
          Layer.provideMerge(IdempotencyKey.layer()),
          Layer.provideMerge(sqliteClient(tempSqliteFile())),
          Layer.provideMerge(NodeHttpServer.layerContext)
        )
      )
      const app = yield* Effect.provide(HttpApiBuilder.httpApp, context)
      const send = yield* serve(Effect.provide(app, context))
      const first = yield* send(post("/orders", { item: "book" }, { "idempotency-key": "api-1" }))
      const second = yield* send(post("/orders", { item: "book" }, { "idempotency-key": "api-1" }))
      const other = yield* send(post("/orders", { item: "pen" }, { "idempotency-key": "api-1" }))
      assert.deepStrictEqual([first.status, second.status, other.status], [201, 201, 422])
      assert.strictEqual(second.headers["idempotent-replayed"], "true")
      assert.deepStrictEqual(second.json, { execution: 1, item: "book" })
      assert.strictEqual(executions, 1)
    }))
})
