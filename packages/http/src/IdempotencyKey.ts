/**
 * `Idempotency-Key` middleware for `@effect/platform` HTTP apps, after
 * draft-ietf-httpapi-idempotency-key-header: the first request with a key is processed and its
 * response (status, headers, body) stored in the Memento database; a repeat gets the stored response
 * with `Idempotent-Replayed: true`, a repeat while the first is in flight gets 409 with
 * `Retry-After`, the same key with another request gets 422, a missing key gets 400. Errors are
 * `application/problem+json`. Keys expire after a TTL (default 24 h) and are purged.
 *
 * A process that dies while it handles a request leaves an in-flight mark that expires (default
 * 60 s after the process last renewed it; a live process renews it while its handler runs): a repeat
 * after that is processed again.
 *
 * @since 0.1.0
 */
import * as Headers from "@effect/platform/Headers"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpBody from "@effect/platform/HttpBody"
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Tracing from "@memento/workflow/Tracing"
import type { Scope } from "effect"
import * as Cause from "effect/Cause"
import * as Chunk from "effect/Chunk"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import * as Stream from "effect/Stream"
import { randomUUID } from "node:crypto"
import * as Fingerprint from "./internal/fingerprint.js"
import * as Store from "./internal/idempotencyStore.js"
import * as Problem from "./internal/problem.js"
import * as Tables from "./internal/tables.js"

/**
 * The idempotency records in the database, built by `layer` on a `SqlClient` (Postgres or SQLite).
 *
 * @since 0.1.0
 * @category tags
 */
export class IdempotencyStore extends Context.Tag("@memento/http/IdempotencyKey/IdempotencyStore")<
  IdempotencyStore,
  Store.Store
>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface LayerOptions {
  /**
   * Prefix of the tables (`<prefix>idempotency_keys`, `<prefix>webhook_events`,
   * `<prefix>http_migrations`): lower-case letters, digits and `_`. Default `memento_`, as
   * `@memento/sql`.
   */
  readonly tablePrefix?: string | undefined
  /** Apply the migrations when the layer is built (default `true`). */
  readonly migrate?: boolean | undefined
  /** Purge expired keys every so often while the layer lives (default: never; call `purge`). */
  readonly purgeEvery?: Duration.DurationInput | undefined
}

/**
 * Applies the migrations of `@memento/http` (idempotency keys and webhook events; idempotent and
 * safe when several processes start at once).
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrate: (
  options?: { readonly tablePrefix?: string | undefined } | undefined
) => Effect.Effect<ReadonlyArray<readonly [id: number, name: string]>, SqlError | MigrationError, SqlClient.SqlClient> =
  Effect.fn("IdempotencyKey.migrate")(function*(options?: { readonly tablePrefix?: string | undefined }) {
    return yield* Tables.migrate(yield* Tables.resolve(options?.tablePrefix))
  })

/**
 * Deletes expired keys (never one whose first request is still in flight), in batches of
 * `batchSize` (default 1000) until none is left; returns how many it deleted.
 *
 * @since 0.1.0
 * @category purge
 */
export const purge = (
  options?: { readonly batchSize?: number | undefined } | undefined
): Effect.Effect<number, SqlError, IdempotencyStore> =>
  Effect.gen(function*() {
    const store = yield* IdempotencyStore
    const batchSize = Math.max(1, Math.floor(options?.batchSize ?? 1000))
    const now = yield* Clock.currentTimeMillis
    let total = 0
    while (true) {
      const deleted = yield* store.purgeBatch(now, batchSize)
      total += deleted
      if (deleted < batchSize) return total
    }
  }).pipe(Tracing.withSpan("IdempotencyKey.purge"))

/**
 * `purge` repeated every `every`, as a scoped fiber (failures are logged and retried next time).
 *
 * @since 0.1.0
 * @category purge
 */
export const purgePeriodically = (
  every: Duration.DurationInput
): Effect.Effect<void, never, IdempotencyStore | Scope.Scope> =>
  purge().pipe(
    Effect.catchAll((error) => Effect.logWarning("IdempotencyKey: periodic purge failed", error)),
    Effect.repeat(Schedule.spaced(every)),
    Effect.asVoid,
    Effect.forkScoped,
    Effect.asVoid
  )

