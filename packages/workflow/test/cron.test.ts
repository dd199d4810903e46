/**
 * `Workflow.schedule`: one run per cron tick (tick time in the workflow ID) however many schedulers
 * run, ticks missed while every scheduler was down handled per `catchUp`, time zones, and
 * configuration errors. Every timer runs on `TestClock`.
 */
import { assert, describe, it } from "@effect/vitest"
import { MemoryStore, Step, Workflow, WorkflowClient, WorkflowError } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Effect, Exit, Layer, Option, Schema, Scope, TestClock } from "effect"
import { advanceUntil, settle, testEnv } from "./utils.js"

const executions: Array<string> = []

const Report = Workflow.make({
  name: "report",
  payload: Schema.Struct({ kind: Schema.String }),
  success: Schema.String
})

const implementations = Report.implement((payload) =>
  Effect.gen(function*() {
    const id = yield* Workflow.workflowId
    yield* Step.run("build", Effect.sync(() => executions.push(id)))
    return payload.kind
  })
)

/**
 * The test clock jumps hours and days here: the worker polls and heartbeats hourly (store hints wake
 * it for new runs), so a jump wakes few timers.
 */
const env = testEnv({
  workflows: [Report],
  implementations,
  settings: { pollMs: 3_600_000, heartbeatMs: 3_600_000, leaseMs: 4 * 3_600_000 }
})

type Options = Omit<Workflow.ScheduleOptions<typeof Report>, "payload">

/** Starts a scheduler in a scope of its own: closing the scope is that scheduler going down. */
const startScheduler = (options: Options) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Layer.buildWithScope(Workflow.schedule(Report, { payload: { kind: "daily" }, ...options }), scope)
    yield* settle
    return scope
  })

const runIds = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  const page = yield* client.list({ workflow: "report", limit: 1_000 })
  return page.runs.map((run) => run.id).sort()
})

const at = (minutes: number, name = "report") => `${name}@${new Date(minutes * 60_000).toISOString()}`

describe("Workflow.schedule", () => {
  it.effect("two schedulers over several ticks start exactly one run per tick, each executed once", () =>
    Effect.gen(function*() {
      executions.length = 0
      yield* startScheduler({ cron: "*/5 * * * *" })
      yield* startScheduler({ cron: "*/5 * * * *" })
      assert.deepStrictEqual(yield* runIds, [])
      yield* TestClock.adjust("4 minutes")
      assert.deepStrictEqual(yield* runIds, [])
      for (let tick = 1; tick <= 4; tick++) {
        yield* TestClock.adjust("5 minutes")
      }
      assert.deepStrictEqual(yield* runIds, [at(5), at(10), at(15), at(20)])
      // 00:24: every run is executed once (the next tick is 00:25).
      yield* advanceUntil(Effect.sync(() => executions.length >= 4), { what: "four executions", maxMs: 30_000 })
      yield* TestClock.adjust("30 seconds")
      assert.deepStrictEqual([...executions].sort(), [at(5), at(10), at(15), at(20)])
      const client = yield* WorkflowClient.WorkflowClient
      assert.strictEqual(yield* client.result(Report, at(20)), "daily")
      // The cursor holds the last tick started.
      const store = yield* WorkflowStore
      assert.deepStrictEqual(yield* store.scheduleCursor("report"), Option.some(20 * 60_000))
    }).pipe(Effect.provide(env)))

  for (
    const [catchUp, expected] of [
      ["all", [5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 55, 60]],
      ["latest", [5, 60]],
      ["none", [5]]
    ] as const
  ) {
    it.effect(`ticks missed while every scheduler was down: catchUp "${catchUp}"`, () =>
      Effect.gen(function*() {
        const first = yield* startScheduler({ cron: "*/5 * * * *", catchUp })
        yield* TestClock.adjust("6 minutes")
        assert.deepStrictEqual(yield* runIds, [at(5)])
        yield* Scope.close(first, Exit.void)

        // 00:06 -> 01:02 with no scheduler: ticks 00:10 ... 01:00 are missed.
        yield* TestClock.adjust("56 minutes")
        assert.deepStrictEqual(yield* runIds, [at(5)])
        // Two schedulers restart at once; the missed ticks are started once.
        yield* startScheduler({ cron: "*/5 * * * *", catchUp })
        yield* startScheduler({ cron: "*/5 * * * *", catchUp })
        assert.deepStrictEqual(yield* runIds, expected.map((minute) => at(minute)))

        // Then they go on with the next tick.
        yield* TestClock.adjust("3 minutes")
        assert.deepStrictEqual(yield* runIds, [...expected, 65].map((minute) => at(minute)))
      }).pipe(Effect.provide(env)))
  }

  it.effect("the first start records the cursor: ticks missed before any run was started are caught up", () =>
    Effect.gen(function*() {
      const first = yield* startScheduler({ cron: "*/5 * * * *" })
      yield* TestClock.adjust("1 minute")
      yield* Scope.close(first, Exit.void)
      yield* TestClock.adjust("11 minutes")
      yield* startScheduler({ cron: "*/5 * * * *", catchUp: "all" })
      assert.deepStrictEqual(yield* runIds, [at(5), at(10)])
    }).pipe(Effect.provide(env)))

  it.effect("names separate schedules of one workflow", () =>
    Effect.gen(function*() {
      yield* startScheduler({ cron: "*/5 * * * *", name: "report-eu" })
      yield* startScheduler({ cron: "*/10 * * * *", name: "report-us" })
      yield* TestClock.adjust("10 minutes")
      assert.deepStrictEqual(yield* runIds, [at(5, "report-eu"), at(10, "report-eu"), at(10, "report-us")])
    }).pipe(Effect.provide(env)))

  it.effect("the expression is read in the time zone, across a daylight saving change", () =>
    Effect.gen(function*() {
      // (no worker in this test: its timers would all wake on the jump to 2026)
      yield* TestClock.setTime(Date.parse("2026-03-28T12:00:00Z"))
      yield* startScheduler({ cron: "0 9 * * *", timezone: "Europe/Berlin" })
      yield* TestClock.adjust("2 days")
      // 09:00 in Berlin is 08:00 UTC before the switch to summer time on March 29, 07:00 UTC after.
      assert.deepStrictEqual(yield* runIds, [
        "report@2026-03-29T07:00:00.000Z",
        "report@2026-03-30T07:00:00.000Z"
      ])
    }).pipe(Effect.provide(WorkflowClient.layer.pipe(Layer.provideMerge(MemoryStore.layer)))))

  it.effect("an invalid expression, time zone or payload fails the layer", () =>
    Effect.gen(function*() {
      const build = (layer: Layer.Layer<never, unknown, WorkflowStore>) =>
        Effect.flip(Effect.scoped(Layer.build(layer)))
      const badCron = yield* build(Workflow.schedule(Report, { cron: "61 * * * *", payload: { kind: "x" } }))
      assert.propertyVal(badCron, "_tag", "CronParseError")
      const badZone = yield* build(
        Workflow.schedule(Report, { cron: "0 * * * *", timezone: "Mars/Olympus", payload: { kind: "x" } })
      )
      assert.propertyVal(badZone, "_tag", "CronParseError")
      const Positive = Workflow.make({ name: "positive", payload: Schema.Number.pipe(Schema.positive()) })
      const badPayload = yield* build(Workflow.schedule(Positive, { cron: "0 * * * *", payload: -1 }))
      assert.instanceOf(badPayload, WorkflowError.InvalidPayload)
      assert.include(badPayload.message, "schedule \"positive\"")
    }).pipe(Effect.provide(env)))
})
