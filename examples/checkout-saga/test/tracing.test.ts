/**
 * OpenTelemetry: a checkout traced through `Tracing.layer` (NodeSdk, BatchSpanProcessor) with an
 * in-memory exporter has a span for the run and one for every step attempt, with the run's
 * `workflow.id` and each step's `step.key`.
 */
import { assert, describe, it } from "@effect/vitest"
import { WorkflowClient } from "@memento/workflow"
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base"
import { Effect, Layer } from "effect"
import { Checkout } from "../src/Checkout.js"
import * as Tracing from "../src/Tracing.js"
import { env, order } from "./utils.js"

/** The spans, kept after the SDK shut down (`InMemorySpanExporter.shutdown` forgets them). */
class KeptSpans extends InMemorySpanExporter {
  override shutdown() {
    return Promise.resolve()
  }
}

describe("tracing", () => {
  it.live("a run and each step attempt are exported as spans with workflow.id and step.key", () =>
    Effect.gen(function*() {
      const exporter = new KeptSpans()
      // faults make some steps take more than one attempt (each is a span of its own)
      const traced = env({ faults: { errorRate: 0.4 } }).pipe(Layer.provide(Tracing.layer(exporter)))
      const { attempts, receipt } = yield* Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        const receipt = yield* client.execute(Checkout, order("traced-1"))
        const details = yield* client.inspect("traced-1")
        return { receipt, attempts: details.attempts }
      }).pipe(Effect.provide(traced))
      // the layer is closed: the provider was shut down and the batch flushed
      const spans = exporter.getFinishedSpans()
      const forRun = spans.filter((span) => span.attributes["workflow.id"] === "traced-1")

      // one span per execution of the run: usually two, until it waits for the payment
      // confirmation and after it (one when the confirmation arrived first)
      const runs = forRun.filter((span) => span.name === "memento.run")
      assert.isAtLeast(runs.length, 1)
      assert.deepStrictEqual(
        runs.map((span) => span.attributes["run.epoch"]).sort(),
        runs.map((_, i) => i + 1)
      )
      assert.strictEqual(runs[0]!.attributes["workflow.name"], "checkout")
      assert.strictEqual(runs[0]!.resource.attributes["service.name"], Tracing.serviceName)

      const steps = forRun.filter((span) => span.name === "memento.step")
      const stepAttempts = steps.map((span) => `${span.attributes["step.key"]}#${span.attributes["attempt"]}`).sort()
      const journaled = attempts.map((attempt) => `${attempt.key}#${attempt.attempt}`).sort()
      assert.deepStrictEqual(stepAttempts, journaled)
      for (const key of ["reserve-inventory", "charge-card", "create-shipment", "send-confirmation-email"]) {
        assert.isTrue(steps.some((span) => span.attributes["step.key"] === key), `no span for ${key}`)
      }
      // every step attempt is a child of a run span
      const runSpanIds = new Set(runs.map((span) => span.spanContext().spanId))
      for (const step of steps) assert.isTrue(runSpanIds.has(step.parentSpanContext?.spanId ?? ""), step.name)
      assert.isAbove(receipt.amountCents, 0)
    }))
})
