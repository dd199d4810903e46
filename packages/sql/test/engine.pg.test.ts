/**
 * The engine end to end on Postgres: the shared engine suite (`utils/engineSuite.ts`), and the cost
 * of a run counted at the driver: one statement per step on the happy path.
 */
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Step, Workflow, WorkflowClient } from "@memento/workflow"
import { Context, Effect, Layer, Schema } from "effect"
import { countingPgClient, freshDatabase, pgClient } from "./utils/database.js"
import { ns, workerLayer } from "./utils/engine.js"
import { engineSuite } from "./utils/engineSuite.js"

const url = await freshDatabase()

engineSuite("engine on Postgres", SqlStore.layer().pipe(Layer.provideMerge(pgClient(url))))

/** A workflow of three steps, each returning its input + 1. */
const threeSteps = (name: string) => {
  const Three = Workflow.make({ name, payload: Schema.Number, success: Schema.Number })
  const implementations = Three.implement((n) =>
    Effect.gen(function*() {
      const a = yield* Step.run("a", { success: Schema.Number }, Effect.succeed(n + 1))
      const b = yield* Step.run("b", { success: Schema.Number }, Effect.succeed(a + 1))
      return yield* Step.run("c", { success: Schema.Number }, Effect.succeed(b + 1))
    })
  )
  return { Three, implementations }
}

