import { assert, it } from "@effect/vitest"
import { MemoryStore, Step, Worker, Workflow, WorkflowClient } from "@memento/workflow"
import { Effect, Layer, Schema } from "effect"

class Failed extends Schema.TaggedError<Failed>()("Failed", {}) {}

const refunds: Array<string> = []

const Pay = Workflow.make({ name: "pay", payload: Schema.Struct({ id: Schema.String }), error: Failed })
const PayLive = Pay.implement(() =>
  Effect.gen(function*() {
    yield* Step.run("charge", {
      success: Schema.String,
      // a compensation is a step of its own: it has its own stable idempotency key
      compensate: () => Effect.map(Step.idempotencyKey, (key) => refunds.push(key))
    }, Effect.succeed("ch_1"))
    return yield* Effect.fail(new Failed())
  })
)

it.effect("a compensation reads its own Step.idempotencyKey", () =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const error = yield* Effect.flip(client.execute(Pay, { id: "p-1" }, { id: "p-1" }))
    assert.instanceOf(error, Failed)
    assert.strictEqual(refunds.length, 1)
    assert.match(refunds[0]!, /^mem_/)
    const details = yield* client.inspect("p-1")
    assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), [
      "charge:succeeded",
      "charge#compensate:succeeded"
    ])
  }).pipe(Effect.provide(
    Layer.mergeAll(WorkflowClient.layer, Worker.layer({ workflows: [Pay] }).pipe(Layer.provide(PayLive))).pipe(
      Layer.provideMerge(MemoryStore.layer)
    )
  )))

const Stuck = Workflow.make({ name: "stuck", payload: Schema.Struct({ id: Schema.String }) })
const StuckLive = Stuck.implement(() => Step.run("boom", Effect.die("bug")))

it.effect("cancelling a parked run fails with InvalidRunState instead of silently doing nothing", () =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const error = yield* Effect.flip(client.execute(Stuck, { id: "s-1" }, { id: "s-1" }))
    assert.strictEqual(error._tag, "RunParked")
    const cancel = yield* Effect.flip(client.cancel("s-1"))
    assert.strictEqual(cancel._tag, "InvalidRunState")
    assert.strictEqual((yield* client.get("s-1")).cancelRequested, false)
  }).pipe(Effect.provide(
    Layer.mergeAll(WorkflowClient.layer, Worker.layer({ workflows: [Stuck] }).pipe(Layer.provide(StuckLive))).pipe(
      Layer.provideMerge(MemoryStore.layer)
    )
  )))
