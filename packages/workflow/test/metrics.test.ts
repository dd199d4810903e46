/**
 * Observability on MemoryStore with TestClock: the `Metrics` counters, histogram and gauge after
 * real runs, the spans around runs and step attempts, and the log annotations inside a step.
 */
import { assert, describe, it } from "@effect/vitest"
import { MemoryStore, Metrics, Step, Tracing, Workflow, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import { Effect, FiberRef, HashMap, Layer, List, Logger, Metric, Option, Schedule, Schema, Tracer } from "effect"
import { awaitStatus, failureOf, resultOf, settings, successOf, testEnv, workerLayer } from "./utils.js"

/** A tracer of the test's own (Effect's native spans, but not Effect's built-in tracer): Memento makes its spans. */
const builtIn = Effect.runSync(Effect.tracer)
const recording = Tracer.make({ span: (...args) => builtIn.span(...args), context: builtIn.context })

class Rejected extends Schema.TaggedError<Rejected>()("Rejected", { why: Schema.String }) {}

const counter = (metric: Metric.Metric.Counter<number>, workflow: string, extra?: Record<string, string>) =>
  Effect.map(
    Metric.value(
      Object.entries(extra ?? {}).reduce(
        (tagged, [key, value]) => Metric.tagged(tagged, key, value),
        Metric.tagged(metric, "workflow", workflow)
      )
    ),
    (state) => state.count
  )

describe("Metrics", () => {
  it.effect("counts runs by outcome, tagged with the workflow name", () => {
    // one workflow, five outcomes chosen by the payload
    const name = "metrics-outcomes"
    const Job = Workflow.make({ name, payload: Schema.String, success: Schema.String, error: Rejected })
    const implementations = Job.implement((mode) =>
      Effect.gen(function*() {
        if (mode === "fail") return yield* new Rejected({ why: "nothing done yet" })
        yield* Step.run("book", { success: Schema.Void, compensate: () => Effect.void }, Effect.void)
        if (mode === "compensate") return yield* new Rejected({ why: "after booking" })
        if (mode === "park") return yield* Effect.die("bug")
        if (mode === "wait") yield* Effect.orDie(Workflow.awaitSignal("go", Schema.Boolean))
        return mode
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      for (const mode of ["ok-1", "ok-2", "fail", "compensate", "park", "wait"]) {
        yield* client.start(Job, mode, { id: `${name}-${mode}` })
      }
      assert.strictEqual(successOf(yield* resultOf(Job, `${name}-ok-1`)), "ok-1")
      assert.strictEqual(successOf(yield* resultOf(Job, `${name}-ok-2`)), "ok-2")
      failureOf(yield* resultOf(Job, `${name}-fail`))
      failureOf(yield* resultOf(Job, `${name}-compensate`))
      failureOf(yield* resultOf(Job, `${name}-park`))
      yield* awaitStatus(`${name}-wait`, "waiting")
      yield* client.cancel(`${name}-wait`)
      failureOf(yield* resultOf(Job, `${name}-wait`))

      assert.deepStrictEqual(
        {
          started: yield* counter(Metrics.runsStarted, name),
          succeeded: yield* counter(Metrics.runsSucceeded, name),
          failed: yield* counter(Metrics.runsFailed, name),
          compensated: yield* counter(Metrics.runsCompensated, name),
          cancelled: yield* counter(Metrics.runsCancelled, name),
          parked: yield* counter(Metrics.runsParked, name, { status: "needs_attention" })
        },
        // the waiting run was claimed twice (at the start and for the cancel) but counted as started once
        { started: 6, succeeded: 2, failed: 1, compensated: 1, cancelled: 1, parked: 1 }
      )
      assert.strictEqual(yield* counter(Metrics.runsSucceeded, "another-workflow"), 0)
    }).pipe(Effect.provide(testEnv({ workflows: [Job], implementations })))
  })

  it.effect("execute counts a run as started once; an execute whose ID exists counts nothing", () => {
    const name = "metrics-execute"
    const Job = Workflow.make({ name, payload: Schema.String, success: Schema.String })
    const implementations = Job.implement((value) =>
      Step.run("echo", { success: Schema.String }, Effect.succeed(value))
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const execute = (value: string, id: string) =>
        Effect.gen(function*() {
          const fiber = yield* Effect.fork(Effect.exit(client.execute(Job, value, { id })))
          yield* awaitStatus(id, "succeeded")
          return yield* fiber.await.pipe(Effect.flatten)
        })
      assert.strictEqual(successOf(yield* execute("a", `${name}-1`)), "a")
      assert.strictEqual(successOf(yield* execute("b", `${name}-2`)), "b")
      // the same ID again (the stored result) and with another payload (a conflict): no new run
      assert.strictEqual(successOf(yield* execute("a", `${name}-1`)), "a")
      failureOf(yield* execute("other", `${name}-1`))
      assert.strictEqual(yield* counter(Metrics.runsStarted, name), 2)
      assert.strictEqual(yield* counter(Metrics.runsSucceeded, name), 2)
    }).pipe(Effect.provide(testEnv({ workflows: [Job], implementations })))
  })

  it.effect("measures step attempts by step name (without the occurrence suffix) and counts retries", () => {
    const name = "metrics-steps"
    let calls = 0
    const Job = Workflow.make({ name, payload: Schema.Void, error: Rejected })
    const implementations = Job.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("fetch", Effect.sleep("150 millis"))
        yield* Step.run("fetch", Effect.sleep("250 millis")) // key fetch#2, same histogram
        yield* Step.run(
          "flaky",
          { success: Schema.Void, error: Rejected, retry: Schedule.spaced("1 second") },
          Effect.suspend(() => ++calls <= 2 ? Effect.fail(new Rejected({ why: `call ${calls}` })) : Effect.void)
        )
      })
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Job, undefined, { id: name })
      successOf(yield* resultOf(Job, id, { stepMs: 50 }))
      const fetch = yield* Metric.value(
        Metrics.stepDuration.pipe(Metric.tagged("workflow", name), Metric.tagged("step", "fetch"))
      )
      assert.deepStrictEqual([fetch.count, fetch.min, fetch.max, fetch.sum], [2, 150, 250, 400])
      const flaky = yield* Metric.value(
        Metrics.stepDuration.pipe(Metric.tagged("workflow", name), Metric.tagged("step", "flaky"))
      )
      assert.strictEqual(flaky.count, 3, "every attempt is measured")
      const retries = yield* Metric.value(
        Metrics.stepRetries.pipe(Metric.tagged("workflow", name), Metric.tagged("step", "flaky"))
      )
      assert.strictEqual(retries.count, 2)
      assert.strictEqual(Metrics.stepName("charge#2#compensate"), "charge#compensate")
    }).pipe(Effect.provide(testEnv({ workflows: [Job], implementations })))
  })

  it.effect("the active-runs gauge of a worker counts the runs it executes, not the sleeping ones", () => {
    const name = "metrics-active"
    const Job = Workflow.make({ name, payload: Schema.String })
    const implementations = Job.implement((mode) =>
      mode === "sleep" ? Workflow.sleep("nap", "1 hour") : Step.run("busy", Effect.sleep("10 seconds"))
    )
    const active = Metrics.activeRuns.pipe(Metric.tagged("worker", "metrics-worker"))
    const env = Layer.mergeAll(
      WorkflowClient.layer,
      workerLayer({ workflows: [Job], implementations, workerId: "metrics-worker" })
    ).pipe(Layer.provideMerge(MemoryStore.layer), Layer.provideMerge(WorkflowConfig.layer(settings)))
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Job, "sleep", { id: `${name}-sleep` })
      yield* awaitStatus(`${name}-sleep`, "sleeping")
      assert.strictEqual((yield* Metric.value(active)).value, 0)
      yield* client.start(Job, "busy-1", { id: `${name}-busy-1` })
      yield* client.start(Job, "busy-2", { id: `${name}-busy-2` })
      yield* awaitStatus(`${name}-busy-1`, "running")
      yield* awaitStatus(`${name}-busy-2`, "running")
      assert.strictEqual((yield* Metric.value(active)).value, 2)
      yield* awaitStatus(`${name}-busy-1`, "succeeded")
      yield* awaitStatus(`${name}-busy-2`, "succeeded")
      assert.strictEqual((yield* Metric.value(active)).value, 0)
    }).pipe(Effect.provide(env))
  })
})

