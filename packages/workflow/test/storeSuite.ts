/**
 * The conformance suite of the `WorkflowStore` port. Every store (memory, SQLite, Postgres) runs it:
 *
 * ```ts
 * storeSuite("MemoryStore", MemoryStore.layer)
 * storeSuite("SqlStore (Postgres)", SqlStore.layer.pipe(Layer.provide(PgLive)), { live: true })
 * ```
 *
 * The layer is built once per suite and shared by its tests, so every test works in its own
 * namespace (random run IDs and workflow names) and the suite can run against a shared database.
 * With `live: false` time is driven by `TestClock`; with `live: true` the tests wait for real
 * (short leases, real sleeps), for stores whose clock is the database's.
 */
import { assert, layer as testLayer } from "@effect/vitest"
import { InvalidRunState, LeaseLost, RunNotFound } from "@memento/workflow/WorkflowError"
import type {
  AttemptRecord,
  Commit,
  EntryStatus,
  JournalEntry,
  RunRecord,
  RunStatus,
  RunTransition,
  SignalDelivery
} from "@memento/workflow/WorkflowStore"
import { allStatuses, WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Cause, Clock, Effect, Fiber, Option, Stream, TestClock, TestServices } from "effect"
import type { Layer } from "effect"

type Store = WorkflowStore["Type"]

const namespace = (): string => Math.random().toString(36).slice(2, 10)

const pad = (n: number): string => String(n).padStart(2, "0")

const entry = (key: string, seq: number, status: EntryStatus, fields: Partial<JournalEntry> = {}): JournalEntry => ({
  key,
  seq,
  kind: "step",
  status,
  output: status === "succeeded" ? JSON.stringify(`${key}-result`) : null,
  error: status === "failed" ? JSON.stringify(`${key}-error`) : null,
  attempts: 1,
  meta: null,
  startedAt: 1_000 + seq,
  completedAt: status === "started" ? null : 2_000 + seq,
  ...fields
})

const attempt = (key: string, n: number, fields: Partial<AttemptRecord> = {}): AttemptRecord => ({
  key,
  attempt: n,
  outcome: "running",
  error: null,
  startedAt: 1_000 + n,
  endedAt: null,
  ...fields
})

const transition = (status: RunStatus, fields: Partial<RunTransition> = {}): RunTransition => ({
  status,
  runnableAt: null,
  release: true,
  ...fields
})

const newestFirst = (a: RunRecord, b: RunRecord): number =>
  b.createdAt - a.createdAt || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0)

/**
 * Registers the conformance suite for the store built by `layer`.
 */
