/**
 * The `memento` CLI as a real child process (`node packages/cli/dist/bin.js`, built by `tsc -b`)
 * against a real Postgres (and a SQLite file), with the runs set up in this process by a worker on
 * the same database.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { Step, Workflow, WorkflowClient } from "@memento/workflow"
import { Context, Data, Duration, Effect, Layer, Schedule, Schema } from "effect"
import { execFile, spawn } from "node:child_process"
import { existsSync, readFileSync, writeFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { freshDatabase, pgClient, sqliteClient, tempSqliteFile } from "../../sql/test/utils/database.js"
import { ns, startWorker } from "../../sql/test/utils/engine.js"

const bin = fileURLToPath(new URL("../dist/bin.js", import.meta.url))

interface Result {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `memento ...args` as a child process; `DATABASE_URL` is `url` unless `url` is null. */
const memento = (url: string | null, ...args: ReadonlyArray<string>): Effect.Effect<Result> =>
  Effect.async<Result>((resume) => {
    const env: Record<string, string | undefined> = { ...process.env, DATABASE_URL: url ?? undefined }
    if (url === null) delete env.DATABASE_URL
    const child = execFile("node", [bin, ...args], { env, timeout: 60_000 }, (error, stdout, stderr) => {
      const code = error === null ? 0 : typeof error.code === "number" ? error.code : -1
      resume(Effect.succeed({ code, stdout, stderr }))
    })
    return Effect.sync(() => child.kill())
  })

const expectCode = (result: Result, code: number, what: string) =>
  assert.strictEqual(
    result.code,
    code,
    `${what}: exit ${result.code}\nstdout:\n${result.stdout}\nstderr:\n${result.stderr}`
  )

/** The lines of `text` matching `pattern`. */
const lines = (text: string, pattern: RegExp) => text.split("\n").filter((line) => pattern.test(line))

class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", { message: Schema.String }) {}
class ReleaseFailed extends Data.TaggedError("ReleaseFailed")<{ readonly message: string }> {}

/** Side-effect counters of the saga's steps and switches that make them fail. */
const makeCounters = () => ({
  validate: 0,
  price: 0,
  reserve: 0,
  charge: 0,
  ship: 0,
  release: 0,
  releaseFailures: 1,
  declines: true
})

/**
 * validate → price → reserve (compensated by release, whose first attempt fails) → charge (declined
 * while `declines`, 3 attempts) → ship.
 */
const saga = (name: string, counters: ReturnType<typeof makeCounters>) => {
  const Order = Workflow.make({
    name,
    payload: Schema.Struct({ orderId: Schema.String, amount: Schema.Number }),
    success: Schema.String,
    error: PaymentDeclined
  })
  const implementation = Order.implement((order) =>
    Effect.gen(function*() {
      yield* Step.run("validate", { success: Schema.Boolean }, Effect.sync(() => ++counters.validate > 0))
      const price = yield* Step.run(
        "price",
        { success: Schema.Number },
        Effect.sync(() => (counters.price++, order.amount))
      )
      yield* Step.run("reserve", {
        success: Schema.String,
        compensate: () =>
          Effect.suspend(() => {
            if (counters.releaseFailures > 0) {
              counters.releaseFailures--
              return Effect.fail(new ReleaseFailed({ message: "warehouse timeout" }))
            }
            counters.release++
            return Effect.void
          })
      }, Effect.sync(() => `hold-${++counters.reserve}`))
      yield* Step.run(
        "charge",
        {
          success: Schema.Number,
          error: PaymentDeclined,
          retry: Schedule.spaced("10 millis").pipe(Schedule.intersect(Schedule.recurs(2)))
        },
        Effect.suspend(() => {
          counters.charge++
          return counters.declines
            ? Effect.fail(new PaymentDeclined({ message: "card declined" }))
            : Effect.succeed(price)
        })
      )
      yield* Step.run("ship", Effect.sync(() => void counters.ship++))
      return `order ${order.orderId} shipped`
    })
  )
  return { Order, implementation }
}

/** A body that waits for the `approve` signal, then records it in a step. */
const approval = (name: string) => {
  const Approval = Workflow.make({ name, payload: Schema.String, success: Schema.Boolean })
  const implementation = Approval.implement(() =>
    Effect.gen(function*() {
      // without a timeout the wait never fails
      const approved = yield* Workflow.awaitSignal("approve", Schema.Boolean).pipe(Effect.orDie)
      return yield* Step.run("record", { success: Schema.Boolean }, Effect.succeed(approved))
    })
  )
  return { Approval, implementation }
}