describe("spans and logs", () => {
  it.effect("a step attempt runs in a span with workflow.id, workflow.name, step.key and attempt, under the run's span", () => {
    const seen: Array<{ readonly span: Tracer.Span; readonly annotations: Record<string, unknown> }> = []
    const logs: Array<{ readonly message: unknown; readonly annotations: Record<string, unknown> }> = []
    const Job = Workflow.make({ name: "traced", payload: Schema.Void, success: Schema.Number, error: Rejected })
    const implementations = Job.implement(() =>
      Effect.gen(function*() {
        yield* Step.run("prepare", Effect.void)
        return yield* Step.run(
          "charge",
          { success: Schema.Number, error: Rejected, retry: Schedule.spaced("1 second") },
          Effect.gen(function*() {
            const span = yield* Effect.currentSpan.pipe(Effect.orDie)
            const current = yield* FiberRef.get(FiberRef.currentLogAnnotations)
            const annotations = Object.fromEntries(HashMap.toEntries(current))
            seen.push({ span: span as Tracer.Span, annotations })
            yield* Effect.logInfo("charging")
            const attempt = yield* Step.attempt
            if (attempt === 1) return yield* new Rejected({ why: "first attempt" })
            return attempt
          })
        )
      })
    )
    const capture = Logger.make(({ annotations, message }) => {
      logs.push({
        message: List.isList(message) ? List.toArray(message) : message,
        annotations: Object.fromEntries(HashMap.toEntries(annotations))
      })
    })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Job, undefined, { id: "traced-1" })
      assert.strictEqual(successOf(yield* resultOf(Job, id)), 2)
      assert.strictEqual(seen.length, 2)
      for (const [index, { annotations, span }] of seen.entries()) {
        assert.strictEqual(span.name, "memento.step")
        const attributes = Object.fromEntries(span.attributes)
        assert.deepInclude(attributes, {
          "workflow.id": id,
          "workflow.name": "traced",
          "step.key": "charge",
          attempt: index + 1
        })
        let parent = span.parent
        const names: Array<string> = []
        while (Option.isSome(parent)) {
          if (parent.value._tag === "Span") names.push(parent.value.name)
          parent = parent.value._tag === "Span" ? parent.value.parent : Option.none()
        }
        assert.include(names, "memento.run")
        assert.deepInclude(annotations, { "workflow.id": id, "workflow.name": "traced", "step.key": "charge" })
        assert.strictEqual(annotations["step.attempt"], index + 1)
      }
      const charging = logs.filter((log) => JSON.stringify(log.message).includes("charging"))
      assert.strictEqual(charging.length, 2)
      for (const log of charging) assert.deepInclude(log.annotations, { "workflow.id": id, "step.key": "charge" })
    }).pipe(
      Effect.provide(
        testEnv({ workflows: [Job], implementations }).pipe(
          Layer.provide(Layer.mergeAll(Logger.replace(Logger.defaultLogger, capture), Layer.setTracer(recording)))
        )
      )
    )
  })

  it.effect("under Effect's built-in tracer (none provided) no span is made; log annotations still are", () => {
    const seen: Array<{ readonly span: boolean; readonly tracing: boolean; readonly stepKey: unknown }> = []
    const Job = Workflow.make({ name: "untraced", payload: Schema.Void, success: Schema.Void })
    const implementations = Job.implement(() =>
      Step.run(
        "charge",
        Effect.gen(function*() {
          const span = yield* Effect.option(Effect.currentSpan)
          const annotations = yield* FiberRef.get(FiberRef.currentLogAnnotations)
          seen.push({
            span: Option.isSome(span),
            tracing: yield* Tracing.isTracing,
            stepKey: Option.getOrUndefined(HashMap.get(annotations, "step.key"))
          })
        })
      )
    )
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const { id } = yield* client.start(Job, undefined, { id: "untraced-1" })
      yield* resultOf(Job, id)
      assert.deepStrictEqual(seen, [{ span: false, tracing: false, stepKey: "charge" }])
    }).pipe(Effect.provide(testEnv({ workflows: [Job], implementations })))
  })
})
