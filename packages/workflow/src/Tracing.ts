/**
 * The spans Memento makes (a run, each step attempt, the client's and the store's operations) are
 * made only when someone can receive them: under a tracer you provide (`@effect/opentelemetry`'s
 * `NodeSdk.layer`, `Layer.setTracer`, ...), not under Effect's built-in tracer, which a program
 * runs with when it provides none and which exports nothing. Making those spans anyway cost about
 * a fifth of the CPU of a small workflow (measured with `npm run bench`).
 *
 * @since 0.1.0
 */
import type { Tracer } from "effect"
import * as Effect from "effect/Effect"

/** Effect's built-in tracer: the one in the default services when no tracing layer is provided. */
const builtIn: Tracer.Tracer = Effect.runSync(Effect.tracer)

/**
 * Whether spans made now would reach a tracer other than Effect's built-in one.
 *
 * @since 0.1.0
 * @category tracing
 */
export const isTracing: Effect.Effect<boolean> = Effect.tracerWith((tracer) => Effect.succeed(tracer !== builtIn))

/**
 * `Effect.withSpan(name, options)` under a tracer you provided; `self` unchanged under Effect's
 * built-in tracer.
 *
 * @since 0.1.0
 * @category tracing
 */
export const withSpan =
  (name: string, options?: Tracer.SpanOptions | undefined) =>
  <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.tracerWith((tracer) => tracer === builtIn ? self : Effect.withSpan(self, name, options))
