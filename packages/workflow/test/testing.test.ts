import { assert, describe, it } from "@effect/vitest"
import { Step, Workflow } from "@memento/workflow"
import * as Testing from "@memento/workflow/testing"
import { Effect, Schema } from "effect"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

const Order = Schema.Struct({ orderId: Schema.String, amount: Schema.Number, decline: Schema.Boolean })

const Saga = Workflow.make({
  name: "five-step-saga",
  payload: Order,
  success: Schema.String,
  error: Declined,
  idempotencyKey: (order) => order.orderId
})

/** Records every side effect, keyed by idempotency key like a real provider would de-duplicate. */
const effects: Array<string> = []

const SagaLive = Saga.implement((order) =>
  Effect.gen(function*() {
    const reservation = yield* Step.run("reserve", {
      success: Schema.String,
      compensate: (id) => Effect.sync(() => effects.push(`release ${id}`))
    }, Effect.sync(() => (effects.push("reserve"), `res-${order.orderId}`)))
    const charge = yield* Step.run("charge", {
      success: Schema.String,
      compensate: (id) => Effect.sync(() => effects.push(`refund ${id}`))
    }, Effect.map(Step.idempotencyKey, (key) => (effects.push(`charge ${key}`), `ch-${key.slice(0, 8)}`)))
    yield* Workflow.sleep("settle", "5 minutes")
    const shipment = yield* Step.run("ship", {
      success: Schema.String,
      error: Declined,
      compensate: (id) => Effect.sync(() => effects.push(`cancel ${id}`))
    }, order.decline ? Effect.fail(new Declined({ reason: "carrier refused" })) : Effect.succeed("shp-1"))
    yield* Step.run("email", Effect.sync(() => effects.push("email")))
    const receipt = yield* Step.run(
      "receipt",
      { success: Schema.String },
      Effect.succeed(`${reservation}/${charge}/${shipment}`)
    )
    return receipt
  })
)

describe("Testing.replaySafety", () => {
  it.effect("a five-step saga that succeeds is replay-safe at every boundary", () =>
    Effect.gen(function*() {
      const report = yield* Testing.replaySafety({
        workflow: Saga,
        implementation: SagaLive,
        payload: { orderId: "o-1", amount: 10, decline: false }
      })
      assert.strictEqual(report.clean.status, "succeeded")
      // 5 steps with 3 boundaries each, and the sleep's journal write
      assert.isAtLeast(report.boundaries.length, 15)
      assert.deepStrictEqual(
        [...new Set(report.boundaries.map((b) => b.key))].sort(),
        ["charge", "email", "receipt", "reserve", "settle", "ship"].sort()
      )
    }))

  it.effect("a five-step saga that compensates is replay-safe at every boundary, compensations included", () =>
    Effect.gen(function*() {
      const report = yield* Testing.replaySafety({
        workflow: Saga,
        implementation: SagaLive,
        payload: { orderId: "o-2", amount: 10, decline: true }
      })
      assert.strictEqual(report.clean.status, "compensated")
      const keys = report.boundaries.map((b) => b.key)
      assert.include(keys, "charge#compensate")
      assert.include(keys, "reserve#compensate")
    }))

  it.effect("detects a workflow that is not deterministic", () =>
    Effect.gen(function*() {
      let runs = 0
      const Flaky = Workflow.make({
        name: "flaky",
        payload: Schema.Struct({ id: Schema.String }),
        success: Schema.Number
      })
      const FlakyLive = Flaky.implement(() =>
        Effect.gen(function*() {
          // reads outside a step: a replay sees another value than the first execution
          const n = ++runs
          yield* Step.run("one", Effect.void)
          yield* Step.run("two", Effect.void)
          return n
        })
      )
      const error = yield* Effect.flip(
        Testing.replaySafety({ workflow: Flaky, implementation: FlakyLive, payload: { id: "x" } })
      )
      assert.strictEqual(error._tag, "ReplaySafetyViolation")
    }))
})
