/**
 * The engine's side of fencing and recovery: a recovered run is claimed at a higher epoch, a
 * worker that lost its lease writes nothing and starts no further step (guarantee 5), a run that
 * keeps killing its worker is parked `dead` and can be resumed, and bad values park the run instead
 * of crashing the worker (guarantee 10).
 */
import { assert, describe, it } from "@effect/vitest"
import { MemoryStore, Metrics, Step, Workflow, WorkflowClient, WorkflowError, WorkflowStore } from "@memento/workflow"
import { Context, Deferred, Effect, Exit, FiberId, Layer, List, Logger, Metric, Schema, Scope, TestClock } from "effect"
import {
  advanceUntil,
  awaitStatus,
  crashes,
  expireLease,
  failureOf,
  Recorder,
  resultOf,
  runError,
  settings,
  settle,
  sharedStore,
  startWorker,
  successOf,
  testEnv,
  workerLayer
} from "./utils.js"

class WorkerName extends Context.Tag("test/WorkerName")<WorkerName, string>() {}

/** The warnings logged (message text), and the logger layer that collects them. */
const warningLog = () => {
  const warnings: Array<string> = []
  const logger = Logger.replace(
    Logger.defaultLogger,
    Logger.make(({ logLevel, message }) => {
      if (logLevel._tag !== "Warning") return
      warnings.push((List.isList(message) ? List.toArray(message) : [message]).map(String).join(" "))
    })
  )
  return { warnings, logger }
}

/** A client and one worker on the given store, logging to `logger`. */
const onStore = <const W extends ReadonlyArray<Workflow.Any>>(
  store: Layer.Layer<WorkflowStore.WorkflowStore>,
  logger: Layer.Layer<never>,
  options: Parameters<typeof workerLayer<W>>[0]
) => Layer.mergeAll(WorkflowClient.layer, workerLayer(options)).pipe(Layer.provideMerge(store), Layer.provide(logger))

