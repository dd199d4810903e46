/**
 * Webhook de-duplication: `Webhook.receive` verifies the sender's HMAC signature, then records
 * (source, event ID) under a unique key and runs your handler — which starts or signals a workflow —
 * in the same database transaction. A webhook delivered five times, one after the other or at once,
 * runs the handler's writes once; a bad or missing signature gets 401 and stores nothing.
 *
 * @since 0.1.0
 */
import type * as HttpApp from "@effect/platform/HttpApp"
import type * as HttpServerError from "@effect/platform/HttpServerError"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import type { MigrationError } from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Tracing from "@memento/workflow/Tracing"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { createHmac, timingSafeEqual } from "node:crypto"
import * as Problem from "./internal/problem.js"
import * as Tables from "./internal/tables.js"

/**
 * @since 0.1.0
 * @category models
 */
export interface Store {
  /** Records the event; false when it was already recorded. Runs in the current transaction. */
  readonly record: (source: string, eventId: string, now: number) => Effect.Effect<boolean, SqlError>
  /** Deletes events received before `before` (epoch ms); returns how many. */
  readonly purgeBefore: (before: number) => Effect.Effect<number, SqlError>
  readonly sql: SqlClient.SqlClient
}

/**
 * The received events' table, built by `layer` on the `SqlClient` that the `WorkflowStore` uses too
 * (it must be the same database, for the handler's start or signal to share the transaction).
 *
 * @since 0.1.0
 * @category tags
 */
export class WebhookStore extends Context.Tag("@memento/http/Webhook/WebhookStore")<WebhookStore, Store>() {}

/**
 * The events table (`<prefix>webhook_events`) on the `SqlClient` in context, after applying the
 * migrations of `@memento/http`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options?: { readonly tablePrefix?: string | undefined; readonly migrate?: boolean | undefined } | undefined
): Layer.Layer<WebhookStore, SqlError | MigrationError, SqlClient.SqlClient> =>
  Layer.effect(
    WebhookStore,
    Effect.gen(function*() {
      const client = yield* SqlClient.SqlClient
      const tables = yield* Tables.resolve(options?.tablePrefix)
      if (options?.migrate !== false) yield* Tables.migrate(tables)
      const sql = client.withoutTransforms()
      const table = sql.literal(tables.webhookEvents)
      return {
        sql: client,
        record: (source, eventId, now) =>
          sql`INSERT INTO ${table} (source, event_id, received_at) VALUES (${source}, ${eventId}, ${now})
            ON CONFLICT (source, event_id) DO NOTHING
            RETURNING source`.pipe(Effect.map((rows) => rows.length > 0)),
        purgeBefore: (before) =>
          sql`DELETE FROM ${table} WHERE received_at < ${before} RETURNING source`.pipe(
            Effect.map((rows) => rows.length)
          )
      }
    })
  )

/**
 * Deletes the records of events received more than `olderThan` ago (a redelivery after that is
 * processed again: keep it longer than your providers retry, e.g. 30 days).
 *
 * @since 0.1.0
 * @category purge
 */
export const purge = (options: {
  readonly olderThan: Duration.DurationInput
}): Effect.Effect<number, SqlError, WebhookStore> =>
  Effect.gen(function*() {
    const store = yield* WebhookStore
    const now = yield* Clock.currentTimeMillis
    return yield* store.purgeBefore(now - Duration.toMillis(options.olderThan))
  }).pipe(Tracing.withSpan("Webhook.purge"))

/**
 * How the sender signs its deliveries. The signature header holds either Stripe's form
 * `t=<unix seconds>,v1=<signature>[,v1=<signature>…]` (the timestamp is taken from it), or the
 * signature alone (optionally prefixed `sha256=`) with the timestamp in `timestampHeader`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Signature {
  /** The shared secret. */
  readonly secret: string | Redacted.Redacted
  /** Default `webhook-signature`. */
  readonly header?: string | undefined
  /**
   * Where the timestamp (Unix seconds) is, when the signature header does not carry it. Default
   * `webhook-timestamp`.
   */
  readonly timestampHeader?: string | undefined
  /** Default `sha256`. */
  readonly algorithm?: "sha256" | "sha512" | undefined
  /** Default `hex`. */
  readonly encoding?: "hex" | "base64" | undefined
  /** The signed content; default Stripe's `${timestamp}.${body}`. */
  readonly signedContent?: ((timestamp: string, body: string) => string) | undefined
  /** How far the timestamp may be from now, either way (default 5 minutes): older deliveries are refused. */
  readonly tolerance?: Duration.DurationInput | undefined
}

/**
 * @since 0.1.0
 * @category models
 */