/**
 * The idempotency records on the `SqlClient` in context (Postgres or SQLite), after applying the
 * migrations. With `purgeEvery`, expired keys are purged periodically (failures are logged and
 * retried at the next period).
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: LayerOptions | undefined
): Layer.Layer<IdempotencyStore, SqlError | MigrationError, SqlClient.SqlClient> =>
  Layer.scoped(
    IdempotencyStore,
    Effect.gen(function*() {
      const client = yield* SqlClient.SqlClient
      const tables = yield* Tables.resolve(options?.tablePrefix)
      if (options?.migrate !== false) yield* Tables.migrate(tables)
      const store = Store.make(client.withoutTransforms(), tables)
      if (options?.purgeEvery !== undefined) {
        yield* Effect.provideService(purgePeriodically(options.purgeEvery), IdempotencyStore, store)
      }
      return store
    })
  )

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E = never, R = never> {
  /**
   * Whether a request without the header is refused with 400 (default `true`). With `false`, such a
   * request is passed to the handler without idempotency.
   */
  readonly required?: boolean | undefined
  /** The methods the middleware applies to (default `POST` and `PATCH`); other requests pass through. */
  readonly methods?: ReadonlyArray<string> | undefined
  /**
   * Who sends the request (a user or API client ID): keys are scoped by it and it is part of the
   * fingerprint. Default: `"anonymous"` for everyone. Its failure is the request's failure.
   */
  readonly principal?: ((request: HttpServerRequest.HttpServerRequest) => Effect.Effect<string, E, R>) | undefined
  /** How long a key and its stored response are kept (default 24 hours). */
  readonly ttl?: Duration.DurationInput | undefined
  /**
   * How long an in-flight mark outlives its last renewal (default 60 seconds). A live process renews
   * it every third of this while the handler runs; after a crash a repeat waits at most this long.
   */
  readonly inFlightTtl?: Duration.DurationInput | undefined
  /** `Retry-After` of the 409 answered while the first request is in flight (default 1 second). */
  readonly retryAfter?: Duration.DurationInput | undefined
  /**
   * The largest request body the middleware reads (default 1 MiB): a larger one (by its
   * `Content-Length`, or as it is read) gets 413 and is not processed.
   */
  readonly maxRequestBytes?: number | undefined
  /**
   * The largest response body that is stored (default 1 MiB). A larger response is sent as usual,
   * but only the fact that it was too large is stored: repeats get 410 (see the README).
   */
  readonly maxResponseBytes?: number | undefined
}

/** Headers never stored nor replayed: hop-by-hop (RFC 9110 §7.6.1), framing, and the replay marker. */
const unstoredHeaders = new Set([
  "connection",
  "keep-alive",
  "proxy-authenticate",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "content-length",
  "set-cookie",
  "date",
  "idempotent-replayed"
])

const problemType = (name: string) => `https://memento.dev/problems/idempotency-key/${name}`

const bodyBytes = (body: HttpBody.HttpBody): Effect.Effect<Uint8Array | undefined, unknown> => {
  switch (body._tag) {
    case "Empty":
      return Effect.succeed(new Uint8Array(0))
    case "Uint8Array":
      return Effect.succeed(body.body)
    case "Raw":
      return Effect.succeed(
        typeof body.body === "string"
          ? new TextEncoder().encode(body.body)
          : body.body instanceof Uint8Array
          ? body.body
          : undefined
      )
    case "Stream":
      return Stream.runCollect(body.stream).pipe(
        Effect.map((chunks) => {
          const all = Chunk.toReadonlyArray(chunks)
          const out = new Uint8Array(all.reduce((n, chunk) => n + chunk.length, 0))
          let offset = 0
          for (const chunk of all) {
            out.set(chunk, offset)
            offset += chunk.length
          }
          return out
        })
      )
    case "FormData":
      return Effect.succeed(undefined)
  }
}

const storedHeaders = (response: HttpServerResponse.HttpServerResponse): Array<readonly [string, string]> => {
  const headers: Array<readonly [string, string]> = []
  for (const [name, value] of Object.entries(response.headers)) {
    if (!unstoredHeaders.has(name.toLowerCase())) headers.push([name.toLowerCase(), value])
  }
  const contentType = response.body.contentType
  if (contentType !== undefined && !headers.some(([name]) => name === "content-type")) {
    headers.push(["content-type", contentType])
  }
  return headers
}

const replay = (stored: Store.StoredResponse): HttpServerResponse.HttpServerResponse => {
  const contentType = stored.headers.find(([name]) => name === "content-type")?.[1]
  const headers = stored.headers.filter(([name]) => name !== "content-type")
  return HttpServerResponse.uint8Array(stored.body, {
    status: stored.status,
    headers: Headers.fromInput([...headers, ["idempotent-replayed", "true"]]),
    ...(contentType === undefined ? {} : { contentType })
  })
}