describe("lease fencing in the engine (guarantee 5)", () => {
  it.scoped("a worker that lost its lease writes nothing further and starts no further step", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "fenced", payload: Schema.Void, success: Schema.Array(Schema.String) })
    return Effect.gen(function*() {
      const latch = yield* Deferred.make<void>()
      const implementation = (name: string) =>
        W.implement(() =>
          Effect.gen(function*() {
            const worker = yield* WorkerName
            const first = yield* Step.run(
              "step-1",
              { success: Schema.String },
              Effect.gen(function*() {
                yield* recorder.record("step-1", worker)
                // Worker A stalls inside the step (a long GC pause, a partition) ...
                if (worker === "A") yield* Deferred.await(latch)
                return `step-1 by ${worker}`
              })
            )
            const second = yield* Step.run(
              "step-2",
              { success: Schema.String },
              Effect.as(recorder.record("step-2", worker), `step-2 by ${worker}`)
            )
            return [first, second]
          })
        ).pipe(Layer.provide(Layer.succeed(WorkerName, name)))

      const { client, provide: inStore } = yield* sharedStore

      // ... and sends no heartbeats meanwhile.
      const a = yield* inStore(startWorker({
        workflows: [W],
        implementations: implementation("A"),
        concurrency: 1,
        workerId: "A",
        settings: { heartbeatMs: 3_600_000 }
      }))
      const { id } = yield* client.start(W, undefined, { id: "fenced-1" })
      yield* settle
      assert.deepStrictEqual(recorder.data("step-1"), ["A"])
      const claimedByA = yield* client.get(id)
      assert.strictEqual(claimedByA.leaseOwner, "A")
      assert.strictEqual(claimedByA.epoch, 1)

      // Worker B claims the run once A's lease expired and finishes it.
      const b = yield* inStore(startWorker({ workflows: [W], implementations: implementation("B"), workerId: "B" }))
      yield* expireLease
      const done = yield* inStore(awaitStatus(id, "succeeded"))
      assert.strictEqual(done.epoch, 2)
      const before = yield* client.inspect(id)
      assert.deepStrictEqual(JSON.parse(before.run.output!), ["step-1 by B", "step-2 by B"])

      // A wakes up: its step ends, but the commit with its result (and step 2's start) is fenced.
      yield* Deferred.succeed(latch, undefined)
      yield* settle
      yield* TestClock.adjust(settings.leaseMs! * 2)
      assert.deepStrictEqual(recorder.data("step-1"), ["A", "B"])
      assert.deepStrictEqual(recorder.data("step-2"), ["B"], "A started no further step")
      const after = yield* client.inspect(id)
      assert.deepStrictEqual(after, before, "A wrote nothing")
      assert.deepStrictEqual(
        after.attempts.map((attempt) => [attempt.key, attempt.attempt, attempt.outcome]),
        [["step-1", 1, "running"], ["step-1", 2, "succeeded"], ["step-2", 1, "succeeded"]]
      )
      assert.strictEqual(successOf(yield* inStore(resultOf(W, id)))[0], "step-1 by B")
      // A's fenced commit found the lease gone: counted once, for A
      assert.strictEqual((yield* Metric.value(Metric.tagged(Metrics.leasesLost, "workflow", "fenced"))).count, 1)
      yield* Scope.close(a, Exit.void)
      yield* Scope.close(b, Exit.void)
    })
  })

  it.scoped("a heartbeat that finds the lease taken over stops the run's step at once, counted and logged once", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "taken-over", payload: Schema.Void, success: Schema.String })
    const { logger, warnings } = warningLog()
    return Effect.gen(function*() {
      const implementation = (name: string) =>
        W.implement(() =>
          Step.run(
            "export",
            { success: Schema.String },
            Effect.gen(function*() {
              yield* recorder.record("export", name)
              // A is stuck in the step far longer than its lease; its heartbeats come too late
              if (name === "A") yield* Effect.sleep("1 minute")
              return `exported by ${name}`
            })
          )
        )
      const shared = yield* sharedStore
      const { client } = shared
      const inStore = <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.provide(shared.provide(effect), logger)
      const a = yield* inStore(startWorker({
        workflows: [W],
        implementations: implementation("A"),
        // one slot, held by the stuck run: A cannot claim the run again itself
        concurrency: 1,
        workerId: "A",
        settings: { heartbeatMs: settings.leaseMs! + 3_000 }
      }))
      const { id } = yield* client.start(W, undefined, { id: "taken-over-1" })
      yield* settle
      assert.deepStrictEqual(recorder.data("export"), ["A"])
      // B claims the run once A's lease expired, before A's next heartbeat
      const b = yield* inStore(startWorker({ workflows: [W], implementations: implementation("B"), workerId: "B" }))
      const done = yield* inStore(awaitStatus(id, "succeeded"))
      assert.strictEqual(done.epoch, 2)
      // A's heartbeat finds the lease gone and stops the run there
      yield* TestClock.adjust(settings.leaseMs! + 3_000)
      assert.deepStrictEqual(recorder.data("export"), ["A", "B"])
      assert.strictEqual((yield* Metric.value(Metric.tagged(Metrics.leasesLost, "workflow", "taken-over"))).count, 1)
      assert.deepStrictEqual(
        warnings.filter((warning) => warning.includes("lease lost")),
        ["lease lost: a heartbeat no longer found it; stopping the run"]
      )
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(
        details.attempts.map((attempt) => [attempt.attempt, attempt.outcome]),
        [[1, "running"], [2, "succeeded"]],
        "A wrote nothing after it lost the lease"
      )
      yield* Scope.close(a, Exit.void)
      yield* Scope.close(b, Exit.void)
    })
  })
})

