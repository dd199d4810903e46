// The example of packages/workflow/README.md, kept here so it is type-checked and run.
import { assert, it } from "@effect/vitest"
import { MemoryStore, Step, Worker, Workflow, WorkflowClient } from "@memento/workflow"
import { Effect, Layer, Schema, TestClock } from "effect"

// --- README example start
class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String }) {}

const Order = Schema.Struct({ orderId: Schema.String, sku: Schema.String, amount: Schema.Number })

const Checkout = Workflow.make({
  name: "checkout",
  payload: Order,
  success: Schema.Struct({ chargeId: Schema.String }),
  error: OutOfStock,
  idempotencyKey: (order) => order.orderId
})

const stock = new Map([["book", 1]])
const charges = new Map<string, number>() // idempotency key -> amount, like a payment provider

const CheckoutLive = Checkout.implement((order) =>
  Effect.gen(function*() {
    yield* Step.run(
      "reserve",
      {
        success: Schema.Void,
        error: OutOfStock,
        retryOn: () => false, // out of stock is final: no retries
        compensate: () => Effect.sync(() => stock.set(order.sku, stock.get(order.sku)! + 1))
      },
      Effect.suspend(() => {
        const left = stock.get(order.sku) ?? 0
        if (left === 0) return Effect.fail(new OutOfStock({ sku: order.sku }))
        stock.set(order.sku, left - 1)
        return Effect.void
      })
    )
    const chargeId = yield* Step.run(
      "charge",
      { success: Schema.String },
      Effect.map(Step.idempotencyKey, (key) => {
        charges.set(key, order.amount) // a retry with the same key charges nothing twice
        return `ch_${key.slice(4, 12)}`
      })
    )
    yield* Workflow.sleep("cooling-off", "10 minutes") // durable: frees the worker
    return { chargeId }
  })
)

const MementoLive = Layer.mergeAll(
  WorkflowClient.layer,
  Worker.layer({ workflows: [Checkout], concurrency: 10 }).pipe(Layer.provide(CheckoutLive))
).pipe(Layer.provideMerge(MemoryStore.layer)) // or SqlStore.layerSqlite / layerPg from @memento/sql

// in a service:
export const program = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  const run = yield* client.start(Checkout, { orderId: "o-1", sku: "book", amount: 20 }) // idempotent
  return yield* client.result(Checkout, run.id) // waits; typed success, typed OutOfStock failure
}).pipe(Effect.provide(MementoLive))
// --- README example end

it.effect("the README example runs: one order succeeds, the second is out of stock and compensated", () =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const first = yield* client.start(Checkout, { orderId: "o-1", sku: "book", amount: 20 })
    yield* TestClock.adjust("10 minutes")
    const receipt = yield* client.result(Checkout, first.id)
    assert.match(receipt.chargeId, /^ch_/)
    const second = yield* Effect.flip(client.execute(Checkout, { orderId: "o-2", sku: "book", amount: 20 }))
    assert.instanceOf(second, OutOfStock)
    assert.strictEqual(charges.size, 1)
    assert.strictEqual(stock.get("book"), 0)
    assert.strictEqual((yield* client.get("o-2")).status, "failed")
  }).pipe(Effect.provide(MementoLive)))