export const storeSuite = (
  name: string,
  layer: Layer.Layer<WorkflowStore, unknown>,
  options?: { readonly live?: boolean | undefined }
): void => {
  const live = options?.live ?? false
  /** A lease that never expires during a test. */
  const long = 600_000
  /** A lease that tests let expire. */
  const short = live ? 300 : 1_000
  /** Moves the clock: `TestClock` in memory, a real sleep against a database. */
  const advance = (millis: number) => live ? Effect.sleep(millis) : TestClock.adjust(millis)
  /** Lets a lease of `short` milliseconds expire (exactly at its expiry in TestClock mode). */
  const expireShort = advance(live ? short + 250 : short)
  /** Distinct creation times for runs created one after another. */
  const tick = advance(live ? 5 : 1)
  /** Real time, even under `TestClock` (subscriptions, event delivery). */
  const realTime = <A, E, R>(effect: Effect.Effect<A, E, R>) => live ? effect : TestServices.provideLive(effect)

  const commitOf = (run: RunRecord, fields: Partial<Commit> = {}): Commit => ({
    runId: run.id,
    epoch: run.epoch,
    leaseMs: long,
    entries: [],
    attempts: [],
    ...fields
  })

  /** The stored run; fails the test (`NoSuchElementException`) when there is none. */
  const getRun = (store: Store, runId: string) => Effect.flatten(store.get(runId))

  /** Creates a run in a fresh workflow and claims it as `worker-a`. */
  const claimedRun = (store: Store, leaseMs: number = long) =>
    Effect.gen(function*() {
      const ns = namespace()
      const workflow = `wf-${ns}`
      yield* store.create({ id: `run-${ns}`, workflow, payload: `{"ns":"${ns}"}` })
      const claimed = yield* store.claim({ workerId: "worker-a", workflows: [workflow], limit: 1, leaseMs })
      assert.strictEqual(claimed.length, 1)
      return claimed[0]
    })

  const claimOne = (store: Store, run: RunRecord, workerId: string, leaseMs: number = long) =>
    store.claim({ workerId, workflows: [run.workflow], limit: 10, leaseMs })

  const assertLeaseLost = (error: unknown, runId: string, epoch: number) => {
    assert.instanceOf(error, LeaseLost)
    assert.strictEqual(error.workflowId, runId)
    assert.strictEqual(error.epoch, epoch)
  }

  testLayer(layer, { excludeTestServices: live, timeout: "180 seconds" })(name, (it) => {
    // ---------------------------------------------------------------------------------------------
    // create
    // ---------------------------------------------------------------------------------------------

    it.effect("create inserts a pending, immediately runnable run", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const now = yield* Clock.currentTimeMillis
        const { created, run } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "[1,2]" })
        assert.isTrue(created)
        assert.deepStrictEqual({ ...run, createdAt: 0, updatedAt: 0, runnableAt: 0 }, {
          id: `run-${ns}`,
          workflow: `wf-${ns}`,
          status: "pending",
          payload: "[1,2]",
          output: null,
          error: null,
          epoch: 0,
          leaseOwner: null,
          leaseExpiresAt: null,
          runnableAt: 0,
          cancelRequested: false,
          recoveries: 0,
          parentId: null,
          createdAt: 0,
          updatedAt: 0,
          completedAt: null
        })
        assert.strictEqual(run.updatedAt, run.createdAt)
        assert.strictEqual(run.runnableAt, run.createdAt)
        if (!live) assert.strictEqual(run.createdAt, now)

        const child = yield* store.create({ id: `child-${ns}`, workflow: `wf-${ns}`, payload: "{}", parentId: run.id })
        assert.strictEqual(child.run.parentId, run.id)
        assert.deepStrictEqual(yield* getRun(store, run.id), run)
      }))

    it.effect("create returns an existing run unchanged", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const first = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "\"a\"" })
        yield* tick
        const again = yield* store.create({ id: `run-${ns}`, workflow: `other-${ns}`, payload: "\"b\"" })
        assert.isFalse(again.created)
        assert.deepStrictEqual(again.run, first.run)
        assert.deepStrictEqual(yield* getRun(store, first.run.id), first.run)
      }))

    it.effect("50 concurrent creates of one ID create one run", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const results = yield* Effect.all(
          Array.from({ length: 50 }, (_, i) =>
            store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: String(i) })),
          { concurrency: "unbounded" }
        )
        assert.strictEqual(
          results.filter((result) =>
            result.created
          ).length,
          1
        )
        const stored = yield* getRun(store, `run-${ns}`)
        for (const result of results) assert.deepStrictEqual(result.run, stored)
        const page = yield* store.list({ workflow: `wf-${ns}` })
        assert.strictEqual(page.runs.length, 1)
      }))

    // ---------------------------------------------------------------------------------------------
    // claim, heartbeat, release
    // ---------------------------------------------------------------------------------------------

    it.effect("claim takes only runs of the given workflows", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        for (const wf of ["a", "b", "c"]) {
          yield* store.create({ id: `run-${ns}-${wf}`, workflow: `wf-${ns}-${wf}`, payload: "{}" })
        }
        const claimed = yield* store.claim({
          workerId: "worker-a",
          workflows: [`wf-${ns}-a`, `wf-${ns}-c`, `wf-${ns}-unknown`],
          limit: 10,
          leaseMs: long
        })
        assert.deepStrictEqual(claimed.map((run) => run.id).sort(), [`run-${ns}-a`, `run-${ns}-c`])
        assert.strictEqual((yield* getRun(store, `run-${ns}-b`)).status, "pending")
        assert.deepStrictEqual(
          yield* store.claim({ workerId: "worker-a", workflows: [], limit: 10, leaseMs: long }),
          []
        )
      }))

    it.effect("claim respects the limit and returns the leased records", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        for (let i = 0; i < 5; i++) {
          yield* store.create({ id: `run-${ns}-${i}`, workflow, payload: "{}" })
          yield* tick
        }
        const request = { workerId: "worker-a", workflows: [workflow], limit: 2, leaseMs: long }
        const first = yield* store.claim(request)
        assert.deepStrictEqual(first.map((run) => run.id), [`run-${ns}-0`, `run-${ns}-1`])
        for (const run of first) {
          assert.strictEqual(run.status, "running")
          assert.strictEqual(run.epoch, 1)
          assert.strictEqual(run.leaseOwner, "worker-a")
          assert.strictEqual(run.leaseExpiresAt, run.updatedAt + long)
          assert.strictEqual(run.recoveries, 0)
          assert.deepStrictEqual(yield* getRun(store, run.id), run)
        }
        assert.deepStrictEqual((yield* store.claim(request)).map((run) => run.id), [`run-${ns}-2`, `run-${ns}-3`])
        assert.deepStrictEqual((yield* store.claim(request)).map((run) => run.id), [`run-${ns}-4`])
        assert.deepStrictEqual(yield* store.claim(request), [])
      }))

    it.effect("claim orders by runnableAt, then createdAt", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        const ids = [1, 2, 3].map((i) => `run-${ns}-${i}`)
        for (const id of ids) {
          yield* store.create({ id, workflow, payload: "{}" })
          yield* tick
        }
        const request = { workerId: "worker-a", workflows: [workflow], limit: 1, leaseMs: long }
        const [r1] = yield* store.claim(request)
        const [r2, r3] = yield* store.claim({ ...request, limit: 2 })
        assert.deepStrictEqual([r1.id, r2.id, r3.id], ids)
        const base = Math.max(r1.updatedAt, r2.updatedAt, r3.updatedAt)
        yield* store.commit(commitOf(r1, { transition: transition("sleeping", { runnableAt: base + 30 }) }))
        yield* store.commit(commitOf(r2, { transition: transition("sleeping", { runnableAt: base + 10 }) }))
        yield* store.commit(commitOf(r3, { transition: transition("sleeping", { runnableAt: base + 20 }) }))
        yield* advance(live ? 100 : 30)
        const due = yield* store.claim({ ...request, limit: 3 })
        assert.deepStrictEqual(due.map((run) => run.id), [r2.id, r3.id, r1.id])
      }))

    it.effect("claim never takes finished or parked runs", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        for (const status of ["succeeded", "failed", "compensated", "cancelled", "needs_attention", "dead"] as const) {
          const run = yield* claimedRun(store)
          yield* store.commit(commitOf(run, { transition: transition(status, { runnableAt: run.updatedAt }) }))
          yield* tick
          assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [], status)
          assert.strictEqual((yield* getRun(store, run.id)).status, status)
        }
      }))

    it.effect("concurrent claims never take the same run", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        yield* Effect.all(
          Array.from({ length: 20 }, (_, i) => store.create({ id: `run-${ns}-${pad(i)}`, workflow, payload: "{}" })),
          { concurrency: "unbounded" }
        )
        const workers = ["worker-0", "worker-1", "worker-2", "worker-3"]
        const claims = yield* Effect.all(
          workers.map((workerId) => store.claim({ workerId, workflows: [workflow], limit: 20, leaseMs: long })),
          { concurrency: "unbounded" }
        )
        const ids = claims.flatMap((runs) => runs.map((run) => run.id))
        assert.strictEqual(ids.length, 20)
        assert.strictEqual(new Set(ids).size, 20)
        claims.forEach((runs, i) => {
          for (const run of runs) {
            assert.strictEqual(run.leaseOwner, workers[i])
            assert.strictEqual(run.epoch, 1)
          }
        })
      }))

    it.effect("an expired lease makes the run claimable again, with a new epoch and a recovery", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const first = yield* claimedRun(store, short)
        assert.strictEqual(first.epoch, 1)
        assert.strictEqual(first.recoveries, 0)
        assert.deepStrictEqual(yield* claimOne(store, first, "worker-b", short), [])
        yield* expireShort
        const [second] = yield* claimOne(store, first, "worker-b", long)
        assert.strictEqual(second.id, first.id)
        assert.strictEqual(second.epoch, 2)
        assert.strictEqual(second.recoveries, 1)
        assert.strictEqual(second.leaseOwner, "worker-b")
        assert.strictEqual(second.status, "running")
        assert.deepStrictEqual(
          yield* store.heartbeat({ workerId: "worker-a", runs: [{ id: first.id, epoch: 1 }], leaseMs: long }),
          []
        )
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(first))), first.id, 1)
        assert.deepStrictEqual(
          yield* store.heartbeat({ workerId: "worker-b", runs: [{ id: first.id, epoch: 2 }], leaseMs: long }),
          [first.id]
        )
      }))

    it.effect("create with claim makes a running run leased to that worker; an expired lease lets others recover it", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        const { created, run } = yield* store.create({
          id: `run-${ns}`,
          workflow,
          payload: "{}",
          claim: { workerId: "worker-a", leaseMs: short }
        })
        assert.isTrue(created)
        assert.strictEqual(run.status, "running")
        assert.strictEqual(run.epoch, 1)
        assert.strictEqual(run.leaseOwner, "worker-a")
        assert.strictEqual(run.recoveries, 0)
        assert.isNotNull(run.leaseExpiresAt)
        // held: nobody else claims it, and its owner commits under epoch 1
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b", long), [])
        yield* store.commit(commitOf(run, { leaseMs: short, entries: [entry("a", 1, "started")] }))
        // the owner died: the lease expires and another worker recovers the run
        yield* expireShort
        const [recovered] = yield* claimOne(store, run, "worker-b", long)
        assert.strictEqual(recovered.id, run.id)
        assert.strictEqual(recovered.epoch, 2)
        assert.strictEqual(recovered.recoveries, 1)
        assert.strictEqual(recovered.leaseOwner, "worker-b")
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(run))), run.id, 1)
        // an existing ID is returned unchanged, not claimed again
        const again = yield* store.create({
          id: run.id,
          workflow,
          payload: "{}",
          claim: { workerId: "worker-c", leaseMs: long }
        })
        assert.isFalse(again.created)
        assert.strictEqual(again.run.leaseOwner, "worker-b")
        assert.strictEqual(again.run.epoch, 2)
      }))

    it.effect("create with claim announces no RunnableChanged (a create without one does)", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        const events = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === workflow),
          Stream.take(1),
          Stream.runCollect,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))
        yield* store.create({ id: `claimed-${ns}`, workflow, payload: "{}", claim: { workerId: "w", leaseMs: long } })
        yield* realTime(Effect.sleep(live ? "300 millis" : "20 millis"))
        assert.isNull(events.unsafePoll(), "no event for the claimed create")
        yield* store.create({ id: `plain-${ns}`, workflow, payload: "{}" })
        const received = yield* realTime(Effect.timeout(Fiber.join(events), "5 seconds"))
        assert.strictEqual(received.length, 1)
      }))

    it.effect("a commit with create stores the run claimed, with its journal rows, in one write", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        const runId = `run-${ns}`
        const now = yield* Clock.currentTimeMillis
        const result = yield* store.commit({
          runId,
          epoch: 1,
          leaseMs: short,
          entries: [entry("a", 1, "started")],
          attempts: [attempt("a", 1)],
          create: { workflow, payload: "[7]", workerId: "worker-a" }
        })
        assert.deepStrictEqual(result, { cancelRequested: false })
        const details = yield* store.inspect(runId)
        assert.deepStrictEqual(details.entries, [entry("a", 1, "started")])
        assert.deepStrictEqual(details.attempts, [attempt("a", 1)])
        const run = details.run
        assert.deepStrictEqual({ ...run, createdAt: 0, updatedAt: 0, runnableAt: 0, leaseExpiresAt: 0 }, {
          id: runId,
          workflow,
          status: "running",
          payload: "[7]",
          output: null,
          error: null,
          epoch: 1,
          leaseOwner: "worker-a",
          leaseExpiresAt: 0,
          runnableAt: 0,
          cancelRequested: false,
          recoveries: 0,
          parentId: null,
          createdAt: 0,
          updatedAt: 0,
          completedAt: null
        })
        // the lease runs from the commit (a store may read its clock once per statement)
        assert.strictEqual(run.leaseExpiresAt, run.updatedAt + short)
        assert.isAtLeast(run.updatedAt, run.createdAt)
        assert.strictEqual(run.runnableAt, run.createdAt)
        if (!live) assert.strictEqual(run.createdAt, now)
        // held: nobody else claims it, and its owner goes on committing under epoch 1
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b", long), [])
        yield* store.commit(commitOf(run, { leaseMs: short, entries: [entry("a", 1, "succeeded")] }))
        // the owner died: the lease expires and another worker recovers the run, as after a create with claim
        yield* expireShort
        const [recovered] = yield* claimOne(store, run, "worker-b", long)
        assert.strictEqual(recovered.epoch, 2)
        assert.strictEqual(recovered.recoveries, 1)
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(run))), runId, 1)
      }))

    it.effect("a commit with create applies its transition to the new run (a run done in one write)", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const runId = `run-${ns}`
        const finished = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunFinished" && event.runId === runId),
          Stream.runHead,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))
        yield* store.commit({
          runId,
          epoch: 1,
          leaseMs: long,
          entries: [entry("a", 1, "succeeded")],
          attempts: [attempt("a", 1, { outcome: "succeeded", endedAt: 1_100 })],
          transition: transition("failed", { output: null, error: "\"no\"" }),
          create: { workflow: `wf-${ns}`, payload: "{}", workerId: "worker-a" }
        })
        const run = yield* getRun(store, runId)
        assert.strictEqual(run.status, "failed")
        assert.strictEqual(run.error, "\"no\"")
        assert.isNull(run.leaseOwner)
        assert.isNull(run.leaseExpiresAt)
        assert.isNull(run.runnableAt)
        assert.isNotNull(run.completedAt)
        const event = yield* realTime(Effect.timeout(Fiber.join(finished), "5 seconds"))
        assert.deepStrictEqual(Option.getOrNull(event), { _tag: "RunFinished", runId })
        const alerts = yield* store.alerts(runId)
        assert.deepStrictEqual(alerts.map((alert) => [alert.id, alert.status, alert.error]), [
          [`${runId}/1/failed`, "failed", "\"no\""]
        ])

        // a sleeping run: released, claimable when due
        const sleeper = `sleeper-${ns}`
        const now = yield* Clock.currentTimeMillis
        yield* store.commit({
          runId: sleeper,
          epoch: 1,
          leaseMs: long,
          entries: [entry("nap", 1, "started", { kind: "sleep" })],
          attempts: [],
          transition: transition("sleeping", { runnableAt: now + 60_000 }),
          create: { workflow: `sleepy-${ns}`, payload: "{}", workerId: "worker-a" }
        })
        const sleeping = yield* getRun(store, sleeper)
        assert.strictEqual(sleeping.status, "sleeping")
        assert.strictEqual(sleeping.runnableAt, now + 60_000)
        assert.isNull(sleeping.leaseOwner)
        assert.deepStrictEqual(yield* claimOne(store, sleeping, "worker-b"), [])
      }))

    it.effect("a commit with create of an existing run fails with LeaseLost and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const { run } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "\"first\"" })
        const before = yield* store.inspect(run.id)
        const commit: Commit = {
          runId: run.id,
          epoch: 1,
          leaseMs: long,
          entries: [entry("a", 1, "started")],
          attempts: [attempt("a", 1)],
          create: { workflow: `other-${ns}`, payload: "\"second\"", workerId: "worker-a" }
        }
        assertLeaseLost(yield* Effect.flip(store.commit(commit)), run.id, 1)
        assert.deepStrictEqual(yield* store.inspect(run.id), before)
        // nor inside a transaction, whose effect's writes are then rolled back where the store can
        assertLeaseLost(yield* Effect.flip(store.transaction(Effect.succeed(1), () => commit)), run.id, 1)
        assert.deepStrictEqual(yield* store.inspect(run.id), before)
        // and a claimed run (epoch 1, held) is not overwritten either
        const claimed = yield* claimedRun(store)
        const held = yield* store.inspect(claimed.id)
        assertLeaseLost(yield* Effect.flip(store.commit({ ...commit, runId: claimed.id })), claimed.id, 1)
        assert.deepStrictEqual(yield* store.inspect(claimed.id), held)
      }))

    it.effect("concurrent commits creating one run: one creates it, the others fail with LeaseLost", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const runId = `run-${ns}`
        const others = yield* Effect.forEach(
          Array.from({ length: 8 }, (_, i) => i),
          (i) =>
            store.create({ id: `other-${ns}-${i}`, workflow: `wf-${ns}`, payload: "{}" }).pipe(
              Effect.zipRight(store.claim({ workerId: `w${i}`, workflows: [`wf-${ns}`], limit: 1, leaseMs: long }))
            )
        )
        const exits = yield* Effect.all(
          [
            ...Array.from({ length: 20 }, (_, i) =>
              store.commit({
                runId,
                epoch: 1,
                leaseMs: long,
                entries: [entry("a", 1, "started", { meta: String(i) })],
                attempts: [],
                create: { workflow: `wf-${ns}`, payload: String(i), workerId: `worker-${i}` }
              })),
            // commits of runs that exist, in the same batches where the store batches
            ...others.flat().map((run) => store.commit(commitOf(run, { entries: [entry("b", 1, "started")] })))
          ].map(Effect.exit),
          { concurrency: "unbounded" }
        )
        const creating = exits.slice(0, 20)
        assert.strictEqual(creating.filter((exit) => exit._tag === "Success").length, 1)
        for (const exit of creating) {
          if (exit._tag === "Failure") assertLeaseLost(Option.getOrThrow(Cause.failureOption(exit.cause)), runId, 1)
        }
        assert.isTrue(exits.slice(20).every((exit) => exit._tag === "Success"))
        const winner = creating.findIndex((exit) => exit._tag === "Success")
        const details = yield* store.inspect(runId)
        assert.strictEqual(details.run.payload, String(winner))
        assert.strictEqual(details.run.leaseOwner, `worker-${winner}`)
        assert.deepStrictEqual(details.entries.map((e) => e.meta), [String(winner)])
      }))

    it.effect("heartbeat extends only the leases the worker still holds", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const lease = live ? 600 : 1_000
        const run = yield* claimedRun(store, lease)
        yield* advance(lease * 0.6)
        const held = yield* store.heartbeat({
          workerId: "worker-a",
          runs: [{ id: run.id, epoch: 1 }, { id: `${run.id}-missing`, epoch: 1 }],
          leaseMs: lease
        })
        assert.deepStrictEqual(held, [run.id])
        const extended = yield* getRun(store, run.id)
        if (!live) assert.strictEqual(extended.leaseExpiresAt, run.updatedAt + lease * 0.6 + lease)
        assert.isAbove(extended.leaseExpiresAt ?? 0, run.leaseExpiresAt ?? Infinity)
        yield* advance(lease * 0.6)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
        assert.deepStrictEqual(
          yield* store.heartbeat({ workerId: "worker-b", runs: [{ id: run.id, epoch: 1 }], leaseMs: lease }),
          []
        )
        assert.deepStrictEqual(
          yield* store.heartbeat({ workerId: "worker-a", runs: [{ id: run.id, epoch: 2 }], leaseMs: lease }),
          []
        )
        yield* advance(live ? lease + 250 : lease)
        assert.deepStrictEqual(
          yield* store.heartbeat({ workerId: "worker-a", runs: [{ id: run.id, epoch: 1 }], leaseMs: lease }),
          []
        )
      }))

    it.effect("release drops the lease so the run is claimable at once; a stale epoch is ignored", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.release(run.id, 0)
        assert.deepStrictEqual(yield* getRun(store, run.id), run)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])

        yield* store.release(run.id, 1)
        const released = yield* getRun(store, run.id)
        assert.deepStrictEqual(released, { ...released, leaseOwner: null, leaseExpiresAt: null })
        assert.deepStrictEqual({ ...released, updatedAt: 0 }, {
          ...run,
          leaseOwner: null,
          leaseExpiresAt: null,
          updatedAt: 0
        })
        const [again] = yield* claimOne(store, run, "worker-b")
        assert.strictEqual(again.id, run.id)
        assert.strictEqual(again.epoch, 2)
        assert.strictEqual(again.recoveries, 0)
        assert.strictEqual(again.leaseOwner, "worker-b")
      }))

    // ---------------------------------------------------------------------------------------------
    // commit
    // ---------------------------------------------------------------------------------------------

    it.effect("commit with a superseded epoch fails with LeaseLost and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const first = yield* claimedRun(store, short)
        yield* expireShort
        const [second] = yield* claimOne(store, first, "worker-b")
        assert.strictEqual(second.epoch, 2)
        const before = yield* store.inspect(first.id)
        const error = yield* Effect.flip(store.commit(commitOf(first, {
          entries: [entry("step-a", 1, "succeeded")],
          attempts: [attempt("step-a", 1, { outcome: "succeeded", endedAt: 2_000 })],
          transition: transition("succeeded", { output: "\"stale\"" })
        })))
        assertLeaseLost(error, first.id, 1)
        assert.deepStrictEqual(yield* store.inspect(first.id), before)
        assert.deepStrictEqual(before.run, second)
        assert.deepStrictEqual(before.entries, [])
        assert.deepStrictEqual(before.attempts, [])
      }))

    it.effect("commit after the lease expired fails with LeaseLost and writes nothing", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store, short)
        yield* store.commit(commitOf(run, { leaseMs: short, entries: [entry("step-a", 1, "started")] }))
        yield* expireShort
        const before = yield* store.inspect(run.id)
        const error = yield* Effect.flip(store.commit(commitOf(run, {
          entries: [entry("step-a", 1, "succeeded"), entry("step-b", 2, "started")],
          attempts: [attempt("step-a", 1)]
        })))
        assertLeaseLost(error, run.id, 1)
        assert.deepStrictEqual(yield* store.inspect(run.id), before)
        assert.deepStrictEqual(before.entries, [entry("step-a", 1, "started")])

        const ns = namespace()
        const { run: unclaimed } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(unclaimed))), unclaimed.id, 0)
        assert.deepStrictEqual(yield* getRun(store, unclaimed.id), unclaimed)
        assertLeaseLost(
          yield* Effect.flip(store.commit(commitOf({ ...unclaimed, id: `missing-${ns}` }))),
          `missing-${ns}`,
          0
        )
      }))

    it.effect("commit upserts entries by key and attempts by (key, attempt)", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const result = yield* store.commit(commitOf(run, {
          entries: [entry("step-a", 1, "started")],
          attempts: [attempt("step-a", 1)]
        }))
        assert.deepStrictEqual(result, { cancelRequested: false })
        const second = commitOf(run, {
          entries: [
            entry("step-b", 2, "started", { meta: "{\"wakeAt\":5}" }),
            entry("step-a", 1, "succeeded", { attempts: 2 })
          ],
          attempts: [
            attempt("step-a", 1, { outcome: "retrying", error: "\"flaky\"", endedAt: 1_500 }),
            attempt("step-a", 2, { outcome: "succeeded", endedAt: 1_900 }),
            attempt("step-b", 1)
          ]
        })
        yield* store.commit(second)
        yield* store.commit(second)
        const snapshot = yield* store.load(run.id)
        assert.deepStrictEqual(snapshot.entries, [
          entry("step-a", 1, "succeeded", { attempts: 2 }),
          entry("step-b", 2, "started", { meta: "{\"wakeAt\":5}" })
        ])
        assert.deepStrictEqual(snapshot.signals, [])
        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.attempts, [
          attempt("step-a", 1, { outcome: "retrying", error: "\"flaky\"", endedAt: 1_500 }),
          attempt("step-a", 2, { outcome: "succeeded", endedAt: 1_900 }),
          attempt("step-b", 1)
        ])
        const stored = yield* getRun(store, run.id)
        assert.strictEqual(stored.status, "running")
        assert.strictEqual(stored.epoch, 1)
      }))

    it.effect("commit without a transition extends the lease", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const lease = live ? 800 : 1_000
        const step = live ? 500 : 600
        const run = yield* claimedRun(store, lease)
        yield* advance(step)
        yield* store.commit(commitOf(run, { leaseMs: lease, entries: [entry("step-a", 1, "started")] }))
        const extended = yield* getRun(store, run.id)
        assert.strictEqual(extended.leaseExpiresAt, extended.updatedAt + lease)
        if (!live) assert.strictEqual(extended.updatedAt, run.updatedAt + step)
        assert.strictEqual(extended.leaseOwner, "worker-a")
        yield* advance(step)
        yield* store.commit(commitOf(run, { leaseMs: lease, entries: [entry("step-a", 1, "succeeded")] }))
        yield* advance(live ? lease + 250 : lease)
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(run))), run.id, 1)
      }))

    it.effect("a sleeping run releases its lease and is not claimable until it is due", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const delay = live ? 500 : 1_000
        const run = yield* claimedRun(store)
        const wakeAt = run.updatedAt + delay
        yield* store.commit(commitOf(run, {
          entries: [entry("nap", 1, "started", { kind: "sleep", meta: `{"wakeAt":${wakeAt}}` })],
          transition: transition("sleeping", { runnableAt: wakeAt })
        }))
        const sleeping = yield* getRun(store, run.id)
        assert.strictEqual(sleeping.status, "sleeping")
        assert.strictEqual(sleeping.runnableAt, wakeAt)
        assert.strictEqual(sleeping.leaseOwner, null)
        assert.strictEqual(sleeping.leaseExpiresAt, null)
        assert.strictEqual(sleeping.completedAt, null)
        assert.strictEqual(sleeping.epoch, 1)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
        yield* advance(live ? delay + 100 : delay - 1)
        if (!live) {
          assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
          yield* advance(1)
        }
        const [woken] = yield* claimOne(store, run, "worker-b")
        assert.strictEqual(woken.id, run.id)
        assert.strictEqual(woken.status, "running")
        assert.strictEqual(woken.epoch, 2)
        assert.strictEqual(woken.recoveries, 0)
      }))

    it.effect("a terminal transition stores the output, completes the run and ends the lease", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const result = yield* store.commit(commitOf(run, {
          entries: [entry("step-a", 1, "succeeded")],
          transition: transition("succeeded", { output: "\"done\"" })
        }))
        assert.deepStrictEqual(result, { cancelRequested: false })
        const done = yield* getRun(store, run.id)
        assert.strictEqual(done.status, "succeeded")
        assert.strictEqual(done.output, "\"done\"")
        assert.strictEqual(done.error, null)
        assert.strictEqual(done.runnableAt, null)
        assert.strictEqual(done.leaseOwner, null)
        assert.strictEqual(done.leaseExpiresAt, null)
        assert.strictEqual(done.completedAt, done.updatedAt)
        assert.isAtLeast(done.updatedAt, run.updatedAt)
        assertLeaseLost(yield* Effect.flip(store.commit(commitOf(run))), run.id, 1)
        yield* advance(live ? 50 : 60_000)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])

        const failed = yield* claimedRun(store)
        yield* store.commit(commitOf(failed, { transition: transition("failed", { error: "\"boom\"" }) }))
        const failedRun = yield* getRun(store, failed.id)
        assert.strictEqual(failedRun.status, "failed")
        assert.strictEqual(failedRun.error, "\"boom\"")
        assert.strictEqual(failedRun.output, null)
        assert.strictEqual(failedRun.completedAt, failedRun.updatedAt)
      }))

    it.effect("a transition replaces output and error only when present and may keep the lease", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const keep = { runnableAt: run.runnableAt, release: false }
        yield* store.commit(commitOf(run, { transition: transition("running", { ...keep, output: "\"partial\"" }) }))
        let stored = yield* getRun(store, run.id)
        assert.strictEqual(stored.output, "\"partial\"")
        assert.strictEqual(stored.error, null)
        yield* store.commit(commitOf(run, { transition: transition("running", { ...keep, error: "\"oops\"" }) }))
        stored = yield* getRun(store, run.id)
        assert.strictEqual(stored.output, "\"partial\"")
        assert.strictEqual(stored.error, "\"oops\"")
        yield* store.commit(commitOf(run, {
          leaseMs: short,
          transition: transition("compensating", { ...keep, output: null })
        }))
        stored = yield* getRun(store, run.id)
        assert.strictEqual(stored.status, "compensating")
        assert.strictEqual(stored.output, null)
        assert.strictEqual(stored.error, "\"oops\"")
        assert.strictEqual(stored.completedAt, null)
        yield* store.commit(commitOf(run, {
          leaseMs: short,
          transition: transition("compensating", { ...keep, error: null })
        }))
        stored = yield* getRun(store, run.id)
        assert.strictEqual(stored.error, null)
        assert.strictEqual(stored.output, null)
        assert.strictEqual(stored.runnableAt, run.runnableAt)
        assert.strictEqual(stored.leaseOwner, "worker-a")
        assert.strictEqual(stored.leaseExpiresAt, stored.updatedAt + short)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
        yield* expireShort
        const [recovered] = yield* claimOne(store, run, "worker-b")
        assert.strictEqual(recovered.status, "compensating")
        assert.strictEqual(recovered.epoch, 2)
        assert.strictEqual(recovered.recoveries, 1)
      }))

    it.effect("a commit with a finished entry resets the recovery count", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const first = yield* claimedRun(store, short)
        yield* expireShort
        const [second] = yield* claimOne(store, first, "worker-b")
        assert.strictEqual(second.recoveries, 1)
        yield* store.commit(commitOf(second, { entries: [entry("step-a", 1, "started")] }))
        assert.strictEqual((yield* getRun(store, first.id)).recoveries, 1)
        yield* store.commit(commitOf(second, { entries: [entry("step-a", 1, "failed")] }))
        assert.strictEqual((yield* getRun(store, first.id)).recoveries, 0)
      }))

    // ---------------------------------------------------------------------------------------------
    // the execution log: what each commit wrote, whatever the store keeps in which table
    // ---------------------------------------------------------------------------------------------

    /** The record of a first attempt that says what its entry says (as the engine writes it). */
    const firstAttempt = (e: JournalEntry): AttemptRecord => ({
      key: e.key,
      attempt: 1,
      outcome: e.status === "succeeded" ? "succeeded" : "running",
      error: null,
      startedAt: e.startedAt,
      endedAt: e.completedAt
    })

    it.effect("a step that succeeds at its first attempt: the log shows it running, then succeeded", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const started = [entry("a", 1, "started"), entry("child", 2, "started", { kind: "child" })]
        yield* store.commit(commitOf(run, { entries: started, attempts: started.map(firstAttempt) }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, started.map(firstAttempt))

        const done = [
          entry("a", 1, "succeeded"),
          entry("child", 2, "succeeded", { kind: "child" }),
          entry("tx", 3, "succeeded", { kind: "transaction" }),
          entry("nap", 4, "succeeded", { kind: "sleep" })
        ]
        yield* store.commit(commitOf(run, { entries: done, attempts: done.slice(0, 3).map(firstAttempt) }))
        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.entries, done)
        // the sleep has no attempts: none were written for it
        assert.deepStrictEqual(details.attempts, done.slice(0, 3).map(firstAttempt))
      }))

    it.effect("an attempt whose worker died stays running next to the attempts after it", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const first = entry("a", 1, "started")
        yield* store.commit(commitOf(run, { entries: [first], attempts: [firstAttempt(first)] }))
        // a replay starts attempt 2 of the entry (the first attempt's worker died)
        const second = attempt("a", 2, { startedAt: 1_500 })
        yield* store.commit(commitOf(run, { entries: [entry("a", 1, "started", { attempts: 2 })], attempts: [second] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [firstAttempt(first), second])
        const done = attempt("a", 2, { startedAt: 1_500, outcome: "succeeded", endedAt: 1_600 })
        yield* store.commit(commitOf(run, {
          entries: [entry("a", 1, "succeeded", { attempts: 2, completedAt: 1_600 })],
          attempts: [done]
        }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [firstAttempt(first), done])
      }))

    it.effect("an attempt record written after its entry's replaces the one written with it", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const first = entry("a", 1, "started")
        yield* store.commit(commitOf(run, { entries: [first], attempts: [firstAttempt(first)] }))
        // the worker shut down during the attempt and says so in a commit without entries
        const interrupted = { ...firstAttempt(first), outcome: "interrupted" as const, endedAt: 1_200 }
        yield* store.commit(commitOf(run, { attempts: [interrupted] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [interrupted])
        const second = attempt("a", 2, { startedAt: 1_500 })
        yield* store.commit(commitOf(run, { entries: [entry("a", 1, "started", { attempts: 2 })], attempts: [second] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [interrupted, second])
      }))

    it.effect("an attempt record written before its entry's is replaced by the one written with the entry", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        // a transactional step's first attempt failed, then its worker died; the replay's attempt 1 succeeds
        yield* store.commit(commitOf(run, {
          attempts: [attempt("tx", 1, { outcome: "retrying", error: "\"e\"", endedAt: 1_050 })]
        }))
        const done = entry("tx", 1, "succeeded", { kind: "transaction" })
        yield* store.commit(commitOf(run, { entries: [done], attempts: [firstAttempt(done)] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [firstAttempt(done)])
        // and the other way round: running, then a record with an error replaces it in the same entry
        const started = entry("b", 2, "started")
        yield* store.commit(commitOf(run, { entries: [started], attempts: [firstAttempt(started)] }))
        const failed = { ...firstAttempt(started), outcome: "failed" as const, error: "\"no\"", endedAt: 1_300 }
        yield* store.commit(commitOf(run, { entries: [entry("b", 2, "failed")], attempts: [failed] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [firstAttempt(done), failed])
      }))

    it.effect("attempt records that differ from their entry are kept as written", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const done = entry("a", 1, "succeeded")
        const records = [
          { ...firstAttempt(done), endedAt: done.completedAt! + 1 },
          { ...firstAttempt(entry("b", 2, "succeeded")), startedAt: 999 },
          { ...firstAttempt(entry("c", 3, "started")), outcome: "succeeded" as const, endedAt: 1_010 },
          { ...firstAttempt(entry("d", 4, "succeeded")), error: "\"warning\"" },
          { ...firstAttempt(entry("f", 5, "succeeded")), outcome: "running" as const, endedAt: null }
        ]
        yield* store.commit(commitOf(run, {
          entries: [
            done,
            entry("b", 2, "succeeded"),
            entry("c", 3, "started"),
            entry("d", 4, "succeeded"),
            entry("f", 5, "succeeded")
          ],
          attempts: records
        }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, records)
        // an entry with more than one attempt implies none of them
        const twice = entry("e", 6, "succeeded", { attempts: 2 })
        const second = { ...firstAttempt(twice), attempt: 2 }
        yield* store.commit(commitOf(run, { entries: [twice], attempts: [firstAttempt(twice), second] }))
        assert.deepStrictEqual((yield* store.inspect(run.id)).attempts, [...records, firstAttempt(twice), second])
      }))

    // ---------------------------------------------------------------------------------------------
    // signals
    // ---------------------------------------------------------------------------------------------

    it.effect("signals are de-duplicated by signalId and ordered by seq", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const { run } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        const send = (name: string, signalId: string, payload: string) =>
          store.signal({ runId: run.id, name, signalId, payload })
        assert.deepStrictEqual(yield* send("approve", "evt-1", "true"), { duplicate: false })
        yield* tick
        assert.deepStrictEqual(yield* send("reject", "evt-2", "\"no\""), { duplicate: false })
        assert.deepStrictEqual(yield* send("approve", "evt-1", "false"), { duplicate: true })
        const { signals } = yield* store.load(run.id)
        assert.deepStrictEqual(signals.map(({ name, payload, signalId }) => [name, signalId, payload]), [
          ["approve", "evt-1", "true"],
          ["reject", "evt-2", "\"no\""]
        ])
        assert.isBelow(signals[0].seq, signals[1].seq)
        assert.isAtMost(signals[0].receivedAt, signals[1].receivedAt)
        const missing = yield* Effect.flip(
          store.signal({ runId: `missing-${ns}`, name: "x", signalId: "y", payload: "1" })
        )
        assert.instanceOf(missing, RunNotFound)
        assert.strictEqual(missing.workflowId, `missing-${ns}`)
      }))

    it.effect("a signal wakes a waiting run but not a sleeping one", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const waiting = yield* claimedRun(store)
        yield* store.commit(commitOf(waiting, { transition: transition("waiting", { signalSeenSeq: 0 }) }))
        assert.deepStrictEqual(yield* claimOne(store, waiting, "worker-b"), [])
        yield* store.signal({ runId: waiting.id, name: "go", signalId: "evt-1", payload: "1" })
        assert.isNotNull((yield* getRun(store, waiting.id)).runnableAt)
        const [woken] = yield* claimOne(store, waiting, "worker-b")
        assert.strictEqual(woken.id, waiting.id)
        assert.strictEqual(woken.status, "running")
        assert.strictEqual(woken.epoch, 2)

        const sleeping = yield* claimedRun(store)
        const wakeAt = sleeping.updatedAt + 3_600_000
        yield* store.commit(commitOf(sleeping, { transition: transition("sleeping", { runnableAt: wakeAt }) }))
        yield* store.signal({ runId: sleeping.id, name: "go", signalId: "evt-1", payload: "1" })
        assert.strictEqual((yield* getRun(store, sleeping.id)).runnableAt, wakeAt)
        assert.deepStrictEqual(yield* claimOne(store, sleeping, "worker-b"), [])
      }))

    it.effect("a signal that arrived before a waiting commit (signalSeenSeq) keeps the run runnable", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const raced = yield* claimedRun(store)
        yield* store.signal({ runId: raced.id, name: "go", signalId: "evt-1", payload: "1" })
        assert.strictEqual((yield* getRun(store, raced.id)).runnableAt, raced.runnableAt)
        yield* store.commit(commitOf(raced, { transition: transition("waiting", { signalSeenSeq: 0 }) }))
        const stillRunnable = yield* getRun(store, raced.id)
        assert.strictEqual(stillRunnable.status, "waiting")
        assert.isNotNull(stillRunnable.runnableAt)
        assert.strictEqual((yield* claimOne(store, raced, "worker-b")).length, 1)

        const seen = yield* claimedRun(store)
        yield* store.signal({ runId: seen.id, name: "go", signalId: "evt-1", payload: "1" })
        const { signals } = yield* store.load(seen.id)
        yield* store.commit(commitOf(seen, { transition: transition("waiting", { signalSeenSeq: signals[0].seq }) }))
        assert.strictEqual((yield* getRun(store, seen.id)).runnableAt, null)
        assert.deepStrictEqual(yield* claimOne(store, seen, "worker-b"), [])
      }))

    // ---------------------------------------------------------------------------------------------
    // cancel and resume
    // ---------------------------------------------------------------------------------------------

    it.effect("requestCancel marks a pending run; the next commit reports it", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const { run } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        const cancelled = yield* store.requestCancel(run.id)
        assert.isTrue(cancelled.cancelRequested)
        assert.strictEqual(cancelled.status, "pending")
        assert.isNotNull(cancelled.runnableAt)
        assert.deepStrictEqual(yield* getRun(store, run.id), cancelled)
        const [claimed] = yield* claimOne(store, run, "worker-a")
        assert.isTrue(claimed.cancelRequested)
        assert.deepStrictEqual(yield* store.commit(commitOf(claimed)), { cancelRequested: true })
      }))

    it.effect("requestCancel makes waiting and sleeping runs runnable now", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const waiting = yield* claimedRun(store)
        yield* store.commit(commitOf(waiting, { transition: transition("waiting") }))
        const sleeping = yield* claimedRun(store)
        yield* store.commit(commitOf(sleeping, {
          transition: transition("sleeping", { runnableAt: sleeping.updatedAt + 3_600_000 })
        }))
        for (const run of [waiting, sleeping]) {
          assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
          const cancelled = yield* store.requestCancel(run.id)
          assert.isTrue(cancelled.cancelRequested)
          assert.isNotNull(cancelled.runnableAt)
          assert.isBelow(cancelled.runnableAt ?? Infinity, run.updatedAt + 3_600_000)
          const [claimed] = yield* claimOne(store, run, "worker-b")
          assert.strictEqual(claimed.id, run.id)
          assert.isTrue(claimed.cancelRequested)
        }
      }))

    it.effect("requestCancel on a leased run keeps its lease and schedule", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* tick
        const cancelled = yield* store.requestCancel(run.id)
        assert.isTrue(cancelled.cancelRequested)
        assert.strictEqual(cancelled.status, "running")
        assert.strictEqual(cancelled.runnableAt, run.runnableAt)
        assert.strictEqual(cancelled.leaseOwner, "worker-a")
        assert.strictEqual(cancelled.epoch, 1)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
        assert.deepStrictEqual(yield* store.commit(commitOf(run)), { cancelRequested: true })
        const compensating = transition("compensating", { runnableAt: run.runnableAt, release: false })
        assert.deepStrictEqual(yield* store.commit(commitOf(run, { transition: compensating })), {
          cancelRequested: true
        })
        assert.isTrue((yield* getRun(store, run.id)).cancelRequested)
      }))

    it.effect("requestCancel leaves finished and parked runs unchanged", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        for (const status of ["succeeded", "cancelled", "needs_attention", "dead"] as const) {
          const run = yield* claimedRun(store)
          yield* store.commit(commitOf(run, { transition: transition(status) }))
          const before = yield* getRun(store, run.id)
          yield* tick
          const after = yield* store.requestCancel(run.id)
          assert.deepStrictEqual(after, before)
          assert.isFalse(after.cancelRequested)
          assert.deepStrictEqual(yield* getRun(store, run.id), before)
        }
        const missing = yield* Effect.flip(store.requestCancel(`missing-${namespace()}`))
        assert.instanceOf(missing, RunNotFound)
      }))

    it.effect("resume makes a needs_attention run pending and runnable", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.commit(commitOf(run, { transition: transition("needs_attention", { error: "\"mismatch\"" }) }))
        const parked = yield* getRun(store, run.id)
        assert.strictEqual(parked.status, "needs_attention")
        assert.strictEqual(parked.completedAt, parked.updatedAt)
        assert.deepStrictEqual(yield* claimOne(store, run, "worker-b"), [])
        yield* tick
        const resumed = yield* store.resume(run.id)
        assert.strictEqual(resumed.status, "pending")
        assert.isNotNull(resumed.runnableAt)
        assert.strictEqual(resumed.completedAt, null)
        assert.strictEqual(resumed.leaseOwner, null)
        assert.strictEqual(resumed.leaseExpiresAt, null)
        assert.strictEqual(resumed.recoveries, 0)
        assert.isAbove(resumed.updatedAt, parked.updatedAt)
        assert.deepStrictEqual(yield* getRun(store, run.id), resumed)
        const [claimed] = yield* claimOne(store, run, "worker-b")
        assert.strictEqual(claimed.status, "running")
        assert.strictEqual(claimed.epoch, 2)
      }))

    it.effect("resume of a dead run resets its recovery count", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const first = yield* claimedRun(store, short)
        yield* expireShort
        const [second] = yield* claimOne(store, first, "worker-b")
        yield* store.commit(commitOf(second, { transition: transition("dead", { error: "\"crashed\"" }) }))
        const dead = yield* getRun(store, first.id)
        assert.strictEqual(dead.status, "dead")
        assert.strictEqual(dead.recoveries, 1)
        const resumed = yield* store.resume(first.id)
        assert.strictEqual(resumed.status, "pending")
        assert.strictEqual(resumed.recoveries, 0)
        const [claimed] = yield* claimOne(store, first, "worker-c")
        assert.strictEqual(claimed.recoveries, 0)
        assert.strictEqual(claimed.epoch, 3)
      }))

    it.effect("resume fails with InvalidRunState unless the run is parked", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const { run: pending } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        const error = yield* Effect.flip(store.resume(pending.id))
        assert.instanceOf(error, InvalidRunState)
        assert.deepStrictEqual([error.workflowId, error.status, error.operation], [pending.id, "pending", "resume"])
        assert.deepStrictEqual(yield* getRun(store, pending.id), pending)

        const done = yield* claimedRun(store)
        yield* store.commit(commitOf(done, { transition: transition("succeeded", { output: "1" }) }))
        const doneError = yield* Effect.flip(store.resume(done.id))
        assert.instanceOf(doneError, InvalidRunState)
        assert.strictEqual(doneError.status, "succeeded")
        assert.strictEqual((yield* getRun(store, done.id)).status, "succeeded")

        const missing = yield* Effect.flip(store.resume(`missing-${ns}`))
        assert.instanceOf(missing, RunNotFound)
      }))

    // ---------------------------------------------------------------------------------------------
    // reading
    // ---------------------------------------------------------------------------------------------

    it.effect("get, load and inspect find runs by ID; load and inspect fail with RunNotFound", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        assert.isTrue(Option.isNone(yield* store.get(`missing-${ns}`)))
        const { run } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        assert.deepStrictEqual(yield* store.get(run.id), Option.some(run))
        assert.deepStrictEqual(yield* store.load(run.id), { run, entries: [], signals: [] })
        const loadError = yield* Effect.flip(store.load(`missing-${ns}`))
        assert.instanceOf(loadError, RunNotFound)
        assert.strictEqual(loadError.workflowId, `missing-${ns}`)
        const inspectError = yield* Effect.flip(store.inspect(`missing-${ns}`))
        assert.instanceOf(inspectError, RunNotFound)
      }))

    it.effect("inspect orders entries by seq, attempts by entry then attempt, signals by seq", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.signal({ runId: run.id, name: "x", signalId: "evt-x", payload: "1" })
        yield* tick
        yield* store.signal({ runId: run.id, name: "y", signalId: "evt-y", payload: "2" })
        yield* store.commit(commitOf(run, {
          entries: [entry("zeta", 2, "succeeded"), entry("alpha", 1, "succeeded"), entry("mid", 3, "started")],
          attempts: [
            attempt("mid", 1),
            attempt("zeta", 2, { outcome: "succeeded" }),
            attempt("alpha", 1, { outcome: "succeeded" }),
            attempt("zeta", 1, { outcome: "retrying" })
          ]
        }))
        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.entries.map((e) => e.key), ["alpha", "zeta", "mid"])
        assert.deepStrictEqual(details.attempts.map((a) => `${a.key}#${a.attempt}`), [
          "alpha#1",
          "zeta#1",
          "zeta#2",
          "mid#1"
        ])
        assert.deepStrictEqual(details.signals.map((s) => s.name), ["x", "y"])
        assert.deepStrictEqual(details.run, yield* getRun(store, run.id))
        const snapshot = yield* store.load(run.id)
        assert.deepStrictEqual(snapshot, { run: details.run, entries: details.entries, signals: details.signals })
      }))

    it.effect("list pages newest first with a keyset cursor, without gaps or duplicates", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        const created: Array<RunRecord> = []
        for (let i = 0; i < 25; i++) {
          created.push((yield* store.create({ id: `run-${ns}-${pad(i)}`, workflow, payload: "{}" })).run)
          if (i % 3 === 2) yield* tick
        }
        const expected = [...created].sort(newestFirst).map((run) => run.id)
        const seen: Array<string> = []
        const sizes: Array<number> = []
        let cursor: string | undefined = undefined
        for (let page = 0; page < 5; page++) {
          const result: { readonly runs: ReadonlyArray<RunRecord>; readonly nextCursor: string | null } = yield* store
            .list({ workflow, limit: 10, cursor })
          sizes.push(result.runs.length)
          seen.push(...result.runs.map((run) => run.id))
          if (result.nextCursor === null) break
          cursor = result.nextCursor
        }
        assert.deepStrictEqual(seen, expected)
        assert.deepStrictEqual(sizes.slice(0, 3), [10, 10, 5])
        assert.isAtMost(sizes.length, 4)
      }))

    it.effect("list filters by status, workflow and creation time", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const wfA = `wf-${ns}-a`
        const ids = (page: { readonly runs: ReadonlyArray<RunRecord> }) => page.runs.map((run) => run.id)
        const [a1, a2, a3] = yield* Effect.forEach([1, 2, 3], (i) =>
          Effect.zipLeft(
            Effect.map(store.create({ id: `run-${ns}-a${i}`, workflow: wfA, payload: "{}" }), (r) => r.run),
            tick
          ))
        yield* store.create({ id: `run-${ns}-b1`, workflow: `wf-${ns}-b`, payload: "{}" })
        const claimed = yield* store.claim({ workerId: "worker-a", workflows: [wfA], limit: 2, leaseMs: long })
        assert.deepStrictEqual(claimed.map((run) => run.id), [a1.id, a2.id])
        yield* store.commit(commitOf(claimed[1], { transition: transition("succeeded", { output: "1" }) }))

        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA })), [a3.id, a2.id, a1.id])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: `wf-${ns}-b` })), [`run-${ns}-b1`])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, status: "running" })), [a1.id])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, status: ["running", "succeeded"] })), [
          a2.id,
          a1.id
        ])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, status: "pending" })), [a3.id])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, status: "dead" })), [])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, createdAfter: a2.createdAt })), [a3.id, a2.id])
        assert.deepStrictEqual(ids(yield* store.list({ workflow: wfA, createdBefore: a2.createdAt })), [a1.id])
        assert.deepStrictEqual(
          ids(yield* store.list({ workflow: wfA, createdAfter: a1.createdAt, createdBefore: a3.createdAt })),
          [a2.id, a1.id]
        )
        const withStatus = yield* store.list({ workflow: wfA, status: "succeeded" })
        assert.strictEqual(withStatus.runs[0].output, "1")
        assert.strictEqual(withStatus.nextCursor, null)
      }))

    it.effect("list returns 50 runs by default", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const workflow = `wf-${ns}`
        yield* Effect.forEach(
          Array.from({ length: 51 }, (_, i) => `run-${ns}-${pad(i)}`),
          (id) => store.create({ id, workflow, payload: "{}" }),
          { concurrency: 10 }
        )
        const first = yield* store.list({ workflow })
        assert.strictEqual(first.runs.length, 50)
        assert.isNotNull(first.nextCursor)
        const rest = yield* store.list({ workflow, cursor: first.nextCursor ?? "" })
        assert.strictEqual(rest.runs.length, 1)
        assert.strictEqual(new Set([...first.runs, ...rest.runs].map((run) => run.id)).size, 51)
      }))

    // ---------------------------------------------------------------------------------------------
    // events and transactions
    // ---------------------------------------------------------------------------------------------

    it.effect("events: RunFinished after a terminal commit, RunnableChanged after a create", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const ns = namespace()
        const finished = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunFinished" && event.runId === run.id),
          Stream.runHead,
          Effect.fork
        )
        const runnable = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === `wf-${ns}`),
          Stream.runHead,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))
        yield* store.commit(commitOf(run, { transition: transition("cancelled") }))
        yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        const events = yield* realTime(Effect.timeout(Fiber.join(Fiber.zip(finished, runnable)), "5 seconds"))
        assert.deepStrictEqual(events.map(Option.getOrNull), [
          { _tag: "RunFinished", runId: run.id },
          { _tag: "RunnableChanged", workflow: `wf-${ns}` }
        ])
      }))

    it.effect("events: RunnableChanged when a signal wakes a waiting run", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.commit(commitOf(run, { transition: transition("waiting") }))
        const woken = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === run.workflow),
          Stream.runHead,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))
        yield* store.signal({ runId: run.id, name: "go", signalId: "evt-1", payload: "1" })
        const event = yield* realTime(Effect.timeout(Fiber.join(woken), "5 seconds"))
        assert.deepStrictEqual(Option.getOrNull(event), { _tag: "RunnableChanged", workflow: run.workflow })
      }))

    it.effect("transaction returns the effect's value and applies its commit", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        const [value, result] = yield* store.transaction(Effect.succeed(42), (n) =>
          commitOf(run, {
            entries: [entry("tx", 1, "succeeded", { kind: "transaction", output: String(n) })],
            attempts: [attempt("tx", 1, { outcome: "succeeded", endedAt: 1_100 })]
          }))
        assert.strictEqual(value, 42)
        assert.deepStrictEqual(result, { cancelRequested: false })
        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.entries, [entry("tx", 1, "succeeded", { kind: "transaction", output: "42" })])
        assert.deepStrictEqual(details.attempts, [attempt("tx", 1, { outcome: "succeeded", endedAt: 1_100 })])
      }))

    it.effect("transaction writes nothing when its effect fails or its lease is lost", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store, short)
        let built = false
        const before = yield* store.inspect(run.id)
        const error = yield* Effect.flip(store.transaction(Effect.fail("boom" as const), () => {
          built = true
          return commitOf(run, { entries: [entry("tx", 1, "succeeded")] })
        }))
        assert.strictEqual(error, "boom")
        assert.isFalse(built)
        assert.deepStrictEqual(yield* store.inspect(run.id), before)

        yield* expireShort
        yield* claimOne(store, run, "worker-b")
        const before2 = yield* store.inspect(run.id)
        const lost = yield* Effect.flip(
          store.transaction(Effect.succeed(1), () => commitOf(run, { entries: [entry("tx", 1, "succeeded")] }))
        )
        assertLeaseLost(lost, run.id, 1)
        assert.deepStrictEqual(yield* store.inspect(run.id), before2)
      }))

    // ---------------------------------------------------------------------------------------------
    // retry
    // ---------------------------------------------------------------------------------------------

    it.effect("retry archives the given entries with their attempts and makes the run pending", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.requestCancel(run.id)
        yield* store.commit(commitOf(run, {
          entries: [entry("a", 1, "succeeded"), entry("b", 2, "failed")],
          attempts: [
            attempt("a", 1, { outcome: "succeeded", endedAt: 1_100 }),
            attempt("b", 1, { outcome: "retrying", error: "\"e1\"", endedAt: 1_200 }),
            attempt("b", 2, { outcome: "failed", error: "\"e2\"", endedAt: 1_300 })
          ],
          transition: transition("failed", { output: "\"partial\"", error: "\"boom\"" })
        }))
        const failed = yield* getRun(store, run.id)
        assert.isTrue(failed.cancelRequested)
        assert.isNotNull(failed.completedAt)
        const woken = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === run.workflow),
          Stream.runHead,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))

        const retried = yield* store.retry({ runId: run.id, archiveKeys: ["b"], from: ["failed", "dead"] })
        assert.deepStrictEqual(yield* getRun(store, run.id), retried)
        assert.deepStrictEqual(
          { ...retried, runnableAt: retried.runnableAt === null ? null : 0, updatedAt: 0 },
          {
            ...failed,
            status: "pending",
            output: null,
            error: null,
            completedAt: null,
            leaseOwner: null,
            leaseExpiresAt: null,
            cancelRequested: false,
            recoveries: 0,
            runnableAt: 0,
            updatedAt: 0
          }
        )
        assert.strictEqual(retried.epoch, run.epoch)
        const event = yield* realTime(Effect.timeout(Fiber.join(woken), "5 seconds"))
        assert.deepStrictEqual(Option.getOrNull(event), { _tag: "RunnableChanged", workflow: run.workflow })

        const details = yield* store.inspect(run.id)
        assert.deepStrictEqual(details.entries, [entry("a", 1, "succeeded")])
        assert.deepStrictEqual(details.attempts, [attempt("a", 1, { outcome: "succeeded", endedAt: 1_100 })])
        assert.deepStrictEqual(details.archivedEntries.map(({ archivedAt, ...rest }) => rest), [
          { ...entry("b", 2, "failed"), generation: 1 }
        ])
        assert.isAtLeast(details.archivedEntries[0].archivedAt, failed.updatedAt)
        assert.deepStrictEqual(details.archivedAttempts, [
          { ...attempt("b", 1, { outcome: "retrying", error: "\"e1\"", endedAt: 1_200 }), generation: 1 },
          { ...attempt("b", 2, { outcome: "failed", error: "\"e2\"", endedAt: 1_300 }), generation: 1 }
        ])

        // the next claim increments the epoch; a second retry archives as generation 2
        const [again] = yield* claimOne(store, run, "worker-b")
        assert.strictEqual(again.epoch, run.epoch + 1)
        yield* store.commit(commitOf(again, {
          entries: [entry("b", 2, "failed", { error: "\"again\"" })],
          attempts: [attempt("b", 1, { outcome: "failed", error: "\"again\"", endedAt: 1_400 })],
          transition: transition("dead")
        }))
        yield* store.retry({ runId: run.id, archiveKeys: ["b", "not-there"], from: ["failed", "dead"] })
        const twice = yield* store.inspect(run.id)
        assert.deepStrictEqual(twice.entries.map((e) => e.key), ["a"])
        assert.deepStrictEqual(twice.archivedEntries.map((e) => [e.key, e.generation, e.error]), [
          ["b", 1, "\"b-error\""],
          ["b", 2, "\"again\""]
        ])
        assert.deepStrictEqual(twice.archivedAttempts.map((a) => [a.generation, a.attempt, a.error]), [
          [1, 1, "\"e1\""],
          [1, 2, "\"e2\""],
          [2, 1, "\"again\""]
        ])
        const [third] = yield* claimOne(store, run, "worker-c")
        assert.strictEqual(third.epoch, run.epoch + 2)
      }))

    it.effect("retry refuses a run whose status is not in `from` and changes nothing; RunNotFound when absent", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const run = yield* claimedRun(store)
        yield* store.commit(commitOf(run, { entries: [entry("a", 1, "succeeded")] }))
        const before = yield* store.inspect(run.id)
        const refused = yield* Effect.flip(store.retry({ runId: run.id, archiveKeys: ["a"], from: ["failed"] }))
        assert.instanceOf(refused, InvalidRunState)
        assert.deepStrictEqual(
          [refused.workflowId, refused.status, refused.operation],
          [run.id, "running", "retry"]
        )
        const none = yield* Effect.flip(store.retry({ runId: run.id, archiveKeys: ["a"], from: [] }))
        assert.instanceOf(none, InvalidRunState)
        assert.deepStrictEqual(yield* store.inspect(run.id), before)

        yield* store.commit(commitOf(run, { transition: transition("succeeded", { output: "1" }) }))
        const succeeded = yield* store.inspect(run.id)
        assert.instanceOf(
          yield* Effect.flip(store.retry({ runId: run.id, archiveKeys: ["a"], from: ["failed", "compensated"] })),
          InvalidRunState
        )
        assert.deepStrictEqual(yield* store.inspect(run.id), succeeded)

        const missing = yield* Effect.flip(
          store.retry({ runId: `missing-${namespace()}`, archiveKeys: [], from: ["failed"] })
        )
        assert.instanceOf(missing, RunNotFound)
      }))

    // ---------------------------------------------------------------------------------------------
    // purge
    // ---------------------------------------------------------------------------------------------

    it.effect("purge deletes finished runs completed before the cutoff, in batches, with all their rows", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        // the store is shared by the suite: first remove what earlier tests finished
        yield* tick
        const start = yield* Clock.currentTimeMillis
        while ((yield* store.purge({ completedBefore: start + 1, statuses: allStatuses, limit: 1_000 })) >= 1_000) {
          // another batch
        }

        const finish = (status: RunStatus, fields: Partial<RunTransition> = {}) =>
          Effect.gen(function*() {
            const run = yield* claimedRun(store)
            yield* store.commit(commitOf(run, { transition: transition(status, fields) }))
            return yield* getRun(store, run.id)
          })
        // a finished run with everything a run can own: journal, attempts, archive, signals, alerts
        const full = yield* claimedRun(store)
        yield* store.commit(commitOf(full, {
          entries: [entry("a", 1, "succeeded"), entry("b", 2, "failed")],
          attempts: [attempt("a", 1, { outcome: "succeeded", endedAt: 1_100 }), attempt("b", 1, { outcome: "failed" })],
          transition: transition("failed", { error: "\"x\"" })
        }))
        yield* store.retry({ runId: full.id, archiveKeys: ["b"], from: ["failed"] })
        const [fullAgain] = yield* claimOne(store, full, "worker-b")
        yield* store.signal({ runId: full.id, name: "go", signalId: "evt-1", payload: "1" })
        yield* store.commit(commitOf(fullAgain, {
          entries: [entry("b", 2, "failed")],
          attempts: [attempt("b", 1, { outcome: "failed" })],
          transition: transition("failed", { error: "\"y\"" })
        }))
        const fullInspected = yield* store.inspect(full.id)
        assert.strictEqual(fullInspected.archivedEntries.length, 1)
        assert.strictEqual(fullInspected.signals.length, 1)
        assert.strictEqual((yield* store.alerts(full.id)).length, 2)

        const succeeded = yield* finish("succeeded", { output: "1" })
        const cancelled = yield* finish("cancelled")
        const compensated = yield* finish("compensated")
        const dead = yield* finish("dead")
        const attention = yield* finish("needs_attention")
        const pending =
          (yield* store.create({ id: `run-${namespace()}`, workflow: `wf-${namespace()}`, payload: "{}" }))
            .run
        const running = yield* claimedRun(store)
        const waiting = yield* finish("waiting")
        const sleeping = yield* finish("sleeping", { runnableAt: start + 3_600_000 })
        const old = [full.id, succeeded.id, cancelled.id, compensated.id]
        const cutoff = Math.max(
          ...(yield* Effect.forEach([...old, dead.id, attention.id], (id) => getRun(store, id)))
            .map((run) => run.completedAt ?? Infinity)
        ) + 1
        yield* advance(live ? 50 : 10)
        const recent = yield* finish("succeeded")
        assert.isAbove(recent.completedAt ?? 0, cutoff)
        const kept = [dead, attention, pending, running, waiting, sleeping, recent].map((run) => run.id)

        // only the requested statuses
        assert.strictEqual(
          yield* store.purge({ completedBefore: cutoff, statuses: ["succeeded", "dead"], limit: 10 }),
          1
        )
        assert.isTrue(Option.isNone(yield* store.get(succeeded.id)))
        assert.isTrue(Option.isSome(yield* store.get(full.id)))
        assert.strictEqual(yield* store.purge({ completedBefore: cutoff, statuses: [], limit: 10 }), 0)
        assert.strictEqual(yield* store.purge({ completedBefore: cutoff, statuses: allStatuses, limit: 0 }), 0)

        // in batches of at most `limit`, until one returns less; parked and unfinished runs stay
        const batches: Array<number> = []
        while (true) {
          const deleted = yield* store.purge({ completedBefore: cutoff, statuses: allStatuses, limit: 2 })
          batches.push(deleted)
          if (deleted < 2) break
        }
        assert.deepStrictEqual(batches, [2, 1])
        for (const id of old) assert.isTrue(Option.isNone(yield* store.get(id)), id)
        for (const id of kept) assert.isTrue(Option.isSome(yield* store.get(id)), id)
        assert.strictEqual((yield* getRun(store, dead.id)).status, "dead")
        assert.strictEqual(
          yield* store.purge({ completedBefore: cutoff + 3_600_000, statuses: ["dead"], limit: 10 }),
          0
        )

        // nothing of the purged run is left: a new run with its ID starts empty
        const reborn = yield* store.create({ id: full.id, workflow: full.workflow, payload: "{}" })
        assert.isTrue(reborn.created)
        const fresh = yield* store.inspect(full.id)
        assert.deepStrictEqual(
          [fresh.entries, fresh.attempts, fresh.signals, fresh.archivedEntries, fresh.archivedAttempts],
          [[], [], [], [], []]
        )
        assert.deepStrictEqual(yield* store.alerts(full.id), [])
      }))

    // ---------------------------------------------------------------------------------------------
    // alerts
    // ---------------------------------------------------------------------------------------------

    it.effect("a transition into an alert status writes one outbox row per (run, epoch, status)", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ok = yield* claimedRun(store)
        yield* store.commit(
          commitOf(ok, { transition: transition("compensating", { release: false, error: "\"e\"" }) })
        )
        yield* store.commit(commitOf(ok, { transition: transition("succeeded") }))
        assert.deepStrictEqual(yield* store.alerts(ok.id), [])

        const run = yield* claimedRun(store)
        yield* store.commit(commitOf(run, {
          transition: transition("compensating", { release: false, runnableAt: run.runnableAt, error: "\"first\"" })
        }))
        // the same transition committed twice (same epoch): one alert
        const keep = transition("needs_attention", { release: false })
        yield* store.commit(commitOf(run, { transition: keep }))
        yield* store.commit(commitOf(run, { transition: { ...keep, error: "\"second\"" } }))
        const parked = yield* store.alerts(run.id)
        assert.deepStrictEqual(parked.map(({ createdAt, ...rest }) => rest), [{
          id: `${run.id}/${run.epoch}/needs_attention`,
          runId: run.id,
          workflow: run.workflow,
          status: "needs_attention",
          error: "\"first\"",
          attempts: 0,
          deliveredAt: null
        }])

        yield* tick
        yield* store.commit(commitOf(run, { transition: transition("compensated", { error: "\"third\"" }) }))
        const alerts = yield* store.alerts(run.id)
        assert.deepStrictEqual(alerts.map((alert) => [alert.id, alert.status, alert.error]), [
          [`${run.id}/${run.epoch}/needs_attention`, "needs_attention", "\"first\""],
          [`${run.id}/${run.epoch}/compensated`, "compensated", "\"third\""]
        ])
        assert.isAtMost(alerts[0].createdAt, alerts[1].createdAt)

        // a commit that lost its lease writes no alert
        const stale = yield* claimedRun(store, short)
        yield* expireShort
        yield* claimOne(store, stale, "worker-b")
        yield* Effect.flip(store.commit(commitOf(stale, { transition: transition("failed") })))
        assert.deepStrictEqual(yield* store.alerts(stale.id), [])
        assert.deepStrictEqual(yield* store.alerts(`missing-${namespace()}`), [])
      }))

    it.effect("claimAlerts leases undelivered alerts oldest first; completeAlert delivers them", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        // the outbox is shared by the suite: deliver what earlier tests wrote
        while (true) {
          const earlier = yield* store.claimAlerts({ limit: 1_000, leaseMs: long })
          if (earlier.length === 0) break
          yield* Effect.forEach(earlier, (alert) => store.completeAlert(alert.id))
        }
        const failing = yield* Effect.forEach([1, 2, 3], () =>
          Effect.gen(function*() {
            const run = yield* claimedRun(store)
            yield* store.commit(commitOf(run, { transition: transition("failed", { error: "\"boom\"" }) }))
            yield* tick
            return run
          }))
        const ids = failing.map((run) => `${run.id}/${run.epoch}/failed`)
        assert.deepStrictEqual(yield* store.claimAlerts({ limit: 0, leaseMs: short }), [])

        const first = yield* store.claimAlerts({ limit: 2, leaseMs: short })
        assert.deepStrictEqual(first.map((alert) => [alert.id, alert.attempts, alert.deliveredAt]), [
          [ids[0], 1, null],
          [ids[1], 1, null]
        ])
        const second = yield* store.claimAlerts({ limit: 10, leaseMs: short })
        assert.deepStrictEqual(second.map((alert) => alert.id), [ids[2]])
        assert.deepStrictEqual(yield* store.claimAlerts({ limit: 10, leaseMs: short }), [])

        yield* store.completeAlert(ids[0])
        yield* expireShort
        const retried = yield* store.claimAlerts({ limit: 10, leaseMs: long })
        assert.deepStrictEqual(retried.map((alert) => [alert.id, alert.attempts]), [[ids[1], 2], [ids[2], 2]])
        yield* store.completeAlert(ids[1])
        yield* store.completeAlert(ids[1])
        yield* store.completeAlert(`missing-${namespace()}`)

        const [delivered] = yield* store.alerts(failing[0].id)
        assert.isNotNull(delivered.deliveredAt)
        assert.strictEqual(delivered.attempts, 1)
        const [late] = yield* store.alerts(failing[1].id)
        assert.isNotNull(late.deliveredAt)
        assert.strictEqual(late.attempts, 2)
        // delivered alerts are never claimed again, even once their lease would have expired
        yield* store.completeAlert(ids[2])
        yield* expireShort
        assert.deepStrictEqual(yield* store.claimAlerts({ limit: 10, leaseMs: short }), [])
      }))

    // ---------------------------------------------------------------------------------------------
    // child runs
    // ---------------------------------------------------------------------------------------------

    it.effect("a commit's transition.signal is delivered once with the commit and wakes a waiting target", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const parent = yield* claimedRun(store)
        yield* store.commit(commitOf(parent, { transition: transition("waiting") }))
        const child = yield* claimedRun(store)
        const delivery: SignalDelivery = {
          runId: parent.id,
          name: "child:done",
          signalId: `child:${child.id}`,
          payload: "{\"ok\":1}"
        }
        const woken = yield* store.events.pipe(
          Stream.filter((event) => event._tag === "RunnableChanged" && event.workflow === parent.workflow),
          Stream.runHead,
          Effect.fork
        )
        yield* realTime(Effect.sleep(live ? "500 millis" : "20 millis"))
        yield* store.commit(commitOf(child, {
          entries: [entry("a", 1, "succeeded")],
          transition: transition("succeeded", { output: "{\"ok\":1}", signal: delivery })
        }))
        const event = yield* realTime(Effect.timeout(Fiber.join(woken), "5 seconds"))
        assert.deepStrictEqual(Option.getOrNull(event), { _tag: "RunnableChanged", workflow: parent.workflow })
        assert.strictEqual((yield* getRun(store, child.id)).status, "succeeded")
        const { run: waiting, signals } = yield* store.load(parent.id)
        assert.deepStrictEqual(
          signals.map(({ name, payload, signalId }) => ({ runId: parent.id, name, signalId, payload })),
          [delivery]
        )
        assert.isNotNull(waiting.runnableAt)
        const [claimed] = yield* claimOne(store, parent, "worker-b")
        assert.strictEqual(claimed.id, parent.id)

        // the same signal again (another commit carrying it): ignored
        const other = yield* claimedRun(store)
        yield* store.commit(commitOf(other, { transition: transition("succeeded", { signal: delivery }) }))
        assert.strictEqual((yield* store.load(parent.id)).signals.length, 1)

        // a target that is not waiting stores the signal and keeps its schedule
        const sleeping = yield* claimedRun(store)
        const due = sleeping.updatedAt + 3_600_000
        yield* store.commit(commitOf(sleeping, { transition: transition("sleeping", { runnableAt: due }) }))
        const third = yield* claimedRun(store)
        yield* store.commit(commitOf(third, {
          transition: transition("failed", { signal: { ...delivery, runId: sleeping.id } })
        }))
        const slept = yield* store.load(sleeping.id)
        assert.strictEqual(slept.signals.length, 1)
        assert.strictEqual(slept.run.runnableAt, due)

        // a commit that lost its lease delivers nothing
        const target = yield* claimedRun(store)
        yield* store.commit(commitOf(target, { transition: transition("waiting") }))
        const stale = yield* claimedRun(store, short)
        yield* expireShort
        yield* claimOne(store, stale, "worker-b")
        const lost = yield* Effect.flip(store.commit(commitOf(stale, {
          transition: transition("succeeded", { signal: { ...delivery, runId: target.id } })
        })))
        assertLeaseLost(lost, stale.id, stale.epoch)
        const untouched = yield* store.load(target.id)
        assert.deepStrictEqual(untouched.signals, [])
        assert.strictEqual(untouched.run.runnableAt, null)
      }))

    it.effect("list filters by parentId; inspect lists a run's children oldest first", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const { run: parent } = yield* store.create({ id: `run-${ns}`, workflow: `wf-${ns}`, payload: "{}" })
        const children: Array<RunRecord> = []
        for (const i of [1, 2, 3]) {
          yield* tick
          const { run } = yield* store.create({
            id: `run-${ns}-child-${i}`,
            workflow: `wf-${ns}-child`,
            payload: String(i),
            parentId: parent.id
          })
          children.push(run)
        }
        yield* store.create({ id: `run-${ns}-other`, workflow: `wf-${ns}-child`, payload: "0" })
        const page = yield* store.list({ parentId: parent.id })
        assert.deepStrictEqual(page.runs, [...children].reverse())
        assert.deepStrictEqual((yield* store.list({ parentId: parent.id, limit: 2 })).runs.map((run) => run.id), [
          children[2].id,
          children[1].id
        ])
        assert.deepStrictEqual((yield* store.list({ parentId: children[0].id })).runs, [])
        const details = yield* store.inspect(parent.id)
        assert.deepStrictEqual(details.children, children)
        assert.deepStrictEqual(details.archivedEntries, [])
        assert.deepStrictEqual(details.archivedAttempts, [])
        assert.deepStrictEqual((yield* store.inspect(children[0].id)).children, [])
      }))

    // ---------------------------------------------------------------------------------------------
    // stats and schedules
    // ---------------------------------------------------------------------------------------------

    it.effect("stats counts runs by workflow and status", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const ns = namespace()
        const [a, b] = [`wf-${ns}-a`, `wf-${ns}-b`]
        for (const i of [1, 2, 3]) yield* store.create({ id: `run-${ns}-a${i}`, workflow: a, payload: "{}" })
        yield* store.create({ id: `run-${ns}-b1`, workflow: b, payload: "{}" })
        const [done] = yield* store.claim({ workerId: "worker-a", workflows: [a], limit: 1, leaseMs: long })
        yield* store.commit(commitOf(done, { transition: transition("succeeded") }))
        yield* store.claim({ workerId: "worker-a", workflows: [b], limit: 1, leaseMs: long })
        const mine = (yield* store.stats).filter((count) => count.workflow === a || count.workflow === b)
        assert.deepStrictEqual(mine, [
          { workflow: a, status: "pending", count: 2 },
          { workflow: a, status: "succeeded", count: 1 },
          { workflow: b, status: "running", count: 1 }
        ])
      }))

    it.effect("a schedule cursor starts empty and never moves backwards", () =>
      Effect.gen(function*() {
        const store = yield* WorkflowStore
        const name = `schedule-${namespace()}`
        assert.isTrue(Option.isNone(yield* store.scheduleCursor(name)))
        yield* store.advanceSchedule(name, 1_000)
        assert.deepStrictEqual(yield* store.scheduleCursor(name), Option.some(1_000))
        yield* store.advanceSchedule(name, 500)
        assert.deepStrictEqual(yield* store.scheduleCursor(name), Option.some(1_000))
        yield* store.advanceSchedule(name, 1_700_000_000_000)
        assert.deepStrictEqual(yield* store.scheduleCursor(name), Option.some(1_700_000_000_000))
        const racing = `${name}-racing`
        yield* Effect.forEach([5, 3, 9, 1, 7, 2], (n) => store.advanceSchedule(racing, n * 60_000), {
          concurrency: "unbounded"
        })
        assert.deepStrictEqual(yield* store.scheduleCursor(racing), Option.some(9 * 60_000))
        assert.isTrue(Option.isNone(yield* store.scheduleCursor(`${name}-other`)))
      }))
  })
}