describe("leases of healthy workers", () => {
  it.effect("heartbeats keep the lease of a step that runs far longer than the lease: it runs once", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "long-step", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() =>
      Step.run(
        "export",
        { success: Schema.String },
        Effect.zipRight(recorder.record("export"), Effect.as(Effect.sleep("1 minute"), "exported"))
      )
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "long-1" })
      assert.strictEqual(successOf(yield* resultOf(W, id, { stepMs: 500 })), "exported")
      assert.strictEqual(recorder.count("export"), 1)
      const run = yield* client.get(id)
      assert.strictEqual(run.epoch, 1)
      assert.strictEqual(run.recoveries, 0)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })

  // The releasing commit (the finish, or the suspend of a sleeping run) is applied, the lease
  // released, and its reply waits until the test lets it through: meanwhile the worker's heartbeats
  // run and do not find the lease held. Were that taken for a lost lease, the run's fiber would be
  // interrupted after its commit: no success counted, no in-process wake-up timer for the sleep.
  for (const releasing of ["finish", "suspend"] as const) {
    const title = `a heartbeat that finds the lease released by the run's ${releasing} commit, whose reply is still on`
    it.effect(`${title} its way, stops nothing`, () => {
      const name = `release-race-${releasing}`
      const W = Workflow.make({ name, payload: Schema.Void, success: Schema.String })
      const implementations = W.implement(() =>
        Effect.gen(function*() {
          if (releasing === "suspend") yield* Workflow.sleep("nap", "10 seconds")
          return yield* Step.run("a", { success: Schema.String }, Effect.succeed("done"))
        })
      )
      const { logger, warnings } = warningLog()
      let applied = false
      let heartbeatsMeanwhile = 0
      const reply = Deferred.unsafeMake<void>(FiberId.none)
      const StoreLive = Layer.effect(
        WorkflowStore.WorkflowStore,
        Effect.map(MemoryStore.make, (store): WorkflowStore.WorkflowStore["Type"] => ({
          ...store,
          commit: (commit) =>
            commit.transition?.release !== true || applied
              ? store.commit(commit)
              : Effect.tap(store.commit(commit), () =>
                Effect.zipRight(
                  Effect.sync(() => {
                    applied = true
                  }),
                  Deferred.await(reply)
                )),
          heartbeat: (request) =>
            Effect.tap(store.heartbeat(request), (held) =>
              Effect.sync(() => {
                if (applied && request.runs.length > 0 && held.length === 0) heartbeatsMeanwhile++
              }))
        }))
      )
      return Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        yield* client.start(W, undefined, { id: name })
        yield* advanceUntil(Effect.sync(() => applied), { what: `the ${releasing} commit to be applied` })
        yield* TestClock.adjust(settings.heartbeatMs! * 2)
        assert.isAtLeast(heartbeatsMeanwhile, 1)
        yield* Deferred.succeed(reply, undefined)
        assert.strictEqual(successOf(yield* resultOf(W, name)), "done")
        const succeeded = yield* Metric.value(Metric.tagged(Metrics.runsSucceeded, "workflow", name))
        assert.strictEqual(succeeded.count, 1)
        assert.deepStrictEqual(warnings.filter((warning) => warning.includes("lease lost")), [])
      }).pipe(Effect.provide(onStore(StoreLive, logger, { workflows: [W], implementations })))
    })
  }

  it.effect("a store that keeps failing: the run is abandoned with a warning (no lost lease) and taken over later", () => {
    const W = Workflow.make({ name: "store-down", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() => Step.run("a", { success: Schema.String }, Effect.succeed("done")))
    const { logger, warnings } = warningLog()
    let down = true
    const StoreLive = Layer.effect(
      WorkflowStore.WorkflowStore,
      Effect.map(MemoryStore.make, (store): WorkflowStore.WorkflowStore["Type"] => ({
        ...store,
        commit: (commit) =>
          down
            ? Effect.fail(new WorkflowError.StoreError({ operation: "commit", message: "connection refused" }))
            : store.commit(commit)
      }))
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(W, undefined, { id: "store-down-1" })
      // the start marker's commit is retried per `storeRetry`, then the run is given up
      yield* advanceUntil(Effect.sync(() => warnings.some((warning) => warning.startsWith("run abandoned"))), {
        what: "the run to be abandoned"
      })
      assert.deepStrictEqual(warnings, [
        "run abandoned (claimable again once its lease expires): connection refused"
      ])
      down = false
      assert.strictEqual(successOf(yield* resultOf(W, "store-down-1")), "done")
      assert.strictEqual((yield* client.get("store-down-1")).epoch, 2, "claimed again once the lease expired")
      assert.strictEqual((yield* Metric.value(Metric.tagged(Metrics.leasesLost, "workflow", "store-down"))).count, 0)
    }).pipe(Effect.provide(onStore(StoreLive, logger, { workflows: [W], implementations })))
  })

  it.effect("several workers on one store execute every run exactly once", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "shared", payload: Schema.Number, success: Schema.Number })
    const implementations = W.implement((n) =>
      Effect.gen(function*() {
        const a = yield* Step.run("a", { success: Schema.Number }, Effect.as(recorder.record("a", n), n))
        yield* Effect.sleep((n % 5) * 10)
        return yield* Step.run("b", { success: Schema.Number }, Effect.as(recorder.record("b", n), a * 2))
      })
    )
    return Effect.gen(function*() {
      const store = yield* WorkflowStore.WorkflowStore
      const client = yield* WorkflowClient.WorkflowClient
      const workers = yield* Effect.all(
        ["w1", "w2", "w3"].map((workerId) => startWorker({ workflows: [W], implementations, workerId, concurrency: 3 }))
      )
      const ids = yield* Effect.forEach(
        Array.from({ length: 20 }, (_, i) => i),
        (n) => Effect.map(client.start(W, n, { id: `shared-${n}` }), (handle) => handle.id)
      )
      yield* advanceUntil(
        Effect.map(store.list({ status: "succeeded" }), (page) => page.runs.length === ids.length),
        { what: "all runs to succeed" }
      )
      assert.strictEqual(recorder.count("a"), 20)
      assert.strictEqual(recorder.count("b"), 20)
      assert.strictEqual(new Set(recorder.data("b")).size, 20)
      for (const id of ids) {
        const details = yield* client.inspect(id)
        assert.strictEqual(details.run.epoch, 1)
        assert.strictEqual(JSON.parse(details.run.output!), 2 * Number(id.slice("shared-".length)))
      }
      yield* Effect.forEach(workers, (scope) => Scope.close(scope, Exit.void), { discard: true })
    }).pipe(Effect.provide(WorkflowClient.layer.pipe(Layer.provideMerge(MemoryStore.layer))))
  })
})

