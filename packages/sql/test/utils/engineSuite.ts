/**
 * The engine end to end on a real database: `Worker.layer` + `WorkflowClient.layer` + the SqlStore,
 * real time and short leases. Run against SQLite (a temporary file) and Postgres by
 * `engine.sqlite.test.ts` and `engine.pg.test.ts`.
 *
 * - guarantee 4: `Step.transaction` commits the step's SQL exactly once across a crash between the
 *   effect and the commit, and a typed failure rolls the step's SQL back;
 * - guarantee 8: a durable sleep wakes on time and signals (sent before the wait, duplicated) are
 *   received once, across worker restarts;
 * - guarantee 10: oversized values fail before any write, a run that keeps crashing its worker is
 *   parked `dead` and resumes, a corrupted journal value or an undecodable row parks the run
 *   `needs_attention` while the worker keeps serving other runs.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, layer } from "@effect/vitest"
import type { WorkflowStore as Store } from "@memento/workflow"
import { Step, Workflow, WorkflowClient, WorkflowConfig, WorkflowError } from "@memento/workflow"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Clock, Effect, Layer, Option, Schedule, Schema } from "effect"
import type { CrashPoint } from "./engine.js"
import { count, crashAt, ns, settings, startWorker, waitUntil } from "./engine.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}

const statusOf = (id: string) =>
  Effect.flatMap(WorkflowClient.WorkflowClient, (client) => Effect.map(client.get(id), (run) => run.status))

const awaitStatus = (id: string, status: Store.RunStatus, timeoutMs = 15_000) =>
  waitUntil(Effect.map(Effect.orDie(statusOf(id)), (s) => s === status), {
    what: `run ${id} to be ${status}`,
    timeoutMs
  })

/** The parsed `error` column of a parked run: `{ _tag: "Parked", reason: { _tag, ... } }`. */
const parkReason = (id: string) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const run = yield* Effect.orDie(client.get(id))
    assert.isNotNull(run.error)
    const error = JSON.parse(run.error!) as { readonly _tag: string; readonly reason: Record<string, unknown> }
    assert.strictEqual(error._tag, "Parked")
    return error.reason
  })

