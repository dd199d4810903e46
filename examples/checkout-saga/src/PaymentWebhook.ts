/**
 * The payment provider's confirmation callbacks as signed webhooks: the simulated provider POSTs
 * `charge.confirmed` events to `POST /webhooks/payments`, signed with HMAC-SHA256 over
 * `${timestamp}.${body}` (Stripe's scheme, header `webhook-signature: t=…,v1=…`), and the service
 * receives them with `Webhook.receive` from `@memento/http`: the signature is verified first (401
 * and nothing stored otherwise), then the event ID is recorded and the run signalled in one
 * database transaction, so an event delivered several times signals the run once.
 *
 * - `PAYMENTS_WEBHOOK_SECRET`: the shared secret (default `whsec_memento_checkout_demo`, a demo
 *   value: set your own outside a demo).
 * - `PAYMENTS_WEBHOOK_URL`: where the provider delivers (default
 *   `http://127.0.0.1:$PORT/webhooks/payments`, the API of this service).
 */
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { Webhook } from "@memento/http"
import { WorkflowClient } from "@memento/workflow"
import type { ConfigError } from "effect"
import { Clock, Config, Effect, Redacted, Schema } from "effect"
import type { Confirmation } from "./providers/Payments.js"
import { confirmationSignal } from "./providers/Payments.js"

/** A payment event, as the provider sends it. */
export const PaymentEvent = Schema.Struct({
  id: Schema.String,
  type: Schema.Literal("charge.confirmed"),
  data: Schema.Struct({ runId: Schema.String, chargeId: Schema.String, amountCents: Schema.Number })
})
export type PaymentEvent = typeof PaymentEvent.Type

/** The webhook's signature settings, from `PAYMENTS_WEBHOOK_SECRET`. */
export const signatureConfig: Config.Config<Webhook.Signature> = Config.map(
  Config.redacted("PAYMENTS_WEBHOOK_SECRET").pipe(Config.withDefault(Redacted.make("whsec_memento_checkout_demo"))),
  (secret) => ({ secret, header: "webhook-signature", tolerance: "5 minutes" })
)

/** Where the provider delivers its webhooks, from `PAYMENTS_WEBHOOK_URL` or `PORT`. */
export const urlConfig: Config.Config<string> = Config.string("PAYMENTS_WEBHOOK_URL").pipe(
  Config.orElse(() =>
    Config.map(
      Config.integer("PORT").pipe(Config.withDefault(3000)),
      (port) => `http://127.0.0.1:${port}/webhooks/payments`
    )
  )
)

/** The event of a confirmation; its ID is the same on every delivery. */
export const eventOf = (confirmation: Confirmation): PaymentEvent => ({
  id: `evt_${confirmation.chargeId}`,
  type: "charge.confirmed",
  data: { runId: confirmation.runId, chargeId: confirmation.chargeId, amountCents: confirmation.amountCents }
})

/** The webhook delivery refused or failed; the provider retries. */
export class DeliveryFailed extends Schema.TaggedError<DeliveryFailed>()("DeliveryFailed", {
  url: Schema.String,
  reason: Schema.String
}) {
  override get message() {
    return `webhook delivery to ${this.url} failed: ${this.reason}`
  }
}

/** The provider's side: POSTs the signed event to `url`; `duplicate` is what the receiver answered. */
export const deliver =
  (url: string, signature: Webhook.Signature) =>
  (confirmation: Confirmation): Effect.Effect<{ readonly duplicate: boolean }, DeliveryFailed> =>
    Effect.gen(function*() {
      const body = JSON.stringify(eventOf(confirmation))
      const now = yield* Clock.currentTimeMillis
      const response = yield* Effect.tryPromise({
        try: (signal) =>
          fetch(url, {
            method: "POST",
            body,
            signal,
            headers: {
              "content-type": "application/json",
              "webhook-signature": Webhook.sign(signature, { body, timestamp: now })
            }
          }),
        catch: (error) => new DeliveryFailed({ url, reason: String(error) })
      })
      const text = yield* Effect.promise(() => response.text().catch(() => ""))
      if (!response.ok) return yield* new DeliveryFailed({ url, reason: `${response.status} ${text.slice(0, 200)}` })
      const answer = yield* Effect.try({
        try: () => JSON.parse(text) as { readonly duplicate?: unknown },
        catch: () => new DeliveryFailed({ url, reason: `not a webhook answer: ${text.slice(0, 200)}` })
      })
      return { duplicate: answer.duplicate === true }
    }).pipe(Effect.timeoutFail({
      duration: "10 seconds",
      onTimeout: () => new DeliveryFailed({ url, reason: "no answer in 10 seconds" })
    }))

/** The provider's delivery as configured by `PAYMENTS_WEBHOOK_URL` / `PORT` and `PAYMENTS_WEBHOOK_SECRET`. */
export const deliverConfig: Effect.Effect<
  (confirmation: Confirmation) => Effect.Effect<{ readonly duplicate: boolean }, DeliveryFailed>,
  ConfigError.ConfigError
> = Effect.map(Effect.all([urlConfig, signatureConfig]), ([url, signature]) => deliver(url, signature))

/**
 * `POST /webhooks/payments`: verifies, de-duplicates and signals the run (`payment-confirmed`,
 * signal ID = charge ID). An event for a run that does not exist is recorded and ignored.
 */
export const receive = Effect.flatMap(signatureConfig, (signature) =>
  Webhook.receive({
    source: "payments",
    signature,
    schema: PaymentEvent,
    eventId: (event) => event.id,
    handle: (event) =>
      Effect.flatMap(WorkflowClient.WorkflowClient, (client) =>
        client.signal(
          event.data.runId,
          confirmationSignal,
          { chargeId: event.data.chargeId, amountCents: event.data.amountCents },
          { signalId: event.data.chargeId }
        )).pipe(
          Effect.catchTag(
            "RunNotFound",
            (error) => Effect.logWarning(`payments webhook ${event.id}: ${error.message}; ignored`)
          )
        )
  })).pipe(
    Effect.catchTags({
      ConfigError: (error) => Effect.die(error),
      SqlError: (error) =>
        Effect.succeed(HttpServerResponse.unsafeJson(
          { type: "about:blank", title: "Storage unavailable", status: 503, detail: error.message },
          { status: 503, contentType: "application/problem+json" }
        )),
      StoreError: (error) =>
        Effect.succeed(HttpServerResponse.unsafeJson(
          { type: "about:blank", title: "Storage unavailable", status: 503, detail: error.message },
          { status: 503, contentType: "application/problem+json" }
        ))
    })
  )