describe("recovery limit (guarantee 10)", () => {
  it.effect("a run that keeps crashing its worker is parked dead after maxRecoveries; resume runs it again", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "poison", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("step-1", recorder.record("step-1"))
        return yield* Step.run("step-2", { success: Schema.String }, Effect.as(recorder.record("step-2"), "done"))
      })
    )
    const maxRecoveries = 3
    const crash = crashes({ point: "before-step", key: "step-2", times: Infinity })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "poison-1" })
      const dead = yield* awaitStatus(id, "dead", { stepMs: 500 })
      assert.isAtLeast(crash.fired.length, maxRecoveries)
      assert.isAtMost(crash.fired.length, maxRecoveries + 1)
      const error = yield* runError(id)
      assert.strictEqual(error._tag, "Parked")
      assert.strictEqual(error.reason._tag, "RecoveryLimitReached")
      assert.strictEqual(error.reason.recoveries, maxRecoveries)
      assert.isNull(dead.leaseOwner)
      const parked = failureOf(yield* resultOf(W, id))
      assert.instanceOf(parked, WorkflowError.RunParked)
      assert.strictEqual(parked.status, "dead")

      // Dead means nobody claims it again.
      const fired = crash.fired.length
      yield* TestClock.adjust(settings.leaseMs! * 10)
      assert.strictEqual(crash.fired.length, fired)
      assert.strictEqual((yield* client.get(id)).status, "dead")
      assert.deepStrictEqual(recorder.counts("step-1", "step-2"), { "step-1": 1, "step-2": 0 })

      // The bug is fixed; an operator resumes the run.
      crash.disable()
      const resumed = yield* client.resume(id)
      assert.strictEqual(resumed.status, "pending")
      assert.strictEqual(resumed.recoveries, 0)
      assert.strictEqual(successOf(yield* resultOf(W, id)), "done")
      assert.deepStrictEqual(recorder.counts("step-1", "step-2"), { "step-1": 1, "step-2": 1 })
      assert.strictEqual((yield* client.get(id)).status, "succeeded")
    }).pipe(
      Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks, settings: { maxRecoveries } }))
    )
  })

  it.effect("a run that finishes steps between crashes is not counted as poison", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "progress", payload: Schema.Void, success: Schema.Number })
    const names = ["s1", "s2", "s3", "s4", "s5"]
    const implementations = W.implement(() =>
      Effect.as(Effect.forEach(names, (name) => Step.run(name, recorder.record(name)), { discard: true }), 5)
    )
    // A crash after each of the first four steps' results was journaled: four recoveries in all
    // (more than maxRecoveries), each after progress.
    const crash = crashes(...names.slice(0, 4).map((key) => ({ point: "after-journal" as const, key })))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "progress-1" })
      assert.strictEqual(successOf(yield* resultOf(W, id, { stepMs: 500 })), 5)
      assert.strictEqual(crash.fired.length, 4)
      assert.deepStrictEqual(recorder.counts(...names), { s1: 1, s2: 1, s3: 1, s4: 1, s5: 1 })
    }).pipe(
      Effect.provide(testEnv({ workflows: [W], implementations, hooks: crash.hooks, settings: { maxRecoveries: 2 } }))
    )
  })
})

