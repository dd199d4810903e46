/**
 * Child workflows and workflow timeouts end to end on SQLite (a temporary file) and Postgres, with
 * real time and the store's clock: a parent waits for its child without a worker slot and is woken
 * by the child's final commit (a signal delivered in the same transaction), cancelling the parent
 * cancels the child, and a sleeping run with a timeout fails with `WorkflowTimeout` at its deadline
 * and compensates.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, layer } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import type { WorkflowStore } from "@memento/workflow"
import { Step, Workflow, WorkflowClient, WorkflowConfig, WorkflowError } from "@memento/workflow"
import { Effect, Layer, Schema } from "effect"
import { freshDatabase, pgClient, tempSqliteFile } from "./utils/database.js"
import { count, ns, settings, startWorker, waitUntil } from "./utils/engine.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

/** Waits until the run exists and has `status`. */
const awaitStatus = (id: string, status: WorkflowStore.RunStatus) =>
  waitUntil(
    Effect.flatMap(WorkflowClient.WorkflowClient, (client) =>
      Effect.map(Effect.option(client.get(id)), (run) => run._tag === "Some" && run.value.status === status)),
    { what: `run ${id} to be ${status}` }
  )

const opsSuite = (
  name: string,
  storeLayer: Layer.Layer<WorkflowStore.WorkflowStore | SqlClient.SqlClient, unknown>
) =>
  layer(
    Layer.mergeAll(WorkflowClient.layer, WorkflowConfig.layer(settings)).pipe(Layer.provideMerge(storeLayer)),
    { excludeTestServices: true, timeout: "120 seconds" }
  )(name, (it) => {
    const workflows = (id: string, calls: Record<string, number>) => {
      const Payment = Workflow.make({
        name: `payment-${id}`,
        payload: Schema.Number,
        success: Schema.String,
        error: Declined
      })
      const PaymentLive = Payment.implement((amount) =>
        Effect.gen(function*() {
          const charge = yield* Step.run(
            "charge",
            {
              success: Schema.String,
              error: Declined,
              retryOn: () => false,
              compensate: () => Effect.sync(() => calls.refund++)
            },
            Effect.suspend(() => {
              calls.charge++
              return amount > 100 ? Effect.fail(new Declined({ reason: "over limit" })) : Effect.succeed(`ch-${amount}`)
            })
          )
          // amount 42 waits for a confirmation that never comes
          if (amount === 42) yield* Effect.orDie(Workflow.awaitSignal("confirm", Schema.Boolean))
          return charge
        })
      )
      const Order = Workflow.make({
        name: `order-${id}`,
        payload: Schema.Number,
        success: Schema.String,
        error: Schema.Union(Declined, WorkflowError.ChildWorkflowFailed)
      })
      const OrderLive = Order.implement((amount) =>
        Effect.gen(function*() {
          yield* Step.run("reserve", {
            success: Schema.Void,
            compensate: () => Effect.sync(() => calls.release++)
          }, Effect.sync(() => calls.reserve++))
          return yield* Workflow.child(Payment, amount, { name: "payment" })
        })
      )
      return { Order, OrderLive, Payment, PaymentLive }
    }

    it.scoped("a parent waits for its child without a slot and gets its result or its typed error", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const sql = yield* SqlClient.SqlClient
        const id = ns()
        const calls = { reserve: 0, charge: 0, refund: 0, release: 0 }
        const { Order, OrderLive, Payment, PaymentLive } = workflows(id, calls)
        // one slot: a parent holding it while waiting would leave none for the child
        yield* startWorker({
          workflows: [Order, Payment],
          implementations: Layer.merge(OrderLive, PaymentLive),
          concurrency: 1
        })
        const ok = yield* client.start(Order, 20, { id: `ok-${id}` })
        assert.strictEqual(yield* client.result(Order, ok.id), "ch-20")
        const details = yield* client.inspect(ok.id)
        assert.deepStrictEqual(details.children.map((child) => [child.id, child.parentId, child.status]), [
          [`ok-${id}/payment`, ok.id, "succeeded"]
        ])
        const entry = details.entries.find((e) =>
          e.key === "payment"
        )!
        assert.deepStrictEqual(
          [entry.kind, entry.status, entry.output],
          ["child", "succeeded", JSON.stringify("ch-20")]
        )
        // the child's outcome reached the parent as a signal stored with the child's final commit
        const signals = yield* count(
          sql<{ n: unknown }>`SELECT count(*) AS n FROM memento_signals WHERE run_id = ${ok.id}`
        )
        assert.strictEqual(signals, 1)

        const declined = yield* client.start(Order, 500, { id: `declined-${id}` })
        const error = yield* Effect.flip(client.result(Order, declined.id))
        assert.instanceOf(error, Declined)
        assert.strictEqual((yield* client.get(declined.id)).status, "compensated")
        assert.deepStrictEqual(calls, { reserve: 2, charge: 2, refund: 0, release: 1 })
      }), 60_000)

    it.scoped("cancelling a waiting parent cancels its child; both compensate", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const calls = { reserve: 0, charge: 0, refund: 0, release: 0 }
        const { Order, OrderLive, Payment, PaymentLive } = workflows(id, calls)
        // parent and child on workers that do not know each other's workflows
        yield* startWorker({ workflows: [Order], implementations: OrderLive })
        yield* startWorker({ workflows: [Payment], implementations: PaymentLive })
        const { id: parentId } = yield* client.start(Order, 42, { id: `cancel-${id}` })
        const childId = `${parentId}/payment`
        yield* awaitStatus(childId, "waiting")
        yield* awaitStatus(parentId, "waiting")
        assert.isNull((yield* client.get(parentId)).leaseOwner)
        yield* client.cancel(parentId)
        const error = yield* Effect.flip(client.result(Order, parentId))
        assert.instanceOf(error, WorkflowError.WorkflowCancelled)
        yield* awaitStatus(childId, "cancelled")
        assert.deepStrictEqual(calls, { reserve: 1, charge: 1, refund: 1, release: 1 })
      }), 60_000)

    it.scoped("children started by concurrent branches all start in the parent's first execution", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const Part = Workflow.make({ name: `part-${id}`, payload: Schema.Number, success: Schema.Number })
        const PartLive = Part.implement((n) =>
          Effect.as(Workflow.sleep("nap", "1 second"), n * 10)
        )
        const FanOut = Workflow.make({
          name: `fan-out-${id}`,
          payload: Schema.Void,
          success: Schema.Array(Schema.Number)
        })
        const FanOutLive = FanOut.implement(() =>
          Effect.forEach([1, 2, 3, 4], (n) =>
            Workflow.child(Part, n, { name: `part-${n}` }), {
            concurrency: "unbounded"
          }).pipe(Effect.orDie)
        )
        yield* startWorker({ workflows: [FanOut, Part], implementations: Layer.merge(FanOutLive, PartLive) })
        const run = yield* client.start(FanOut, undefined, { id: `fan-out-${id}` })
        yield* awaitStatus(run.id, "waiting")
        const { children, run: parent } = yield* client.inspect(run.id)
        assert.strictEqual(parent.epoch, 1, "still the parent's first execution")
        assert.deepStrictEqual(children.map((child) => child.id).sort(), [1, 2, 3, 4].map((n) => `${run.id}/part-${n}`))
        assert.deepStrictEqual(yield* client.result(FanOut, run.id), [10, 20, 30, 40])
      }), 60_000)

    it.scoped("a sleeping run with a timeout fails with WorkflowTimeout at its deadline and compensates", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        let released = 0
        let shipped = 0
        const Bounded = Workflow.make({
          name: `bounded-${id}`,
          payload: Schema.Void,
          success: Schema.String,
          error: Declined,
          timeout: "1500 millis"
        })
        const implementations = Bounded.implement(() =>
          Effect.gen(function*() {
            yield* Step.run("reserve", {
              success: Schema.Void,
              compensate: () =>
                Effect.sync(() =>
                  released++
                )
            }, Effect.void)
            yield* Workflow.sleep("wait", "1 hour")
            yield* Step.run(
              "ship",
              Effect.sync(() =>
                shipped++
              )
            )
            return "shipped"
          })
        )
        yield* startWorker({ workflows: [Bounded], implementations })
        const run = yield* client.start(Bounded, undefined, { id: `bounded-${id}` })
        yield* awaitStatus(run.id, "sleeping")
        const sleeping = yield* client.get(run.id)
        assert.strictEqual(sleeping.runnableAt, sleeping.createdAt + 1_500, "woken at the deadline")
        const error = yield* Effect.flip(client.result(Bounded, run.id))
        assert.instanceOf(error, WorkflowError.WorkflowTimeout)
        const finished = yield* client.get(run.id)
        assert.strictEqual(finished.status, "compensated")
        assert.isAtLeast(finished.completedAt!, finished.createdAt + 1_500)
        assert.isBelow(finished.completedAt!, finished.createdAt + 10_000)
        assert.deepStrictEqual({ released, shipped }, { released: 1, shipped: 0 })
      }), 60_000)
  })

opsSuite("operations on SQLite", SqlStore.layerSqlite({ filename: tempSqliteFile() }))

const url = await freshDatabase()
opsSuite("operations on Postgres", SqlStore.layer().pipe(Layer.provideMerge(pgClient(url))))
