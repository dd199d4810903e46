import type { PgClientConfig } from "@effect/sql-pg/PgClient"
import type { StoreEvent } from "@memento/workflow/WorkflowStore"
import * as Data from "effect/Data"
import * as Deferred from "effect/Deferred"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as RcRef from "effect/RcRef"
import * as Redacted from "effect/Redacted"
import * as Schedule from "effect/Schedule"
import * as Scope from "effect/Scope"
import * as Stream from "effect/Stream"
import type * as Pg from "pg"
import { parseEvent } from "./rows.js"

class ListenError extends Data.TaggedError("ListenError")<{ readonly cause: unknown }> {}

const clientConfig = (config: PgClientConfig): Pg.ClientConfig => ({
  ...(config.url !== undefined ? { connectionString: Redacted.value(config.url) } : {}),
  ...(config.host !== undefined ? { host: config.host } : {}),
  ...(config.port !== undefined ? { port: config.port } : {}),
  ...(config.database !== undefined ? { database: config.database } : {}),
  ...(config.username !== undefined ? { user: config.username } : {}),
  ...(config.password !== undefined ? { password: Redacted.value(config.password) } : {}),
  ...(config.ssl !== undefined ? { ssl: config.ssl } : {}),
  ...(config.stream !== undefined ? { stream: config.stream } : {}),
  application_name: "memento-listen"
})

/**
 * One `LISTEN` connection of its own (not from the pool): hands every payload on `channel` to
 * `onPayload`, and fails when the connection drops. `onListening` completes once `LISTEN` is
 * active. The payloads go straight to `onPayload`, not through the stream: an element costs
 * several stream and fiber steps, and every finished run sends one.
 */
const listenOnce = (
  config: PgClientConfig,
  channel: string,
  onListening: Effect.Effect<void>,
  onPayload: (payload: string) => void
) =>
  Stream.asyncScoped<never, ListenError>((emit) =>
    Effect.gen(function*() {
      const { default: pg } = yield* Effect.tryPromise({
        try: () => import("pg"),
        catch: (cause) => new ListenError({ cause })
      })
      const client = yield* Effect.acquireRelease(
        Effect.sync(() => new pg.Client(clientConfig(config))),
        (client) => Effect.promise(() => client.end().catch(() => undefined)).pipe(Effect.timeoutOption(1_000))
      )
      client.on("error", (cause) => void emit.fail(new ListenError({ cause })))
      client.on("end", () => void emit.fail(new ListenError({ cause: "connection ended" })))
      client.on("notification", (message) => {
        if (message.channel === channel && message.payload !== undefined) onPayload(message.payload)
      })
      yield* Effect.tryPromise({
        try: async () => {
          await client.connect()
          await client.query(`LISTEN ${client.escapeIdentifier(channel)}`)
        },
        catch: (cause) => new ListenError({ cause })
      })
      yield* onListening
    })
  )

/** Reconnects quickly at first, then every 2 seconds at most. */
const reconnect = Schedule.exponential("50 millis").pipe(Schedule.union(Schedule.spaced("2 seconds")))

/**
 * Postgres wake-up hints: one shared `LISTEN` connection, opened while someone subscribes and
 * re-opened when it drops (notifications sent meanwhile are lost: they are hints, workers poll).
 * A subscriber's stream starts once `LISTEN` is active, or after 2 seconds if the database is down.
 *
 * @internal
 */
export const makePgEvents = (
  config: PgClientConfig,
  channel: string
): Effect.Effect<Stream.Stream<StoreEvent>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const hub = yield* RcRef.make({
      // `RcRef` leaves the resource's scope open when the acquisition is interrupted (the last
      // subscriber left while LISTEN was still being set up): close it here, or the listening loop
      // and its connection would outlive everything and keep the process alive. (That scope is the
      // closeable one `RcRef` made for the resource.)
      acquire: Effect.flatMap(Scope.Scope, (scope) =>
        Effect.gen(function*() {
          const pubsub = yield* Effect.acquireRelease(PubSub.unbounded<StoreEvent>(), PubSub.shutdown)
          const listening = yield* Deferred.make<void>()
          const publish = (payload: string) => {
            const event = parseEvent(payload)
            if (Option.isSome(event)) pubsub.unsafeOffer(event.value)
          }
          yield* listenOnce(config, channel, Deferred.succeed(listening, undefined), publish).pipe(
            Stream.retry(reconnect),
            Stream.runDrain,
            Effect.forkScoped
          )
          yield* Deferred.await(listening).pipe(Effect.timeoutOption(Duration.seconds(2)))
          return pubsub
        }).pipe(
          Effect.onExit((exit) => Exit.isFailure(exit) ? Scope.close(scope as Scope.CloseableScope, exit) : Effect.void)
        )),
      idleTimeToLive: Duration.seconds(1)
    })
    return Stream.unwrapScoped(Effect.map(RcRef.get(hub), (pubsub) => Stream.fromPubSub(pubsub)))
  })

/** The `config` of a `PgClient`, when the `SqlClient` is one. @internal */
export const pgConfig = (client: unknown): Option.Option<PgClientConfig> =>
  (typeof client === "object" || typeof client === "function") && client !== null && "config" in client &&
    typeof client.config === "object" && client.config !== null && "listen" in client
    ? Option.some(client.config as PgClientConfig)
    : Option.none()