describe("bad values park the run (guarantee 10)", () => {
  it.effect("an oversized step output parks the run with PayloadTooLarge before it is journaled", () => {
    const recorder = new Recorder()
    const W = Workflow.make({ name: "big-output", payload: Schema.Void, success: Schema.Number })
    const implementations = W.implement(() =>
      Effect.gen(function*() {
        const big = yield* Step.run(
          "big",
          { success: Schema.String },
          Effect.as(recorder.record("big"), "x".repeat(200))
        )
        yield* Step.run("after", recorder.record("after"))
        return big.length
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "big-1" })
      const parked = failureOf(yield* resultOf(W, id))
      assert.instanceOf(parked, WorkflowError.RunParked)
      assert.strictEqual(parked.status, "needs_attention")
      const error = yield* runError(id)
      assert.strictEqual(error.reason._tag, "PayloadTooLarge")
      assert.strictEqual(error.reason.workflowId, id)
      assert.strictEqual(error.reason.limit, 128)
      assert.strictEqual(error.reason.bytes, 202)
      assert.include(error.reason.what, "big")
      assert.deepStrictEqual(recorder.counts("big", "after"), { big: 1, after: 0 })
      const details = yield* client.inspect(id)
      assert.deepStrictEqual(details.entries.map((e) => [e.key, e.status, e.output]), [["big", "started", null]])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, settings: { maxValueBytes: 128 } })))
  })

  it.effect("an oversized workflow output parks the run; an oversized signal is refused", () => {
    const W = Workflow.make({ name: "big-result", payload: Schema.Void, success: Schema.String })
    const implementations = W.implement(() => Effect.succeed("y".repeat(500)))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(W, undefined, { id: "big-2" })
      assert.instanceOf(failureOf(yield* resultOf(W, id)), WorkflowError.RunParked)
      assert.strictEqual((yield* runError(id)).reason._tag, "PayloadTooLarge")
      assert.isNull((yield* client.get(id)).output)
      const refused = yield* Effect.flip(client.signal(id, "s", "z".repeat(500)))
      assert.instanceOf(refused, WorkflowError.PayloadTooLarge)
      assert.deepStrictEqual((yield* client.inspect(id)).signals, [])
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations, settings: { maxValueBytes: 128 } })))
  })

  it.effect("a stored payload that no longer decodes parks its run; the worker keeps serving others", () => {
    const recorder = new Recorder()
    const W = Workflow.make({
      name: "typed-payload",
      payload: Schema.Struct({ n: Schema.Number }),
      success: Schema.Number
    })
    const implementations = W.implement(({ n }) => Effect.as(recorder.record("body", n), n * 2))
    return Effect.gen(function*() {
      const store = yield* WorkflowStore.WorkflowStore
      const client = yield* WorkflowClient.WorkflowClient
      yield* store.create({ id: "corrupt", workflow: "typed-payload", payload: "{not json" })
      yield* store.create({ id: "wrong-shape", workflow: "typed-payload", payload: "{\"n\":\"seven\"}" })
      yield* store.create({ id: "unknown", workflow: "no-such-workflow", payload: "{}" })
      const { id } = yield* client.start(W, { n: 21 })
      assert.strictEqual(successOf(yield* resultOf(W, id)), 42)
      for (const bad of ["corrupt", "wrong-shape"]) {
        yield* awaitStatus(bad, "needs_attention")
        const error = yield* runError(bad)
        assert.strictEqual(error.reason._tag, "JournalDecodeError")
        assert.strictEqual(error.reason.stepKey, "(payload)")
      }
      assert.deepStrictEqual(recorder.data("body"), [21])
      // A run of a workflow this worker does not know is left alone for a worker that knows it.
      yield* TestClock.adjust(settings.leaseMs! * 4)
      const unknown = yield* client.get("unknown")
      assert.strictEqual(unknown.status, "pending")
      assert.strictEqual(unknown.epoch, 0)
    }).pipe(Effect.provide(testEnv({ workflows: [W], implementations })))
  })
})