export const engineSuite = (
  name: string,
  storeLayer: Layer.Layer<Store.WorkflowStore | SqlClient.SqlClient, unknown>
) =>
  layer(
    Layer.mergeAll(WorkflowClient.layer, WorkflowConfig.layer(settings)).pipe(Layer.provideMerge(storeLayer)),
    { excludeTestServices: true, timeout: "120 seconds" }
  )(name, (it) => {
    it.scoped("Step.transaction: a crash after the effect, before the commit, leaves exactly one row", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const table = `orders_${id}`
        yield* Effect.orDie(sql`CREATE TABLE ${sql(table)} (run_id text NOT NULL, step text NOT NULL)`)
        const rows = (runId: string, step: string) =>
          count(sql<{ n: unknown }>`SELECT count(*) AS n FROM ${sql(table)} WHERE run_id = ${runId} AND step = ${step}`)
        const bodies = { reserve: 0, charge: 0 }

        const Order = Workflow.make({
          name: `tx-${id}`,
          payload: Schema.String,
          success: Schema.String,
          error: Declined
        })
        const insert = (runId: string, step: "reserve" | "charge") =>
          Effect.zipRight(
            Effect.sync(() =>
              bodies[step]++
            ),
            Effect.orDie(sql`INSERT INTO ${sql(table)} (run_id, step) VALUES (${runId}, ${step})`)
          )
        const implementations = Order.implement((mode) =>
          Effect.gen(function*() {
            const runId = yield* Workflow.workflowId
            const reserved = yield* Step.transaction(
              "reserve",
              { success: Schema.String },
              Effect.as(insert(runId, "reserve"), "reserved")
            )
            yield* Step.transaction(
              "charge",
              { success: Schema.Void, error: Declined, retry: Schedule.recurs(2) },
              Effect.zipRight(
                insert(runId, "charge"),
                mode === "decline" ? Effect.fail(new Declined({ reason: "card" })) : Effect.void
              )
            )
            return reserved
          })
        )
        const crash = crashAt("after-effect" satisfies CrashPoint, "reserve")
        yield* startWorker({ workflows: [Order], implementations, hooks: crash.hooks })

        // the first attempt's transaction is abandoned after its INSERT, before its commit
        const ok = yield* client.start(Order, "ok", { id: `tx-ok-${id}` })
        assert.strictEqual(yield* client.result(Order, ok.id), "reserved")
        assert.deepStrictEqual(crash.fired, ["after-effect reserve"])
        assert.strictEqual(bodies.reserve, 2, "the crashed step ran again after recovery")
        assert.strictEqual(yield* rows(ok.id, "reserve"), 1)
        assert.strictEqual(yield* rows(ok.id, "charge"), 1)
        const okDetails = yield* client.inspect(ok.id)
        assert.strictEqual(okDetails.run.epoch, 2, "recovered by a second claim")
        assert.deepStrictEqual(okDetails.entries.map((e) => `${e.key}:${e.kind}:${e.status}`), [
          "reserve:transaction:succeeded",
          "charge:transaction:succeeded"
        ])

        // a typed failure rolls back the step's INSERT on every attempt; the failure is journaled
        const declined = yield* client.start(Order, "decline", { id: `tx-decline-${id}` })
        const failure = yield* Effect.flip(client.result(Order, declined.id))
        assert.instanceOf(failure, Declined)
        assert.strictEqual(bodies.charge, 1 + 3, "three attempts of the declined charge")
        assert.strictEqual(yield* rows(declined.id, "charge"), 0)
        assert.strictEqual(yield* rows(declined.id, "reserve"), 1)
        const declinedDetails = yield* client.inspect(declined.id)
        const charge = declinedDetails.entries.find((e) => e.key === "charge")
        assert.strictEqual(charge?.status, "failed")
        assert.strictEqual(charge?.attempts, 3)
        assert.strictEqual(declinedDetails.run.status, "failed")
      }), 30_000)

    it.scoped(
      "execute with a worker in the same process: the run is stored by its first commit; an existing ID runs nothing",
      () =>
        Effect.gen(function*() {
          const sql = yield* SqlClient.SqlClient
          const store = yield* WorkflowStore
          const client = yield* WorkflowClient.WorkflowClient
          const id = ns()
          const table = `local_${id}`
          yield* Effect.orDie(sql`CREATE TABLE ${sql(table)} (run_id text NOT NULL)`)
          const rows = (runId: string) =>
            count(sql<{ n: unknown }>`SELECT count(*) AS n FROM ${sql(table)} WHERE run_id = ${runId}`)
          const bodies = { insert: 0, note: 0 }
          // one workflow whose first journaled operation is a transactional step, one a plain step
          const TxFirst = Workflow.make({ name: `tx-first-${id}`, payload: Schema.String, success: Schema.String })
          const StepFirst = Workflow.make({ name: `step-first-${id}`, payload: Schema.String, success: Schema.String })
          const implementations = Layer.mergeAll(
            TxFirst.implement((value) =>
              Effect.gen(function*() {
                const runId = yield* Workflow.workflowId
                yield* Step.transaction(
                  "insert",
                  { success: Schema.Void },
                  Effect.zipRight(
                    Effect.sync(() =>
                      bodies.insert++
                    ),
                    Effect.orDie(sql`INSERT INTO ${sql(table)} (run_id) VALUES (${runId})`)
                  )
                )
                return yield* Step.run("after", { success: Schema.String }, Effect.succeed(`${value}!`))
              })
            ),
            StepFirst.implement((value) =>
              Step.run("note", { success: Schema.String }, Effect.sync(() => `${value}#${++bodies.note}`))
            )
          )
          yield* startWorker({ workflows: [TxFirst, StepFirst], implementations })

          assert.strictEqual(yield* client.execute(TxFirst, "a", { id: `tx-first-${id}` }), "a!")
          assert.strictEqual(yield* client.execute(StepFirst, "b", { id: `step-first-${id}` }), "b#1")
          assert.deepStrictEqual(bodies, { insert: 1, note: 1 })
          assert.strictEqual(yield* rows(`tx-first-${id}`), 1)
          for (const runId of [`tx-first-${id}`, `step-first-${id}`]) {
            const details = yield* client.inspect(runId)
            assert.strictEqual(details.run.status, "succeeded")
            assert.strictEqual(details.run.epoch, 1)
            assert.strictEqual(details.run.leaseOwner, null)
          }
          assert.deepStrictEqual(
            (yield* client.inspect(`tx-first-${id}`)).entries.map((e) => `${e.key}:${e.kind}:${e.status}`),
            ["insert:transaction:succeeded", "after:step:succeeded"]
          )

          // the same ID and payload again: the finished run's result, nothing runs again
          assert.strictEqual(yield* client.execute(TxFirst, "a", { id: `tx-first-${id}` }), "a!")
          assert.strictEqual(yield* client.execute(StepFirst, "b", { id: `step-first-${id}` }), "b#1")
          // another payload or another workflow under an existing ID: WorkflowIdConflict, nothing runs
          const conflict = yield* Effect.flip(client.execute(TxFirst, "other", { id: `tx-first-${id}` }))
          assert.instanceOf(conflict, WorkflowError.WorkflowIdConflict)
          // a run no worker of this process executes (its workflow is unknown here) is left alone
          const { run: foreign } = yield* Effect.orDie(
            store.create({ id: `foreign-${id}`, workflow: `elsewhere-${id}`, payload: "\"x\"" })
          )
          const other = yield* Effect.flip(client.execute(StepFirst, "x", { id: foreign.id }))
          assert.instanceOf(other, WorkflowError.WorkflowIdConflict)
          const otherTx = yield* Effect.flip(client.execute(TxFirst, "x", { id: foreign.id }))
          assert.instanceOf(otherTx, WorkflowError.WorkflowIdConflict)
          assert.deepStrictEqual(bodies, { insert: 1, note: 1 }, "no step ran for an existing ID")
          assert.strictEqual(yield* rows(`tx-first-${id}`), 1)
          assert.strictEqual(yield* rows(foreign.id), 0)
          const untouched = yield* client.inspect(foreign.id)
          assert.deepStrictEqual(untouched.run, foreign)
          assert.deepStrictEqual(untouched.entries, [])
          assert.deepStrictEqual(untouched.attempts, [])
        }),
      30_000
    )

    it.scoped("a durable sleep wakes on time and signals arrive once, across worker restarts", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const sleepMs = 1_500
        const Napper = Workflow.make({
          name: `nap-${id}`,
          payload: Schema.Number,
          success: Schema.Struct({
            started: Schema.Number,
            woke: Schema.Number,
            first: Schema.String,
            second: Schema.String
          })
        })
        const implementations = Napper.implement((ms) =>
          Effect.gen(function*() {
            const started = yield* Step.run("started", { success: Schema.Number }, Clock.currentTimeMillis)
            yield* Workflow.sleep("nap", ms)
            const woke = yield* Step.run("woke", { success: Schema.Number }, Clock.currentTimeMillis)
            const first = yield* Effect.orDie(Workflow.awaitSignal("go", Schema.String))
            const second = yield* Effect.orDie(Workflow.awaitSignal("go", Schema.String))
            return { started, woke, first, second }
          })
        )
        const options = { workflows: [Napper], implementations } as const

        const first = yield* startWorker(options)
        const run = yield* client.start(Napper, sleepMs, { id: `nap-${id}` })
        yield* awaitStatus(run.id, "sleeping")
        yield* first.stop

        // no worker runs: a signal sent before the wait is kept, its duplicate is ignored
        assert.deepStrictEqual(yield* client.signal(run.id, "go", "first", { signalId: "evt-1" }), { duplicate: false })
        assert.deepStrictEqual(yield* client.signal(run.id, "go", "copy", { signalId: "evt-1" }), { duplicate: true })
        yield* Effect.sleep("200 millis")
        const second = yield* startWorker(options)
        yield* awaitStatus(run.id, "waiting")
        const { entries } = yield* client.inspect(run.id)
        const nap = entries.find((e) =>
          e.key === "nap"
        )!
        const wakeAt = JSON.parse(nap.meta!).wakeAt as number
        const started = Number(JSON.parse(entries.find((e) => e.key === "started")!.output!))
        const woke = Number(JSON.parse(entries.find((e) => e.key === "woke")!.output!))
        assert.isAtLeast(wakeAt - started, sleepMs, "the wake time journaled when the sleep began")
        assert.isBelow(wakeAt - started, sleepMs + 200)
        assert.isAtLeast(woke, wakeAt, "woke no earlier than its wake time")
        assert.isBelow(woke - wakeAt, 1_000, "woke on time (polling every 100 ms)")
        assert.deepStrictEqual(
          entries.filter((e) => e.kind === "signal").map((e) => `${e.key}:${e.status}`),
          ["go:succeeded", "go#2:started"]
        )

        // another restart while waiting; the duplicate sent again is still ignored
        yield* second.stop
        assert.deepStrictEqual(yield* client.signal(run.id, "go", "copy", { signalId: "evt-1" }), { duplicate: true })
        yield* startWorker(options)
        yield* Effect.sleep("500 millis")
        assert.strictEqual(yield* statusOf(run.id), "waiting", "a duplicate signal does not wake the run")
        const sent = yield* client.signal(run.id, "go", "second", { signalId: "evt-2" })
        assert.deepStrictEqual(sent, { duplicate: false })
        const result = yield* client.result(Napper, run.id)
        assert.deepStrictEqual({ first: result.first, second: result.second }, { first: "first", second: "second" })
        const details = yield* client.inspect(run.id)
        assert.strictEqual(details.signals.length, 2, "one stored signal per signalId")
      }), 30_000)

    it.scoped("oversized payloads, outputs and signals fail before any write", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const client = yield* WorkflowClient.WorkflowClient
        const store = yield* WorkflowStore
        const id = ns()
        const limit = { maxValueBytes: 1_024 }
        const Big = Workflow.make({ name: `big-${id}`, payload: Schema.String, success: Schema.String })
        const implementations = Big.implement((text) =>
          Effect.gen(function*() {
            const grown = yield* Step.run("grow", { success: Schema.String }, Effect.succeed(text.repeat(4)))
            return yield* Step.run("never", { success: Schema.String }, Effect.succeed(grown))
          })
        )
        yield* startWorker({ workflows: [Big], implementations, settings: limit })
        const withLimit = Effect.provide(WorkflowConfig.layer({ ...settings, ...limit }))

        const tooLarge = yield* Effect.flip(client.start(Big, "x".repeat(2_000), { id: `big-${id}-payload` })).pipe(
          withLimit
        )
        assert.instanceOf(tooLarge, WorkflowError.PayloadTooLarge)
        assert.isTrue(Option.isNone(yield* store.get(`big-${id}-payload`)), "no run was created")

        const run = yield* client.start(Big, "y".repeat(300), { id: `big-${id}-output` }).pipe(withLimit)
        const parked = yield* Effect.flip(client.result(Big, run.id))
        assert.instanceOf(parked, WorkflowError.RunParked)
        assert.strictEqual((parked as WorkflowError.RunParked).status, "needs_attention")
        assert.strictEqual((yield* parkReason(run.id))._tag, "PayloadTooLarge")
        const { entries } = yield* client.inspect(run.id)
        assert.deepStrictEqual(
          entries.map((e) =>
            `${e.key}:${e.status}:${e.output}`
          ),
          ["grow:started:null"]
        )

        const signal = yield* Effect.flip(client.signal(run.id, "s", "z".repeat(2_000))).pipe(withLimit)
        assert.instanceOf(signal, WorkflowError.PayloadTooLarge)
        assert.strictEqual((yield* client.inspect(run.id)).signals.length, 0)
        const oversized = yield* count(sql<{ n: unknown }>`SELECT
            (SELECT count(*) FROM memento_journal WHERE run_id LIKE ${`big-${id}%`} AND length(output) > 1024)
          + (SELECT count(*) FROM memento_runs WHERE id LIKE ${`big-${id}%`}
              AND (length(payload) > 1024 OR length(output) > 1024)) AS n`)
        assert.strictEqual(oversized, 0)
      }), 30_000)

    it.scoped("a run that crashes its worker maxRecoveries times is parked dead, and resumes", () =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const bodies = { before: 0, boom: 0 }
        let crashing = true
        const Crashy = Workflow.make({ name: `crashy-${id}`, payload: Schema.Void, success: Schema.String })
        const implementations = Crashy.implement(() =>
          Effect.gen(function*() {
            yield* Step.run(
              "before",
              Effect.sync(() =>
                bodies.before++
              )
            )
            yield* Step.run("boom", Effect.sync(() => bodies.boom++))
            return "done"
          })
        )
        yield* startWorker({
          workflows: [Crashy],
          implementations,
          hooks: { crashAt: (point, key) => crashing && point === "before-step" && key === "boom" },
          settings: { maxRecoveries: 2 }
        })
        const run = yield* client.start(Crashy, undefined, { id: `crashy-${id}` })
        yield* awaitStatus(run.id, "dead")
        const parked = yield* Effect.flip(client.result(Crashy, run.id))
        assert.instanceOf(parked, WorkflowError.RunParked)
        assert.strictEqual((parked as WorkflowError.RunParked).status, "dead")
        assert.strictEqual((yield* parkReason(run.id))._tag, "RecoveryLimitReached")
        const dead = yield* client.get(run.id)
        assert.strictEqual(dead.recoveries, 2)
        assert.strictEqual(dead.epoch, 3, "claimed three times: the first run and two recoveries")
        assert.isNull(dead.leaseOwner)
        assert.deepStrictEqual(bodies, { before: 1, boom: 0 })

        crashing = false
        const resumed = yield* client.resume(run.id)
        assert.strictEqual(resumed.status, "pending")
        assert.strictEqual(yield* client.result(Crashy, run.id), "done")
        assert.deepStrictEqual(bodies, { before: 1, boom: 1 }, "the journaled step was not run again")
      }), 30_000)

    it.scoped("a corrupted journal value parks its run needs_attention; the worker keeps serving others", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        const client = yield* WorkflowClient.WorkflowClient
        const id = ns()
        const after: Array<string> = []
        const Corruptible = Workflow.make({ name: `corrupt-${id}`, payload: Schema.Number, success: Schema.Number })
        const implementations = Corruptible.implement((n) =>
          Effect.gen(function*() {
            const runId = yield* Workflow.workflowId
            const a = yield* Step.run("a", { success: Schema.Struct({ n: Schema.Number }) }, Effect.succeed({ n }))
            yield* Effect.orDie(Workflow.awaitSignal("go", Schema.Boolean))
            yield* Step.run(
              "b",
              Effect.sync(() =>
                after.push(runId)
              )
            )
            return a.n
          })
        )
        yield* startWorker({
          workflows: [Corruptible],
          implementations,
          settings: {
            maxRecoveries: 2,
            storeRetry: Schedule.spaced("20 millis").pipe(Schedule.intersect(Schedule.recurs(2)))
          }
        })
        const start = (n: number) =>
          client.start(Corruptible, n, { id: `corrupt-${id}-${n}` })
        const [value, row, healthy] = yield* Effect.all([start(1), start(2), start(3)])
        for (const run of [value, row, healthy]) yield* awaitStatus(run.id, "waiting")

        // a journaled value that is not JSON: the replay cannot decode it
        yield* Effect.orDie(
          sql`UPDATE memento_journal SET output = 'not json' WHERE run_id = ${value.id} AND key = 'a'`
        )
        // a row the store itself cannot decode (an unknown kind)
        yield* Effect.orDie(sql`UPDATE memento_journal SET kind = 'bogus' WHERE run_id = ${row.id} AND key = 'a'`)
        for (const run of [value, row, healthy]) yield* client.signal(run.id, "go", true)

        /** The run's result is `RunParked` (needs_attention) for a `JournalDecodeError` at step "a". */
        const parkedAtA = (runId: string) =>
          Effect.gen(function*() {
            const parked = yield* Effect.flip(client.result(Corruptible, runId))
            assert.instanceOf(parked, WorkflowError.RunParked)
            assert.strictEqual((parked as WorkflowError.RunParked).status, "needs_attention")
            const reason = yield* parkReason(runId)
            assert.deepStrictEqual({ tag: reason._tag, workflowId: reason.workflowId, stepKey: reason.stepKey }, {
              tag: "JournalDecodeError",
              workflowId: runId,
              stepKey: "a"
            })
          })
        yield* parkedAtA(value.id)
        assert.strictEqual(yield* client.result(Corruptible, healthy.id), 3)

        // the row the store cannot decode is damaged data, not a failing store: the run is parked
        // needs_attention at its first load, naming the row's key, without being recovered again and
        // again; the worker itself never stops
        yield* parkedAtA(row.id)
        assert.strictEqual((yield* client.get(row.id)).recoveries, 0, "parked at once, not after repeated recoveries")

        // the worker still serves new runs
        const later = yield* start(4)
        yield* awaitStatus(later.id, "waiting")
        yield* client.signal(later.id, "go", true)
        assert.strictEqual(yield* client.result(Corruptible, later.id), 4)
        assert.deepStrictEqual(after.sort(), [healthy.id, later.id].sort(), "step b never ran for a parked run")
        const journal = yield* client.inspect(value.id)
        assert.deepStrictEqual(journal.entries.map((e) => `${e.key}:${e.status}`), ["a:succeeded", "go:started"])
      }), 60_000)
  })
