/**
 * The benchmark's workflows. Bodies report to the benchmark through in-process marks (the worker
 * runs in the same process).
 */
import { Step, Workflow } from "@memento/workflow"
import { Effect, Schema } from "effect"

/** The workload: three steps, each returning a small value. */
export const Three = Workflow.make({
  name: "bench-three",
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number
})

export const ThreeLive = Three.implement(({ n }) =>
  Effect.gen(function*() {
    const a = yield* Step.run("a", { success: Schema.Number }, Effect.succeed(n))
    const b = yield* Step.run("b", { success: Schema.Number }, Effect.succeed(a + 1))
    return yield* Step.run("c", { success: Schema.Number }, Effect.succeed(b + 1))
  })
)

/** When each execution of a `Long` run reached its journal's end: signal index and time. */
export const replayMarks = new Map<string, Array<{ readonly signal: number; readonly at: number }>>()

/** `steps` steps, then `signals` signals awaited one after another: each signal wakes a replay. */
export const Long = Workflow.make({
  name: "bench-long",
  payload: Schema.Struct({ steps: Schema.Number, signals: Schema.Number }),
  success: Schema.Number
})

export const LongLive = Long.implement(({ signals, steps }) =>
  Effect.gen(function*() {
    const id = yield* Workflow.workflowId
    let sum = 0
    for (let i = 0; i < steps; i++) {
      sum += yield* Step.run(`s${i}`, { success: Schema.Number }, Effect.succeed(i))
    }
    for (let j = 0; j < signals; j++) {
      sum += yield* Effect.orDie(Workflow.awaitSignal(`go${j}`, Schema.Number))
      const at = performance.now()
      const marks = replayMarks.get(id) ?? []
      marks.push({ signal: j, at })
      replayMarks.set(id, marks)
    }
    return sum
  })
)

/** A step, a durable sleep, a step that returns when it started (epoch ms). */
export const Sleepy = Workflow.make({
  name: "bench-sleep",
  payload: Schema.Struct({ ms: Schema.Number }),
  success: Schema.Number
})

export const SleepyLive = Sleepy.implement(({ ms }) =>
  Effect.gen(function*() {
    yield* Step.run("before", { success: Schema.Number }, Effect.succeed(1))
    yield* Workflow.sleep("nap", ms)
    return yield* Step.run(
      "after",
      { success: Schema.Number },
      Effect.sync(() => performance.timeOrigin + performance.now())
    )
  })
)

/** A step, a signal, a step that returns when it started (epoch ms). */
export const Waiter = Workflow.make({
  name: "bench-signal",
  payload: Schema.Struct({ n: Schema.Number }),
  success: Schema.Number
})

export const WaiterLive = Waiter.implement(({ n }) =>
  Effect.gen(function*() {
    yield* Step.run("before", { success: Schema.Number }, Effect.succeed(n))
    yield* Effect.orDie(Workflow.awaitSignal("go", Schema.Number))
    return yield* Step.run(
      "after",
      { success: Schema.Number },
      Effect.sync(() => performance.timeOrigin + performance.now())
    )
  })
)