describe("engine on Postgres: statements", () => {
  it.scopedLive(
    "a 3-step run costs create, one claim, at most one load, one commit per step, the finish and one read",
    () =>
      Effect.gen(function*() {
        const id = ns()
        const { implementations, Three } = threeSteps(`three-${id}`)
        // The worker's pool and the client's pool count their statements separately. The worker polls
        // and heartbeats only once a minute: it claims on LISTEN/NOTIFY hints, so every statement it
        // sends during the test belongs to a run.
        const worker = countingPgClient(url)
        const front = countingPgClient(url)
        yield* Layer.build(
          workerLayer({
            workflows: [Three],
            implementations,
            settings: { pollMs: 60_000, heartbeatMs: 60_000, leaseMs: 120_000 }
          }).pipe(Layer.provide(SqlStore.layer().pipe(Layer.provide(worker.client))))
        )
        const client = Context.get(
          yield* Layer.build(
            WorkflowClient.layer.pipe(Layer.provide(SqlStore.layer().pipe(Layer.provide(front.client))))
          ),
          WorkflowClient.WorkflowClient
        )
        // warm-up: the worker's LISTEN connection is up once a run went through
        yield* Effect.sleep("300 millis")
        const warmUp = client.execute(Three, 0, { id: `three-${id}-warm-up` })
        assert.strictEqual(yield* warmUp.pipe(Effect.timeout("20 seconds")), 3)

        const first = worker.log.statements.length
        const runs: Array<string> = []
        for (let i = 1; i <= 5; i++) {
          const [run, onStart] = yield* front.log.count(client.start(Three, i, { id: `three-${id}-${i}` }))
          assert.strictEqual(onStart.length, 1, `start: ${onStart.join("\n")}`)
          assert.strictEqual(yield* client.result(Three, run.id).pipe(Effect.timeout("20 seconds")), i + 3)
          runs.push(run.id)
        }
        // execute subscribes to RunFinished before it creates the run, so it reads the run once, after
        // the event: create + one get
        const executed = `three-${id}-executed`
        const [value, onExecute] = yield* front.log.count(
          client.execute(Three, 10, { id: executed }).pipe(Effect.timeout("20 seconds"))
        )
        assert.strictEqual(value, 13)
        assert.strictEqual(onExecute.length, 2, `execute: ${onExecute.join("\n")}`)
        runs.push(executed)
        yield* Effect.sleep("300 millis")
        const sent = worker.log.statements.slice(first)
        const mentions = (runId: string) => (s: (typeof sent)[number]) =>
          s.values.some((v) => typeof v === "string" && v.includes(runId))
        let loadCount = 0
        for (const runId of runs) {
          const mine = sent.filter(mentions(runId))
          const loads = mine.filter((s) => /^select/i.test(s.text))
          const writes = mine.filter((s) => !/^select/i.test(s.text))
          const listing = `statements of ${runId}:\n${mine.map((s) => s.text.slice(0, 120)).join("\n")}`
          // one fenced commit per step (its start marker carries the previous step's result) and the finish
          assert.strictEqual(writes.length, 4, listing)
          // at most one journal load (the engine may skip it on a first claim: nothing is journaled yet)
          assert.isAtMost(loads.length, 1, listing)
          loadCount += loads.length
          assert.strictEqual((yield* client.get(runId)).epoch, 1, "claimed once")
        }
        // everything else the worker sent was a claim, exactly one per run (the one its creation's
        // wake-up hint triggers; a finished run frees a slot but triggers no claim when nothing is
        // left behind): no BEGIN/COMMIT, no second statement for a step
        const others = sent.filter((s) => !runs.some((runId) => mentions(runId)(s)))
        const claims = others.filter((s) => s.text.includes("SKIP LOCKED"))
        assert.deepStrictEqual(others.filter((s) => !s.text.includes("SKIP LOCKED")).map((s) => s.text), [])
        assert.strictEqual(claims.length, runs.length, `claims:\n${claims.map((s) => s.text.slice(0, 120)).join("\n")}`)
        console.log(
          `3-step run on Postgres: 1 create + 1 claim + ${loadCount / runs.length} loads + 3 step commits + 1 finish ` +
            `per run; ${claims.length} claims in all for ${runs.length} runs`
        )
      }),
    60_000
  )

  // With one slot the next execute follows its predecessor's result at once: the slot must be free
  // by then (the worker frees it at the final commit), or the run is created pending and claimed.
  it.scopedLive.each([
    { slots: "ten slots", concurrency: 10 },
    { slots: "one slot", concurrency: 1 }
  ])(
    "with the worker ($slots) in the client's process, a 3-step execute costs 4 statements: the create with the first step's start, 2 step commits, the finish",
    ({ concurrency }) =>
      Effect.gen(function*() {
        const id = ns()
        const { implementations, Three } = threeSteps(`local-${id}`)
        // one store (one pool) for the worker and the client, as in a service that runs both
        const counted = countingPgClient(url)
        const store = SqlStore.layer().pipe(Layer.provide(counted.client))
        const context = yield* Layer.build(
          Layer.mergeAll(
            workerLayer({
              workflows: [Three],
              implementations,
              concurrency,
              settings: { pollMs: 60_000, heartbeatMs: 60_000, leaseMs: 120_000 }
            }),
            WorkflowClient.layer
          ).pipe(Layer.provideMerge(store))
        )
        const client = Context.get(context, WorkflowClient.WorkflowClient)
        yield* Effect.sleep("300 millis")
        assert.strictEqual(
          yield* client.execute(Three, 0, { id: `local-${id}-warm-up` }).pipe(Effect.timeout("20 seconds")),
          3
        )
        yield* Effect.sleep("100 millis")

        // The executes follow one another at once (the checks come after): with one slot, the next
        // execute needs the slot its predecessor just finished with. No `Effect.timeout` around them
        // either (the test's own timeout bounds them): its extra fiber would also give the worker time
        // to free the slot, and hide a slot freed too late.
        const statementsOfRun: Array<ReadonlyArray<string>> = []
        for (let i = 1; i <= 5; i++) {
          const [value, statements] = yield* counted.log.count(client.execute(Three, i, { id: `local-${id}-${i}` }))
          assert.strictEqual(value, i + 3)
          statementsOfRun.push(statements)
        }
        for (let i = 1; i <= 5; i++) {
          const statements = statementsOfRun[i - 1]
          const listing = statements.map((text) => text.slice(0, 100)).join("\n")
          // the first step's start marker creates the run (claimed by the local worker); a commit at
          // each later step (the previous result and the next start), the finish with the last
          // result: no separate create, no claim, no journal load, no read of the result
          assert.strictEqual(statements.length, 4, `run ${i}:\n${listing}`)
          assert.match(statements[0], /INSERT INTO \S*runs/i, listing)
          assert.isTrue(statements.slice(1).every((text) => /UPDATE \S*runs/i.test(text)), listing)
          assert.isFalse(statements.some((text) => text.includes("SKIP LOCKED")), listing)
          const details = yield* client.inspect(`local-${id}-${i}`)
          assert.strictEqual(details.run.status, "succeeded")
          assert.strictEqual(details.run.epoch, 1, "claimed once, by its creation")
          assert.strictEqual(details.run.recoveries, 0)
          assert.deepStrictEqual(details.entries.map((e) => `${e.key}:${e.status}`), [
            "a:succeeded",
            "b:succeeded",
            "c:succeeded"
          ])
          assert.deepStrictEqual(details.attempts.map((a) => `${a.key}:${a.outcome}`), [
            "a:succeeded",
            "b:succeeded",
            "c:succeeded"
          ])
        }
      }),
    60_000
  )
})