const waitForStatus = (id: string, statuses: ReadonlyArray<string>) =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    return yield* client.get(id).pipe(
      Effect.repeat({ schedule: Schedule.spaced("50 millis"), until: (run) => statuses.includes(run.status) }),
      Effect.timeoutFail({
        duration: "30 seconds",
        onTimeout: () => new Error(`run ${id} did not reach ${statuses.join("/")}`)
      })
    )
  })

/** The store and a client on `url`, with the `SqlClient` for raw SQL. */
const storeLayer = (url: string) =>
  WorkflowClient.layer.pipe(
    Layer.provideMerge(SqlStore.layer()),
    Layer.provideMerge(pgClient(url, { maxConnections: 4 }))
  )

/** The test body in a scope of its own (workers started in it stop before the store closes). */
const onStore = (url: string) => <A, E, R>(effect: Effect.Effect<A, E, R>) =>
  effect.pipe(Effect.scoped, Effect.provide(storeLayer(url)))

const url = await freshDatabase()
const purgeUrl = await freshDatabase()
const emptyUrl = await freshDatabase()

describe("memento on Postgres", () => {
  it.live("show of a compensated run prints each step, attempt and compensation with its error", () =>
    Effect.gen(function*() {
      const counters = makeCounters()
      const { Order, implementation } = saga(`order-${ns()}`, counters)
      yield* startWorker({ workflows: [Order], implementations: implementation })
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, { orderId: "o-1", amount: 42 }, { id: `order-${ns()}` })
      yield* waitForStatus(id, ["compensated", "needs_attention", "failed"])
      assert.strictEqual((yield* client.get(id)).status, "compensated")

      const shown = yield* memento(url, "show", id)
      expectCode(shown, 0, "show")
      const out = shown.stdout
      assert.match(out, new RegExp(`^run\\s+${id}$`, "m"))
      assert.match(out, /^status\s+compensated$/m)
      assert.match(out, /^error\s+PaymentDeclined: card declined$/m)
      // each step in seq order, with kind, status and attempt count
      const stepLines = lines(out, /^\s+\d+\s+(↩ )?\S+\s+(step|COMPENSATION)\s/)
      assert.deepStrictEqual(
        stepLines.map((line) => line.trim().split(/\s+/).slice(0, 4)),
        [
          ["1", "validate", "step", "succeeded"],
          ["2", "price", "step", "succeeded"],
          ["3", "reserve", "step", "succeeded"],
          ["4", "charge", "step", "failed"],
          ["5", "↩", "reserve#compensate", "COMPENSATION"]
        ]
      )
      assert.match(stepLines[3]!, /3 attempts$/)
      assert.match(stepLines[4]!, /COMPENSATION\s+succeeded\s+.*2 attempts$/)
      // every attempt of the failed step with its outcome and error
      assert.deepStrictEqual(
        lines(out, /attempt \d+\s+\S+.*PaymentDeclined: card declined$/).map((line) =>
          line.trim().split(/\s+/).slice(0, 3)
        ),
        [["attempt", "1", "retrying"], ["attempt", "2", "retrying"], ["attempt", "3", "failed"]]
      )
      assert.match(out, /^\s+error: PaymentDeclined: card declined$/m)
      // the compensation, clearly marked, with its failed first attempt and its error
      assert.match(out, /^\s+compensation of "reserve"$/m)
      assert.match(out, /^\s+undone by "reserve#compensate"$/m)
      assert.match(out, /attempt 1\s+retrying\s+.*ReleaseFailed: warehouse timeout$/m)
      assert.match(out, /attempt 2\s+succeeded\s+\S+ \S+\s+\d+(\.\d+)? m?s$/m)

      const json = yield* memento(url, "show", id, "--json")
      expectCode(json, 0, "show --json")
      const details = JSON.parse(json.stdout)
      assert.strictEqual(details.run.status, "compensated")
      assert.deepStrictEqual(details.run.error, {
        _tag: "Failure",
        error: { _tag: "PaymentDeclined", message: "card declined" }
      })
      assert.deepStrictEqual(
        details.entries.map((e: { key: string; status: string }) => [e.key, e.status]),
        [
          ["validate", "succeeded"],
          ["price", "succeeded"],
          ["reserve", "succeeded"],
          ["charge", "failed"],
          ["reserve#compensate", "succeeded"]
        ]
      )
      assert.deepStrictEqual(
        details.entries[3].attempts.map((a: { outcome: string; error: string }) => [a.outcome, a.error]),
        [
          ["retrying", "PaymentDeclined: card declined"],
          ["retrying", "PaymentDeclined: card declined"],
          ["failed", "PaymentDeclined: card declined"]
        ]
      )
      assert.deepStrictEqual(
        details.entries[4].attempts.map((a: { outcome: string }) => a.outcome),
        ["retrying", "succeeded"]
      )
    }).pipe(onStore(url)))

  it.live("retry --from re-runs only from that step; show lists the archived generation", () =>
    Effect.gen(function*() {
      const counters = makeCounters()
      const { Order, implementation } = saga(`order-${ns()}`, counters)
      yield* startWorker({ workflows: [Order], implementations: implementation })
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Order, { orderId: "o-2", amount: 7 }, { id: `order-${ns()}` })
      yield* waitForStatus(id, ["compensated", "needs_attention", "failed"])
      assert.deepStrictEqual(
        { ...counters },
        { ...counters, validate: 1, price: 1, reserve: 1, charge: 3, ship: 0, release: 1 }
      )

      // an unknown step: a typed error naming the run's steps, nothing changes
      const unknown = yield* memento(url, "retry", id, "--from", "nope")
      expectCode(unknown, 1, "retry --from nope")
      assert.match(unknown.stderr, /UnknownStep: .*has no step "nope".*"validate", "price", "reserve", "charge"/)
      assert.strictEqual((yield* client.get(id)).status, "compensated")

      counters.declines = false
      const retried = yield* memento(url, "retry", id, "--from", "price")
      expectCode(retried, 0, "retry --from price")
      assert.strictEqual(retried.stdout.trim(), `${id} (${Order.name}): pending`)
      yield* waitForStatus(id, ["succeeded", "compensated", "needs_attention", "failed"])
      assert.strictEqual(yield* client.result(Order, id), "order o-2 shipped")
      // validate kept its journaled result; price, reserve (whose effect had been undone), charge and ship ran again
      assert.strictEqual(counters.validate, 1)
      assert.strictEqual(counters.price, 2)
      assert.strictEqual(counters.reserve, 2)
      assert.strictEqual(counters.charge, 4)
      assert.strictEqual(counters.ship, 1)
      assert.strictEqual(counters.release, 1)

      const shown = yield* memento(url, "show", id)
      expectCode(shown, 0, "show after retry")
      assert.match(shown.stdout, /^status\s+succeeded$/m)
      assert.match(shown.stdout, /^output\s+"order o-2 shipped"$/m)
      const [current, archived] = shown.stdout.split(/^archived by retry 1 at .*$/m)
      assert.isDefined(archived, shown.stdout)
      assert.deepStrictEqual(
        lines(current!, /^\s+\d+\s+\S+\s+step\s/).map((line) => line.trim().split(/\s+/).slice(1, 4)),
        [
          ["validate", "step", "succeeded"],
          ["price", "step", "succeeded"],
          ["reserve", "step", "succeeded"],
          ["charge", "step", "succeeded"],
          ["ship", "step", "succeeded"]
        ]
      )
      assert.deepStrictEqual(
        lines(archived!, /^\s+\d+\s+(↩ )?\S+\s+(step|COMPENSATION)\s/).map((line) =>
          line.trim().replace("↩ ", "").split(/\s+/).slice(1, 4)
        ),
        [
          ["price", "step", "succeeded"],
          ["reserve", "step", "succeeded"],
          ["charge", "step", "failed"],
          ["reserve#compensate", "COMPENSATION", "succeeded"]
        ]
      )
      assert.match(archived!, /attempt 3\s+failed\s+.*PaymentDeclined: card declined$/m)

      const json = JSON.parse((yield* memento(url, "show", id, "--json")).stdout)
      assert.deepStrictEqual(json.archived.map((g: { generation: number }) => g.generation), [1])
      assert.deepStrictEqual(
        json.entries.map((e: { key: string; attempts: ReadonlyArray<unknown> }) => [e.key, e.attempts.length]),
        [["validate", 1], ["price", 1], ["reserve", 1], ["charge", 1], ["ship", 1]]
      )

      // a succeeded run cannot be retried: a typed error, exit code 1
      const again = yield* memento(url, "retry", id)
      expectCode(again, 1, "retry of a succeeded run")
      assert.strictEqual(again.stderr.trim(), `memento: InvalidRunState: cannot retry run "${id}" in status succeeded`)
    }).pipe(onStore(url)))

  it.live("list pages through runs with filters; --json is machine-readable", () =>
    Effect.gen(function*() {
      const name = `idle-${ns()}`
      const Idle = Workflow.make({ name, payload: Schema.Number })
      const client = yield* WorkflowClient.WorkflowClient
      const ids: Array<string> = []
      for (let i = 0; i < 3; i++) {
        ids.push((yield* client.start(Idle, i, { id: `${name}-${i}` })).id)
        yield* Effect.sleep("5 millis") // distinct creation times
      }
      const first = yield* memento(url, "list", "--workflow", name, "--limit", "2")
      expectCode(first, 0, "list")
      const rows = first.stdout.split("\n")
      assert.match(rows[0]!, /^ID\s+WORKFLOW\s+STATUS\s+CREATED\s+UPDATED$/)
      assert.deepStrictEqual(rows.slice(1, 3).map((row) => row.split(/\s+/).slice(0, 3)), [
        [ids[2], name, "pending"],
        [ids[1], name, "pending"]
      ])
      const cursor = /^next page: --cursor (\S+)$/m.exec(first.stdout)?.[1]
      assert.isDefined(cursor, first.stdout)

      const second = yield* memento(url, "list", "--workflow", name, "--limit", "2", "--cursor", cursor!, "--json")
      expectCode(second, 0, "list --cursor --json")
      const page = JSON.parse(second.stdout)
      assert.deepStrictEqual(page.runs.map((run: { id: string }) => run.id), [ids[0]])
      assert.strictEqual(page.nextCursor, null)
      assert.strictEqual(page.runs[0].payload, 0)
      assert.strictEqual(page.runs[0].workflow, name)
      assert.isTrue(Number.isFinite(Date.parse(page.runs[0].createdAt)))

      const none = JSON.parse(
        (yield* memento(url, "list", "--workflow", name, "--status", "succeeded", "--json")).stdout
      )
      assert.deepStrictEqual(none.runs, [])
      const some = JSON.parse(
        (yield* memento(url, "list", "--workflow", name, "--status", "succeeded", "--status", "pending", "--json"))
          .stdout
      )
      assert.strictEqual(some.runs.length, 3)
      const future = new Date(Date.now() + 3_600_000).toISOString()
      const after = JSON.parse(
        (yield* memento(url, "list", "--workflow", name, "--created-after", future, "--json")).stdout
      )
      assert.deepStrictEqual(after.runs, [])
      const before = JSON.parse(
        (yield* memento(url, "list", "--workflow", name, "--created-before", future, "--json")).stdout
      )
      assert.strictEqual(before.runs.length, 3)
    }).pipe(onStore(url)))

  it.live("signal delivers a JSON value once per signal ID; invalid JSON exits 2", () =>
    Effect.gen(function*() {
      const { Approval, implementation } = approval(`approval-${ns()}`)
      yield* startWorker({ workflows: [Approval], implementations: implementation })
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Approval, "doc-1", { id: `approval-${ns()}` })
      yield* waitForStatus(id, ["waiting"])

      const bad = yield* memento(url, "signal", id, "approve", "{not json")
      expectCode(bad, 2, "signal with invalid JSON")
      assert.match(bad.stderr, /the signal value is not valid JSON/)

      const sent = yield* memento(url, "signal", id, "approve", "true", "--id", "review-1")
      expectCode(sent, 0, "signal")
      assert.strictEqual(sent.stdout.trim(), `signal "approve" sent to ${id}`)
      assert.isTrue(yield* client.result(Approval, id))

      const repeated = yield* memento(url, "signal", id, "approve", "false", "--id", "review-1", "--json")
      expectCode(repeated, 0, "repeated signal")
      assert.deepStrictEqual(JSON.parse(repeated.stdout), { id, name: "approve", duplicate: true })

      const shown = yield* memento(url, "show", id)
      assert.match(shown.stdout, /received "approve", signal ID review-1/)
      assert.match(shown.stdout, /^signals:\n\s+\S+ \S+\s+"approve"\s+ID review-1\s+true$/m)

      const missing = yield* memento(url, "signal", "no-such-run", "approve", "true")
      expectCode(missing, 1, "signal to an unknown run")
      assert.strictEqual(missing.stderr.trim(), `memento: RunNotFound: no workflow run with ID "no-such-run"`)
    }).pipe(onStore(url)))

  it.live("show lists a parent's child runs", () =>
    Effect.gen(function*() {
      const Child = Workflow.make({ name: `child-${ns()}`, payload: Schema.Number, success: Schema.Number })
      const Parent = Workflow.make({ name: `parent-${ns()}`, payload: Schema.Number, success: Schema.Number })
      const implementations = Layer.mergeAll(
        Child.implement((n) => Step.run("double", { success: Schema.Number }, Effect.succeed(n * 2))),
        Parent.implement((n) => Workflow.child(Child, n, { name: "doubling" }).pipe(Effect.orDie))
      )
      yield* startWorker({ workflows: [Parent, Child], implementations })
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Parent, 21, { id: `parent-${ns()}` })
      assert.strictEqual(yield* client.result(Parent, id).pipe(Effect.timeout("30 seconds")), 42)

      const shown = yield* memento(url, "show", id)
      expectCode(shown, 0, "show of a parent")
      const childId = `${id}/doubling`
      assert.match(
        shown.stdout,
        new RegExp(`doubling\\s+child\\s+succeeded\\s.*\\n\\s+child run ${childId} \\(${Child.name}\\)`)
      )
      assert.match(
        shown.stdout,
        new RegExp(
          `^children:\\n\\s+ID\\s+WORKFLOW\\s+STATUS\\s+CREATED\\n\\s+${childId}\\s+${Child.name}\\s+succeeded\\s`,
          "m"
        )
      )
      const json = JSON.parse((yield* memento(url, "show", id, "--json")).stdout)
      assert.deepStrictEqual(
        json.children.map((child: { id: string; status: string; parentId: string }) => [
          child.id,
          child.status,
          child.parentId
        ]),
        [[childId, "succeeded", id]]
      )
    }).pipe(onStore(url)))

  it.live("cancel stops a sleeping run, which compensates; resume replays a parked run", () =>
    Effect.gen(function*() {
      let released = 0
      let broken = true
      const Sleeper = Workflow.make({ name: `sleeper-${ns()}`, payload: Schema.String })
      const Fragile = Workflow.make({ name: `fragile-${ns()}`, payload: Schema.String, success: Schema.String })
      const implementations = Layer.mergeAll(
        Sleeper.implement(() =>
          Effect.gen(function*() {
            yield* Step.run("hold", {
              success: Schema.String,
              compensate: () => Effect.sync(() => void released++)
            }, Effect.succeed("held"))
            yield* Workflow.sleep("cooling-off", "1 hour")
          })
        ),
        Fragile.implement(() =>
          Step.run(
            "work",
            { success: Schema.String },
            Effect.suspend(() => broken ? Effect.die("bug") : Effect.succeed("ok"))
          )
        )
      )
      yield* startWorker({ workflows: [Sleeper, Fragile], implementations })
      const client = yield* WorkflowClient.WorkflowClient

      const sleeping = (yield* client.start(Sleeper, "s", { id: `sleeper-${ns()}` })).id
      yield* waitForStatus(sleeping, ["sleeping"])
      const shown = yield* memento(url, "show", sleeping)
      assert.match(shown.stdout, /cooling-off\s+sleep\s+sleeping\s.*\n\s+sleeping until \S+ \S+/)
      const cancelled = yield* memento(url, "cancel", sleeping, "--json")
      expectCode(cancelled, 0, "cancel")
      assert.isTrue(JSON.parse(cancelled.stdout).cancelRequested)
      yield* waitForStatus(sleeping, ["cancelled"])
      assert.strictEqual(released, 1)
      const twice = yield* memento(url, "cancel", sleeping)
      expectCode(twice, 1, "cancel of a cancelled run")
      assert.strictEqual(
        twice.stderr.trim(),
        `memento: InvalidRunState: cannot cancel run "${sleeping}" in status cancelled`
      )
      assert.match((yield* memento(url, "show", sleeping)).stdout, /^error\s+cancelled by an operator$/m)

      const parked = (yield* client.start(Fragile, "f", { id: `fragile-${ns()}` })).id
      yield* waitForStatus(parked, ["needs_attention"])
      assert.match((yield* memento(url, "show", parked)).stdout, /^error\s+StepDefect: .*bug/m)
      broken = false
      const resumed = yield* memento(url, "resume", parked)
      expectCode(resumed, 0, "resume")
      assert.match(resumed.stdout, new RegExp(`^${parked} \\(${Fragile.name}\\): (pending|running|succeeded)$`, "m"))
      assert.strictEqual(yield* client.result(Fragile, parked), "ok")
      const again = yield* memento(url, "resume", parked)
      expectCode(again, 1, "resume of a succeeded run")
      assert.match(again.stderr, /^memento: InvalidRunState: /)
    }).pipe(onStore(url)))

  it.live("stats counts runs by workflow and status", () =>
    Effect.gen(function*() {
      const name = `counted-${ns()}`
      const Counted = Workflow.make({ name, payload: Schema.Number })
      const client = yield* WorkflowClient.WorkflowClient
      for (let i = 0; i < 4; i++) yield* client.start(Counted, i, { id: `${name}-${i}` })
      const store = yield* SqlClient.SqlClient
      yield* store`UPDATE memento_runs SET status = 'succeeded', runnable_at = NULL, completed_at = updated_at
        WHERE id IN (${`${name}-0`}, ${`${name}-1`})`

      const text = yield* memento(url, "stats")
      expectCode(text, 0, "stats")
      const header = lines(text.stdout, /^WORKFLOW\s/)[0]!.split(/\s+/)
      const row = lines(text.stdout, new RegExp(`^${name}\\s`))[0]!.split(/\s+/)
      const cell = (column: string) => row[header.indexOf(column)]
      assert.strictEqual(cell("PENDING"), "2")
      assert.strictEqual(cell("SUCCEEDED"), "2")
      assert.strictEqual(cell("TOTAL"), "4")
      assert.match(text.stdout, /^\(all\)\s/m)

      const json = JSON.parse((yield* memento(url, "stats", "--json")).stdout)
      assert.deepStrictEqual(
        json.counts.filter((count: { workflow: string }) => count.workflow === name),
        [{ workflow: name, status: "pending", count: 2 }, { workflow: name, status: "succeeded", count: 2 }]
      )
    }).pipe(onStore(url)))

  it.live("purge deletes finished runs older than the age (by status, with a batch size) and nothing else", () =>
    Effect.gen(function*() {
      const own = purgeUrl
      yield* Effect.gen(function*() {
        const name = `old-${ns()}`
        const Old = Workflow.make({ name, payload: Schema.Number })
        const client = yield* WorkflowClient.WorkflowClient
        for (let i = 0; i < 7; i++) yield* client.start(Old, i, { id: `${name}-${i}` })
        const sql = yield* SqlClient.SqlClient
        const day = Duration.toMillis("1 day")
        // 0-4 finished 40 days ago (4 as failed), 5 finished just now, 6 is unfinished and old
        const longAgo = Date.now() - 40 * day
        yield* sql`UPDATE memento_runs SET status = 'succeeded', runnable_at = NULL, completed_at = ${longAgo}
          WHERE id IN (${`${name}-0`}, ${`${name}-1`}, ${`${name}-2`}, ${`${name}-3`})`
        yield* sql`UPDATE memento_runs SET status = 'failed', runnable_at = NULL, completed_at = ${longAgo}
          WHERE id = ${`${name}-4`}`
        yield* sql`UPDATE memento_runs SET status = 'succeeded', runnable_at = NULL, completed_at = ${Date.now()}
          WHERE id = ${`${name}-5`}`
        yield* sql`UPDATE memento_runs SET created_at = ${Date.now() - 50 * day} WHERE id = ${`${name}-6`}`

        const onlyFailed = yield* memento(own, "purge", "--older-than", "30d", "--status", "failed", "--json")
        expectCode(onlyFailed, 0, "purge --status failed")
        assert.deepStrictEqual(JSON.parse(onlyFailed.stdout), { deleted: 1 })

        const purged = yield* memento(own, "purge", "--older-than", "30d", "--batch-size", "2")
        expectCode(purged, 0, "purge")
        assert.strictEqual(purged.stdout.trim(), "deleted 4 runs finished more than 30d ago")
        const left = yield* client.list({ workflow: name })
        assert.deepStrictEqual(left.runs.map((run) => run.id).sort(), [`${name}-5`, `${name}-6`])

        const bad = yield* memento(own, "purge", "--older-than", "soon")
        expectCode(bad, 2, "purge with a bad age")
        assert.match(bad.stderr, /"soon" is not a duration/)
        const missing = yield* memento(own, "purge")
        expectCode(missing, 2, "purge without --older-than")
      }).pipe(onStore(own))
    }))

  it.live("migrate creates the tables of an empty database (with a prefix too); other commands do not", () =>
    Effect.gen(function*() {
      const empty = emptyUrl
      const tables = Effect.flatMap(
        SqlClient.SqlClient,
        (sql) =>
          sql<{ table_name: string }>`SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'`
      ).pipe(Effect.map((rows) => rows.map((row) => row.table_name)))

      const before = yield* memento(empty, "list")
      expectCode(before, 1, "list on an empty database")
      assert.match(before.stderr, /run: memento migrate/)
      assert.deepStrictEqual(yield* tables, [])

      const migrated = yield* memento(empty, "migrate")
      expectCode(migrated, 0, "migrate")
      assert.strictEqual(migrated.stdout.trim(), "the store's tables are up to date")
      assert.include(yield* tables, "memento_runs")
      expectCode(yield* memento(empty, "migrate"), 0, "migrate again")
      const listed = yield* memento(empty, "list")
      expectCode(listed, 0, "list after migrate")
      assert.strictEqual(listed.stdout.trim(), "no runs")

      expectCode(yield* memento(empty, "migrate", "--prefix", "ops_"), 0, "migrate --prefix")
      assert.include(yield* tables, "ops_runs")
      expectCode(yield* memento(empty, "stats", "--prefix", "ops_"), 0, "stats --prefix")
      const badPrefix = yield* memento(empty, "migrate", "--prefix", "Bad-Prefix")
      expectCode(badPrefix, 2, "an invalid prefix")
      assert.match(badPrefix.stderr, /invalid --prefix "Bad-Prefix"/)
    }).pipe(Effect.provide(pgClient(emptyUrl))))

  it.live("worker --module executes the module's workflows until SIGTERM, then exits 0", () =>
    Effect.gen(function*() {
      const name = `greet-${ns()}`
      const Greet = Workflow.make({ name, payload: Schema.String, success: Schema.String })
      const module = fileURLToPath(new URL("fixtures/greeter.mjs", import.meta.url))
      const child = spawn("node", [bin, "worker", "--module", module, "--concurrency", "2"], {
        env: { ...process.env, DATABASE_URL: url, GREETER_WORKFLOW: name },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let stderr = ""
      child.stderr.on("data", (chunk) => (stderr += String(chunk)))
      const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)))
      yield* Effect.addFinalizer(() => Effect.sync(() => child.kill("SIGKILL")))

      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Greet, "ada", { id: `${name}-1` })
      const greeting = yield* client.result(Greet, id).pipe(Effect.timeout("30 seconds"))
      assert.strictEqual(greeting, `hello ada from pid ${child.pid}`)
      assert.match(stderr, new RegExp(`memento worker: executing ${name} until SIGINT or SIGTERM`))

      child.kill("SIGTERM")
      const code = yield* Effect.promise(() => exited).pipe(Effect.timeout("20 seconds"))
      assert.strictEqual(code, 0, stderr)

      const badModule = yield* memento(
        url,
        "worker",
        "--module",
        fileURLToPath(new URL("fixtures/not-a-worker.mjs", import.meta.url))
      )
      expectCode(badModule, 2, "worker with a module that exports no workflows")
      assert.match(badModule.stderr, /must export "workflows"/)
    }).pipe(onStore(url)))

  it.live("wrong arguments give a clear message and exit code 2", () =>
    Effect.gen(function*() {
      const cases: ReadonlyArray<readonly [ReadonlyArray<string>, RegExp]> = [
        [["frobnicate"], /Invalid subcommand for memento - use one of 'list', 'show'/],
        [["show"], /Missing argument <id>/],
        [["list", "--limit", "many"], /'many' is not a integer/],
        [["list", "--limit", "0"], /--limit must be 1 to 1000/],
        [["list", "--status", "finished"], /Expected one of the following cases: pending/],
        [["list", "--created-after", "yesterday-ish"], /created-after|date/i],
        [["retry"], /Missing argument <id>/],
        [["signal", "run-1", "approve"], /Missing argument <json>/],
        [["list", "--sqlite", "/nonexistent/memento.db"], /must exist/],
        [["show", "a", "b"], /Received unknown argument: 'b'/],
        [[], /missing command/]
      ]
      for (const [args, message] of cases) {
        const result = yield* memento(url, ...args)
        expectCode(result, 2, `memento ${args.join(" ")}`)
        assert.match(result.stderr, message, `memento ${args.join(" ")}`)
        assert.strictEqual(result.stdout, "", `memento ${args.join(" ")} prints nothing on stdout`)
      }
      const noDatabase = yield* memento(null, "list")
      expectCode(noDatabase, 2, "no DATABASE_URL")
      assert.strictEqual(
        noDatabase.stderr.trim(),
        "memento: no database: set DATABASE_URL to a postgres:// URL, or pass --sqlite FILE"
      )
      const unreachable = yield* memento("postgres://nobody@127.0.0.1:1/none", "list")
      expectCode(unreachable, 1, "an unreachable database")
      assert.match(unreachable.stderr, /^memento: /)
    }))
})

