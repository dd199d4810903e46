/**
 * `Alerts.layer`: one alert per run that ends badly, delivered from the store's outbox by a
 * dispatcher; the statuses it reports; handler failures retried, and redelivered after the lease
 * when the retries are exhausted. Delivery across a crash on a real database and the webhook
 * sender are tested in `packages/sql/test/alerts.sqlite.test.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import type { WorkflowStore as Store } from "@memento/workflow"
import { Alerts, Step, Workflow, WorkflowClient } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Effect, Layer, Schedule, Schema, Scope, TestClock } from "effect"
import { advanceUntil, awaitStatus, settle, testEnv } from "./utils.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { step: Schema.String }) {}

const Mode = Schema.Literal("ok", "fail", "compensate", "defect")

const W = Workflow.make({ name: "alerting", payload: Mode, success: Schema.String, error: Declined })

const implementations = W.implement((mode) =>
  Effect.gen(function*() {
    yield* Step.run("reserve", { success: Schema.String, compensate: () => Effect.void }, Effect.succeed("r-1"))
      .pipe(Effect.when(() => mode === "compensate"))
    if (mode === "defect") yield* Step.run("boom", Effect.die("the parser crashed"))
    if (mode === "fail" || mode === "compensate") {
      yield* Step.run(
        "charge",
        { success: Schema.String, error: Declined, retryOn: () => false },
        Effect.fail(new Declined({ step: "charge" }))
      )
    }
    return mode
  })
)

/** The worker polls and heartbeats rarely (store hints wake it), so clock jumps wake few timers. */
const env = testEnv({
  workflows: [W],
  implementations,
  settings: { pollMs: 3_600_000, heartbeatMs: 3_600_000, leaseMs: 4 * 3_600_000 }
})

/** Starts a dispatcher in a scope of its own (close it to stop the dispatcher). */
const startDispatcher = <E>(
  handler: (alert: Alerts.Alert) => Effect.Effect<unknown, E>,
  options?: Alerts.Options
) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(Alerts.layer(handler, { pollInterval: "1 second", ...options }), scope)
    yield* settle
    return scope
  })

/** Starts one run per mode and waits until each has ended. */
const runAll = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  const ids = {
    ok: (yield* client.start(W, "ok", { id: "a-ok" })).id,
    fail: (yield* client.start(W, "fail", { id: "a-fail" })).id,
    compensate: (yield* client.start(W, "compensate", { id: "a-compensate" })).id,
    defect: (yield* client.start(W, "defect", { id: "a-defect" })).id
  }
  yield* awaitStatus(ids.ok, "succeeded")
  yield* awaitStatus(ids.fail, "failed")
  yield* awaitStatus(ids.compensate, "compensated")
  yield* awaitStatus(ids.defect, "needs_attention")
  return ids
})

const outbox = (runId: string) => Effect.flatMap(WorkflowStore, (store) => store.alerts(runId))

const delivered = (records: ReadonlyArray<Store.AlertRecord>) => records.every((record) => record.deliveredAt !== null)