/** The request as the handler sees it: its body, already read by the middleware, read again from memory. */
const bufferedRequest = (
  request: HttpServerRequest.HttpServerRequest,
  bytes: Uint8Array
): HttpServerRequest.HttpServerRequest => {
  const text = Effect.sync(() => new TextDecoder().decode(bytes))
  return Object.create(request, {
    arrayBuffer: { get: () => Effect.succeed(bytes.slice().buffer) },
    text: { get: () => text },
    json: {
      get: () =>
        Effect.flatMap(text, (body) =>
          Effect.try({
            try: () => body === "" ? null : JSON.parse(body) as unknown,
            catch: (cause) => new HttpServerError.RequestError({ request, reason: "Decode", cause })
          }))
    },
    urlParamsBody: {
      get: () => Effect.map(text, (body) => Array.from(new URLSearchParams(body)))
    },
    stream: { get: () => Stream.make(bytes) }
  }) as HttpServerRequest.HttpServerRequest
}

/**
 * The middleware (see the module description and the README for every case). Apply it to the routes
 * that take an `Idempotency-Key` (`HttpRouter.post("/checkout", handler.pipe(IdempotencyKey.middleware()))`)
 * or to a whole app. It reads the request body into memory (the handler reads it as usual: `json`,
 * `text`, `arrayBuffer`, `stream`, `urlParamsBody`; not multipart) and reads a streamed response
 * body completely before storing and sending it, so do not use it on streaming endpoints.
 *
 * - 5xx responses, defects, and interruptions (a client that went away) release the key: a repeat
 *   is processed again. Other responses — 2xx, 3xx, 4xx, and failures that the server renders
 *   below 500 — are stored and replayed.
 * - A database failure while reserving the key answers 503 without running the handler; one while
 *   storing the response is logged, the response is sent, and the key's in-flight mark expires.
 *
 * @since 0.1.0
 * @category middleware
 */