export interface ReceiveOptions<A, I, X, E, R> {
  /** The sender (e.g. `"payments"`): event IDs are unique per source. */
  readonly source: string
  readonly signature: Signature
  /** The event's body (JSON). A body that does not decode gets 400 and stores nothing. */
  readonly schema: Schema.Schema<A, I>
  /** The event's ID, as the sender repeats it on every delivery of the event. */
  readonly eventId: (event: A) => string
  /**
   * Runs once per event, in the transaction that records it: start or signal a workflow with the
   * `WorkflowClient` on the same `SqlClient`. Its failure rolls the record back (the sender retries).
   */
  readonly handle: (event: A) => Effect.Effect<X, E, R>
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Received {
  readonly received: true
  readonly source: string
  readonly eventId: string
  readonly duplicate: boolean
}

const problemType = (name: string) => `https://memento.dev/problems/webhook/${name}`

const unauthorized = (detail: string) =>
  Problem.response({ type: problemType("signature"), title: "Invalid webhook signature", status: 401, detail })

/** The timestamp and candidate signatures of a delivery, or why there are none. */
const parseSignature = (
  header: string | undefined,
  timestampHeader: string | undefined
): { readonly timestamp: string; readonly signatures: ReadonlyArray<string> } | { readonly invalid: string } => {
  if (header === undefined || header.trim() === "") return { invalid: "the signature header is missing" }
  const value = header.trim()
  if (/^t=/.test(value) || value.includes(",")) {
    let timestamp: string | undefined
    const signatures: Array<string> = []
    for (const part of value.split(",")) {
      const [name, ...rest] = part.trim().split("=")
      const v = rest.join("=")
      if (name === "t") timestamp = v
      else if (name === "v1") signatures.push(v)
    }
    if (timestamp === undefined) return { invalid: "the signature header has no timestamp (t=)" }
    if (signatures.length === 0) return { invalid: "the signature header has no signature (v1=)" }
    return { timestamp, signatures }
  }
  if (timestampHeader === undefined || timestampHeader.trim() === "") {
    return { invalid: "the timestamp header is missing" }
  }
  return { timestamp: timestampHeader.trim(), signatures: [value.replace(/^sha(256|512)=/, "")] }
}

/**
 * Verifies a delivery's signature: `undefined` when valid, else why not. Constant-time comparison
 * (`crypto.timingSafeEqual`) of the expected HMAC with each candidate signature.
 *
 * @since 0.1.0
 * @category signatures
 */
export const verify = (
  signature: Signature,
  input: {
    readonly headers: Readonly<Record<string, string | undefined>>
    readonly body: string
    readonly now: number
  }
): string | undefined => {
  const header = (signature.header ?? "webhook-signature").toLowerCase()
  const timestampHeader = (signature.timestampHeader ?? "webhook-timestamp").toLowerCase()
  const parsed = parseSignature(input.headers[header], input.headers[timestampHeader])
  if ("invalid" in parsed) return parsed.invalid
  if (!/^\d{1,12}$/.test(parsed.timestamp)) return "the timestamp is not Unix seconds"
  const toleranceMs = Duration.toMillis(signature.tolerance ?? "5 minutes")
  if (Math.abs(input.now - Number(parsed.timestamp) * 1000) > toleranceMs) {
    return "the timestamp is outside the tolerance (a replayed or delayed delivery)"
  }
  const secret = typeof signature.secret === "string" ? signature.secret : Redacted.value(signature.secret)
  const content = (signature.signedContent ?? ((timestamp, body) => `${timestamp}.${body}`))(
    parsed.timestamp,
    input.body
  )
  const expected = createHmac(signature.algorithm ?? "sha256", secret).update(content).digest()
  const encoding = signature.encoding ?? "hex"
  for (const candidate of parsed.signatures) {
    const given = Buffer.from(candidate, encoding)
    if (given.length === expected.length && timingSafeEqual(given, expected)) return undefined
  }
  return "the signature does not match"
}

/**
 * Signs a body as `verify` expects it (Stripe's header form `t=…,v1=…`): for senders and tests.
 *
 * @since 0.1.0
 * @category signatures
 */
export const sign = (
  signature: Signature,
  input: { readonly body: string; readonly timestamp: number }
): string => {
  const secret = typeof signature.secret === "string" ? signature.secret : Redacted.value(signature.secret)
  const timestamp = String(Math.floor(input.timestamp / 1000))
  const content = (signature.signedContent ?? ((t, body) => `${t}.${body}`))(timestamp, input.body)
  const digest = createHmac(signature.algorithm ?? "sha256", secret).update(content).digest(
    signature.encoding ?? "hex"
  )
  return `t=${timestamp},v1=${digest}`
}

/**
 * A route handler receiving one webhook source: signature first (401 and nothing stored when it is
 * missing, wrong, or its timestamp is outside the tolerance), then the body is decoded (400), then
 * the event is recorded and `handle` runs in one database transaction. A duplicate delivery (the
 * event was recorded before, or is being recorded by a concurrent delivery, which it waits for)
 * runs nothing and answers 200 with `"duplicate": true`. Answers 200 with a `Received` JSON body.
 *
 * @since 0.1.0
 * @category handlers
 */
export const receive = <A, I, X, E, R>(
  options: ReceiveOptions<A, I, X, E, R>
): HttpApp.Default<E | SqlError | HttpServerError.RequestError, R | WebhookStore> =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const store = yield* WebhookStore
    const body = yield* request.text
    const now = yield* Clock.currentTimeMillis
    const invalid = verify(options.signature, { headers: request.headers, body, now })
    if (invalid !== undefined) return unauthorized(invalid)
    const decoded = yield* Effect.either(
      Effect.try(() => JSON.parse(body) as unknown).pipe(
        Effect.mapError((error) => String(error)),
        Effect.flatMap((json) =>
          Schema.decodeUnknown(options.schema)(json).pipe(
            Effect.mapError((error) => ParseResult.TreeFormatter.formatErrorSync(error))
          )
        )
      )
    )
    if (decoded._tag === "Left") {
      return Problem.response({
        type: problemType("body"),
        title: "Invalid webhook body",
        status: 400,
        detail: decoded.left
      })
    }
    const event = decoded.right
    const eventId = options.eventId(event)
    const recorded = yield* store.sql.withTransaction(
      Effect.gen(function*() {
        const fresh = yield* store.record(options.source, eventId, now)
        if (fresh) yield* options.handle(event)
        return fresh
      })
    )
    const result: Received = { received: true, source: options.source, eventId, duplicate: !recorded }
    return HttpServerResponse.unsafeJson(result)
  }).pipe(Tracing.withSpan("Webhook.receive", { attributes: { "webhook.source": options.source } }))
