/**
 * Failure injection for the simulated providers, and the error a provider returns when it is
 * unreachable or broken (an HTTP 5xx or a timeout in real life).
 *
 * Three faults, each independent and per request: `latency` (every request takes this long),
 * `errorRate` (the request fails before doing anything) and `lostResponseRate` (the request is
 * applied and committed, then the response is lost: the caller sees a failure although the
 * side effect happened — the case idempotency keys exist for).
 */
import type { SqlError } from "@effect/sql/SqlError"
import { Duration, Effect, Exit, Random, Schema } from "effect"

/**
 * A provider could not be reached or failed on its side. The side effect may or may not have
 * happened; retrying with the same idempotency key is safe. `idempotencyKey` is the key of the
 * request (null for requests that need none), so a caller that gives up can undo by key.
 */
export class ProviderUnavailable extends Schema.TaggedError<ProviderUnavailable>()("ProviderUnavailable", {
  provider: Schema.String,
  operation: Schema.String,
  idempotencyKey: Schema.NullOr(Schema.String),
  reason: Schema.String
}) {
  override get message() {
    return `${this.provider}.${this.operation} failed: ${this.reason}`
  }
}

/** Fault rates are probabilities in [0, 1]. All default to 0 (no faults). */
export interface Faults {
  readonly errorRate?: number | undefined
  readonly lostResponseRate?: number | undefined
  readonly latency?: Duration.DurationInput | undefined
}

export interface Request {
  readonly provider: string
  readonly operation: string
  readonly idempotencyKey: string | null
}

const chance = (rate: number | undefined): Effect.Effect<boolean> =>
  rate === undefined || rate <= 0 ? Effect.succeed(false) : Effect.map(Random.next, (n) => n < rate)

/** Wraps one provider request with the configured faults; database errors become `ProviderUnavailable`. */
export const inject = (faults: Faults | undefined, request: Request) =>
<A, E, R>(
  effect: Effect.Effect<A, E | SqlError, R>
): Effect.Effect<A, Exclude<E, SqlError> | ProviderUnavailable, R> =>
  Effect.gen(function*() {
    const unavailable = (reason: string) => new ProviderUnavailable({ ...request, reason })
    if (faults?.latency !== undefined) yield* Effect.sleep(Duration.decode(faults.latency))
    if (yield* chance(faults?.errorRate)) return yield* unavailable("injected error (nothing was applied)")
    const exit = yield* Effect.exit(effect)
    if (Exit.isSuccess(exit) && (yield* chance(faults?.lostResponseRate))) {
      return yield* unavailable("injected lost response (the request was applied)")
    }
    return yield* exit
  }).pipe(
    Effect.catchIf(
      (error): error is SqlError => (error as { readonly _tag?: unknown })._tag === "SqlError",
      (error) => Effect.fail(new ProviderUnavailable({ ...request, reason: `database error: ${error.message}` }))
    )
  ) as Effect.Effect<A, Exclude<E, SqlError> | ProviderUnavailable, R>
