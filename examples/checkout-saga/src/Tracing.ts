/**
 * OpenTelemetry tracing of the service. The engine opens a span per run (`memento.run`) and per
 * step attempt (`memento.step`, with `workflow.id`, `workflow.name`, `step.key`, `step.kind`,
 * `attempt`); this module exports them through `@effect/opentelemetry` (`NodeSdk.layer` with a
 * `BatchSpanProcessor`).
 *
 * Opt-in: `OTEL_TRACES=console` prints every finished span on stdout (OpenTelemetry's
 * `ConsoleSpanExporter`); unset or `none`, nothing is traced. Any other `SpanExporter` (an OTLP
 * exporter, the tests' `InMemorySpanExporter`) can be passed to `layer`.
 */
import * as NodeSdk from "@effect/opentelemetry/NodeSdk"
import type { Resource } from "@effect/opentelemetry/Resource"
import type { SpanExporter } from "@opentelemetry/sdk-trace-base"
import { BatchSpanProcessor, ConsoleSpanExporter } from "@opentelemetry/sdk-trace-base"
import type { ConfigError } from "effect"
import { Config, Effect, Layer } from "effect"

/** The service name spans are exported under. */
export const serviceName = "memento-checkout"

/** Exports the spans of the effects it is provided to through `exporter`, in batches. */
export const layer = (
  exporter: SpanExporter,
  options: { readonly scheduledDelayMillis?: number | undefined } = {}
): Layer.Layer<Resource> =>
  NodeSdk.layer(() => ({
    resource: { serviceName, serviceVersion: "0.1.0" },
    spanProcessor: new BatchSpanProcessor(exporter, {
      ...(options.scheduledDelayMillis === undefined ? {} : { scheduledDelayMillis: options.scheduledDelayMillis })
    })
  }))

/** Tracing as `OTEL_TRACES` says: `console` prints spans, unset or `none` traces nothing. */
export const TracingLive: Layer.Layer<never, ConfigError.ConfigError> = Layer.unwrapEffect(Effect.map(
  Config.literal("none", "console")("OTEL_TRACES").pipe(Config.withDefault("none" as const)),
  (mode) => mode === "console" ? Layer.discard(layer(new ConsoleSpanExporter())) : Layer.empty
))