describe("Alerts", () => {
  it.effect("one alert per bad end (failed, needs_attention by default), none for a run that succeeded", () =>
    Effect.gen(function*() {
      const received: Array<Alerts.Alert> = []
      yield* startDispatcher((alert) => Effect.sync(() => received.push(alert)))
      const ids = yield* runAll
      yield* advanceUntil(Effect.sync(() => received.length >= 2), { what: "two alerts" })
      yield* TestClock.adjust("1 minute")

      const byRun = new Map(received.map((alert) => [alert.runId, alert]))
      assert.deepStrictEqual([...byRun.keys()].sort(), [ids.defect, ids.fail])
      assert.strictEqual(received.length, 2, "each alert delivered once")

      const failed = byRun.get(ids.fail)!
      assert.strictEqual(failed.status, "failed")
      assert.strictEqual(failed.workflow, "alerting")
      assert.strictEqual(failed.message, "Declined {\"step\":\"charge\"}")
      assert.deepStrictEqual(failed.error, { _tag: "Failure", error: { _tag: "Declined", step: "charge" } })
      assert.strictEqual(failed.attempt, 1)
      assert.instanceOf(failed.createdAt, Date)

      const parked = byRun.get(ids.defect)!
      assert.strictEqual(parked.status, "needs_attention")
      assert.include(parked.message, "the parser crashed")

      // The stable id is the outbox row's, and every row is marked delivered; the compensated run's
      // alert was completed without calling the handler, the succeeded run has none.
      for (const alert of received) {
        const records = yield* outbox(alert.runId)
        assert.deepStrictEqual(records.map((record) => record.id), [alert.id])
        assert.isTrue(delivered(records))
      }
      const compensated = yield* outbox(ids.compensate)
      assert.deepStrictEqual(compensated.map((record) => record.status), ["compensated"])
      assert.isTrue(delivered(compensated))
      assert.deepStrictEqual(yield* outbox(ids.ok), [])

      // A retried run that fails again is a new bad end: a new alert with a new id.
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.retry(ids.fail)
      yield* awaitStatus(ids.fail, "failed")
      yield* advanceUntil(Effect.sync(() => received.length >= 3), { what: "the alert of the retried run" })
      assert.strictEqual(received[2].runId, ids.fail)
      assert.notStrictEqual(received[2].id, failed.id)
    }).pipe(Effect.provide(env)))

  it.effect("statuses choose what the handler sees; the other alerts are completed without it", () =>
    Effect.gen(function*() {
      const received: Array<Alerts.Alert> = []
      yield* startDispatcher((alert) => Effect.sync(() => received.push(alert)), { statuses: ["compensated"] })
      const ids = yield* runAll
      yield* advanceUntil(
        Effect.map(outbox(ids.defect), delivered),
        { what: "the needs_attention alert to be completed" }
      )
      yield* advanceUntil(Effect.map(outbox(ids.fail), delivered), { what: "the failed alert to be completed" })
      yield* TestClock.adjust("1 minute")
      assert.deepStrictEqual(received.map((alert) => [alert.runId, alert.status]), [[ids.compensate, "compensated"]])
      assert.strictEqual(received[0].message, "Declined {\"step\":\"charge\"}")
    }).pipe(Effect.provide(env)))

  it.effect("alerts written while no dispatcher ran are delivered when one starts", () =>
    Effect.gen(function*() {
      const ids = yield* runAll
      yield* TestClock.adjust("1 hour")
      const received: Array<Alerts.Alert> = []
      yield* startDispatcher((alert) => Effect.sync(() => received.push(alert)))
      yield* advanceUntil(Effect.sync(() => received.length >= 2), { what: "the stored alerts" })
      assert.deepStrictEqual(received.map((alert) => alert.runId).sort(), [ids.defect, ids.fail])
    }).pipe(Effect.provide(env)))

  it.effect("a failing handler is retried per the schedule; the alert is delivered once", () =>
    Effect.gen(function*() {
      let calls = 0
      const received: Array<Alerts.Alert> = []
      yield* startDispatcher(
        (alert) =>
          Effect.suspend(() => {
            calls++
            return calls <= 2 ? Effect.fail("receiver down") : Effect.sync(() => received.push(alert))
          }),
        { statuses: ["failed"], retry: Schedule.spaced("10 seconds") }
      )
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "fail", { id: "a-retry" })
      yield* awaitStatus(id, "failed")
      yield* settle
      assert.strictEqual(calls, 1)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(calls, 2)
      assert.strictEqual(received.length, 0)
      yield* TestClock.adjust("10 seconds")
      assert.strictEqual(calls, 3)
      assert.strictEqual(received.length, 1)
      yield* TestClock.adjust("10 minutes")
      assert.strictEqual(calls, 3)
      const records = yield* outbox(id)
      assert.strictEqual(records.length, 1)
      assert.strictEqual(records[0].attempts, 1, "claimed once")
      assert.isTrue(delivered(records))
    }).pipe(Effect.provide(env)))

  it.effect("an alert whose retries are exhausted stays undelivered and is claimed again after its lease", () =>
    Effect.gen(function*() {
      let calls = 0
      const received: Array<Alerts.Alert> = []
      yield* startDispatcher(
        (alert) =>
          Effect.suspend(() => {
            calls++
            return calls <= 2 ? Effect.fail("receiver down") : Effect.sync(() => received.push(alert))
          }),
        { statuses: ["failed"], retry: Schedule.recurs(1), lease: "1 minute" }
      )
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, "fail", { id: "a-lease" })
      yield* awaitStatus(id, "failed")
      yield* settle
      assert.strictEqual(calls, 2)
      const pending = yield* outbox(id)
      assert.strictEqual(pending[0].deliveredAt, null)
      assert.strictEqual(pending[0].attempts, 1)

      // Not before the lease expires, even though the dispatcher polls every second.
      yield* TestClock.adjust("50 seconds")
      assert.strictEqual(calls, 2)
      yield* advanceUntil(Effect.sync(() => received.length === 1), { stepMs: 1_000, what: "the redelivery" })
      assert.strictEqual(calls, 3)
      assert.strictEqual(received[0].attempt, 2)
      const records = yield* outbox(id)
      assert.strictEqual(records[0].attempts, 2)
      assert.isTrue(delivered(records))
    }).pipe(Effect.provide(env)))
})