export const middleware = <EP = never, RP = never>(options?: Options<EP, RP> | undefined) => {
  const required = options?.required ?? true
  const methods = new Set((options?.methods ?? ["POST", "PATCH"]).map((method) => method.toUpperCase()))
  const principalOf = options?.principal ?? (() => Effect.succeed("anonymous"))
  const ttlMs = Duration.toMillis(options?.ttl ?? "24 hours")
  const leaseMs = Math.max(1, Duration.toMillis(options?.inFlightTtl ?? "60 seconds"))
  const retryAfterSeconds = Math.max(1, Math.ceil(Duration.toSeconds(options?.retryAfter ?? "1 second")))
  const maxResponseBytes = options?.maxResponseBytes ?? 1024 * 1024
  const maxRequestBytes = options?.maxRequestBytes ?? 1024 * 1024
  const tooLarge = (bytes: number) =>
    Problem.response({
      type: problemType("too-large"),
      title: "Request body too large",
      status: 413,
      detail: `The body has ${bytes} bytes; requests with an Idempotency-Key may have at most ${maxRequestBytes}`
    })

  return <E, R>(
    app: HttpApp.Default<E, R>
  ): HttpApp.Default<E | EP, R | RP | IdempotencyStore> =>
    Effect.gen(function*() {
      const request = yield* HttpServerRequest.HttpServerRequest
      if (!methods.has(request.method.toUpperCase())) return yield* app
      const header = request.headers["idempotency-key"]
      if (header === undefined) {
        if (!required) return yield* app
        return Problem.response({
          type: problemType("missing"),
          title: "Idempotency-Key is missing",
          status: 400,
          detail: `${request.method} ${request.url} requires an Idempotency-Key header`
        })
      }
      const parsed = Fingerprint.parseKey(header)
      if ("invalid" in parsed) {
        return Problem.response({
          type: problemType("invalid"),
          title: "Idempotency-Key is invalid",
          status: 400,
          detail: parsed.invalid
        })
      }
      const key = parsed.key
      const store = yield* IdempotencyStore
      const declared = Number(request.headers["content-length"] ?? 0)
      if (declared > maxRequestBytes) return tooLarge(declared)
      const read = yield* Effect.either(
        HttpIncomingMessage.withMaxBodySize(request.arrayBuffer, Option.some(maxRequestBytes))
      )
      if (read._tag === "Left") {
        return Problem.response({
          type: problemType("unreadable"),
          title: "Request body unreadable",
          status: 400,
          detail: `The body could not be read (at most ${maxRequestBytes} bytes): ${read.left.message}`
        })
      }
      const bytes = new Uint8Array(read.right)
      if (bytes.length > maxRequestBytes) return tooLarge(bytes.length)
      const principal = yield* principalOf(request)
      const fingerprint = Fingerprint.fingerprint({
        method: request.method,
        url: request.originalUrl,
        principal,
        body: bytes,
        contentType: request.headers["content-type"]
      })
      const token = randomUUID()
      const now = yield* Clock.currentTimeMillis
      const reserved = yield* Effect.either(store.reserve({
        principal,
        key,
        fingerprint,
        method: request.method,
        path: request.originalUrl,
        token,
        now,
        leaseMs,
        ttlMs
      }))
      if (reserved._tag === "Left") {
        yield* Effect.logError("IdempotencyKey: the key could not be reserved", reserved.left)
        return Problem.response({
          type: problemType("unavailable"),
          title: "Idempotency-Key store unavailable",
          status: 503,
          detail: "The request was not processed: its Idempotency-Key could not be recorded. Retry later."
        }, { "retry-after": String(retryAfterSeconds) })
      }
      const reservation = reserved.right
      switch (reservation._tag) {
        case "Mismatch":
          return Problem.response({
            type: problemType("mismatch"),
            title: "Idempotency-Key reused for another request",
            status: 422,
            detail: `The key "${key}" was used for a request with another method, path or body`
          })
        case "InFlight":
          return Problem.response({
            type: problemType("in-flight"),
            title: "A request with this Idempotency-Key is being processed",
            status: 409,
            detail: `The first request with the key "${key}" has not finished yet. Retry later.`
          }, { "retry-after": String(retryAfterSeconds) })
        case "TooLarge":
          return Problem.response({
            type: problemType("not-stored"),
            title: "The response to this Idempotency-Key was not stored",
            status: 410,
            detail: `The request with the key "${key}" was processed (status ${reservation.status}), but its ` +
              `response was larger than ${maxResponseBytes} bytes and cannot be replayed.`
          })
        case "Completed":
          return replay(reservation.response)
        case "Acquired":
          break
      }

      const release = store.release(principal, key, token).pipe(
        Effect.catchAll((error) => Effect.logWarning("IdempotencyKey: the key could not be released", error))
      )
      const complete = (response: HttpServerResponse.HttpServerResponse, body: Uint8Array | undefined) =>
        Effect.gen(function*() {
          const stored = yield* store.complete({
            principal,
            key,
            token,
            now: yield* Clock.currentTimeMillis,
            status: response.status,
            headers: storedHeaders(response),
            body: body !== undefined && body.length <= maxResponseBytes ? body : undefined
          })
          if (!stored) {
            yield* Effect.logWarning(
              `IdempotencyKey: the in-flight mark of "${key}" expired before the response was stored`
            )
          }
        }).pipe(Effect.catchAll((error) => Effect.logError("IdempotencyKey: the response could not be stored", error)))

      const renew = Effect.gen(function*() {
        const until = (yield* Clock.currentTimeMillis) + leaseMs
        yield* store.renew(principal, key, token, until)
      }).pipe(
        Effect.catchAll((error) => Effect.logWarning("IdempotencyKey: the in-flight mark could not be renewed", error)),
        Effect.delay(Duration.millis(Math.max(1, Math.floor(leaseMs / 3)))),
        Effect.forever
      )

      return yield* Effect.uninterruptibleMask((restore) =>
        Effect.gen(function*() {
          const heartbeat = yield* Effect.fork(Effect.interruptible(renew))
          const exit = yield* Effect.exit(
            restore(app).pipe(
              Effect.provideService(HttpServerRequest.HttpServerRequest, bufferedRequest(request, bytes))
            )
          )
          yield* Fiber.interrupt(heartbeat)
          if (Exit.isFailure(exit)) {
            const cause = exit.cause
            if (Cause.isInterrupted(cause) || Cause.isDie(cause)) {
              yield* release
              return yield* exit
            }
            const [response] = yield* HttpServerError.causeResponse(cause)
            if (response.status >= 500) {
              yield* release
              return yield* exit
            }
            const body = yield* Effect.orElseSucceed(bodyBytes(response.body), () => undefined)
            yield* complete(response, body)
            return yield* exit
          }
          const response = exit.value
          if (response.status >= 500) {
            yield* release
            return response
          }
          const body = yield* Effect.exit(bodyBytes(response.body))
          if (Exit.isFailure(body)) {
            // the response stream failed: nothing complete was produced, so nothing is stored
            yield* release
            return yield* Effect.failCause(body.cause as Cause.Cause<never>)
          }
          yield* complete(response, body.value)
          return response.body._tag === "Stream" && body.value !== undefined
            ? HttpServerResponse.setBody(response, HttpBody.uint8Array(body.value, response.body.contentType))
            : response
        })
      )
    })
}