describe("memento on SQLite", () => {
  it.scopedLive("list and show with --sqlite FILE", () =>
    Effect.gen(function*() {
      const file = tempSqliteFile()
      const counters = makeCounters()
      const { Order, implementation } = saga(`order-${ns()}`, counters)
      const context = yield* Layer.build(
        WorkflowClient.layer.pipe(Layer.provideMerge(SqlStore.layer()), Layer.provideMerge(sqliteClient(file)))
      )
      const client = Context.get(context, WorkflowClient.WorkflowClient)
      yield* startWorker({ workflows: [Order], implementations: implementation }).pipe(Effect.provide(context))
      const { id } = yield* client.start(Order, { orderId: "s-1", amount: 3 }, { id: `order-${ns()}` })
      yield* waitForStatus(id, ["compensated", "needs_attention", "failed"]).pipe(Effect.provide(context))
      assert.isTrue(existsSync(file))

      const listed = yield* memento(null, "list", "--sqlite", file)
      expectCode(listed, 0, "list --sqlite")
      assert.match(listed.stdout, new RegExp(`^${id}\\s+${Order.name}\\s+compensated\\s`, "m"))

      const shown = yield* memento(null, "show", id, "--sqlite", file)
      expectCode(shown, 0, "show --sqlite")
      assert.match(shown.stdout, /^status\s+compensated$/m)
      assert.match(shown.stdout, /charge\s+step\s+failed\s.*3 attempts$/m)
      assert.match(shown.stdout, /↩ reserve#compensate\s+COMPENSATION\s+succeeded/)
      assert.match(shown.stdout, /attempt 1\s+retrying\s+.*ReleaseFailed: warehouse timeout$/m)

      const json = JSON.parse((yield* memento(null, "list", "--sqlite", file, "--json")).stdout)
      assert.deepStrictEqual(json.runs.map((run: { id: string; status: string }) => [run.id, run.status]), [[
        id,
        "compensated"
      ]])
    }))

  it.live("--sqlite FILE that is not a database: one line naming the file, exit 1, the file untouched", () =>
    Effect.gen(function*() {
      const file = tempSqliteFile()
      writeFileSync(file, "a shopping list, not a database\n")
      for (const command of [["list"], ["migrate"]]) {
        const result = yield* memento(null, ...command, "--sqlite", file)
        expectCode(result, 1, `${command[0]} --sqlite on a text file`)
        assert.strictEqual(
          result.stderr.trim(),
          `memento: SqlError: cannot open the SQLite file ${file}: file is not a database`
        )
      }
      assert.strictEqual(readFileSync(file, "utf8"), "a shopping list, not a database\n")
    }))
})
