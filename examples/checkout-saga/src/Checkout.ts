/**
 * The checkout saga: reserve inventory → charge the card → wait for the provider's asynchronous
 * confirmation → book the shipment → send the confirmation email. Every step is journaled, so a
 * crashed worker resumes at the step that had not finished; every call to a provider carries the
 * step's idempotency key, so a step that runs again after a crash charges nothing twice. When the
 * checkout fails, the steps that succeeded are compensated in reverse order: cancel the shipment,
 * refund the charge, release the inventory.
 */
import { Step, Workflow } from "@memento/workflow"
import type { Duration } from "effect"
import { Context, Effect, Schedule, Schema } from "effect"
import { Email, SentEmail } from "./providers/Email.js"
import { ProviderUnavailable } from "./providers/Faults.js"
import { Inventory, OutOfStock, Reservation } from "./providers/Inventory.js"
import { Charge, confirmationSignal, PaymentConfirmed, PaymentDeclined, Payments } from "./providers/Payments.js"
import { Shipment, Shipping } from "./providers/Shipping.js"

const Text = (max: number) => Schema.Trim.pipe(Schema.minLength(1), Schema.maxLength(max))

export const OrderItem = Schema.Struct({
  sku: Schema.String.pipe(Schema.pattern(/^[a-z0-9-]{1,64}$/)),
  quantity: Schema.Int.pipe(Schema.between(1, 100))
})

export const Address = Schema.Struct({
  name: Text(200),
  line1: Text(200),
  city: Text(100),
  postalCode: Text(20),
  country: Schema.String.pipe(Schema.pattern(/^[A-Z]{2}$/))
})

/** What `POST /checkout` accepts. `orderId` is the workflow ID: one checkout per order. */
export const Order = Schema.Struct({
  orderId: Schema.String.pipe(Schema.pattern(/^[A-Za-z0-9_-]{1,64}$/)),
  email: Schema.String.pipe(Schema.maxLength(254), Schema.pattern(/^[^@\s]+@[^@\s]+\.[^@\s]+$/)),
  items: Schema.NonEmptyArray(OrderItem).pipe(Schema.maxItems(50)),
  paymentMethod: Schema.String.pipe(Schema.pattern(/^pm_[a-z0-9_]{1,64}$/)),
  shippingAddress: Address
})
export type Order = typeof Order.Type

/** What a successful checkout returns. `confirmationEmail` is null when the email could not be sent. */
export const Receipt = Schema.Struct({
  orderId: Schema.String,
  reservationId: Schema.String,
  chargeId: Schema.String,
  amountCents: Schema.Number,
  shipmentId: Schema.String,
  trackingNumber: Schema.String,
  confirmationEmail: Schema.NullOr(Schema.String)
})
export type Receipt = typeof Receipt.Type

/** Why a checkout failed. By the time it is reported, everything done before was compensated. */
export class CheckoutFailed extends Schema.TaggedError<CheckoutFailed>()("CheckoutFailed", {
  orderId: Schema.String,
  reason: Schema.Literal("out-of-stock", "card-declined", "payment-not-confirmed", "provider-unavailable"),
  detail: Schema.String
}) {
  override get message() {
    return `checkout of order ${this.orderId} failed (${this.reason}): ${this.detail}`
  }
}

export const Checkout = Workflow.make({
  name: "checkout",
  payload: Order,
  success: Receipt,
  error: CheckoutFailed,
  idempotencyKey: (order) => order.orderId
})

/** Tunables of the saga. Read when a run executes; the confirmation deadline is journaled at the first wait. */
export class CheckoutSettings extends Context.Reference<CheckoutSettings>()("checkout/CheckoutSettings", {
  defaultValue: (): {
    readonly confirmationTimeout: Duration.DurationInput
    readonly providerRetry: Schedule.Schedule<unknown, unknown>
  } => ({
    confirmationTimeout: "30 seconds",
    providerRetry: Schedule.exponential("200 millis").pipe(
      Schedule.jittered,
      Schedule.upTo("10 seconds"),
      Schedule.intersect(Schedule.recurs(7))
    )
  })
}) {}

const isUnavailable = (error: { readonly _tag: string }) => error._tag === "ProviderUnavailable"

export const CheckoutLive = Checkout.implement((order) =>
  Effect.gen(function*() {
    const { confirmationTimeout, providerRetry } = yield* CheckoutSettings
    const inventory = yield* Inventory
    const payments = yield* Payments
    const shipping = yield* Shipping
    const email = yield* Email
    const runId = yield* Workflow.workflowId
    const fail = (reason: CheckoutFailed["reason"], detail: string) =>
      Effect.fail(new CheckoutFailed({ orderId: order.orderId, reason, detail }))

    // A provider call that is still failing after its retries may have been applied (the response
    // was lost): undo it by its idempotency key in a step of its own, then fail the checkout.
    const undoUnknown = (
      name: string,
      error: ProviderUnavailable,
      undo: (idempotencyKey: string) => Effect.Effect<unknown, ProviderUnavailable>
    ) =>
      Effect.zipRight(
        error.idempotencyKey === null ? Effect.void : Effect.ignore(
          Step.run(
            name,
            { success: Schema.Void, error: ProviderUnavailable, retry: providerRetry },
            Effect.asVoid(undo(error.idempotencyKey))
          )
        ),
        fail("provider-unavailable", error.message)
      )

    const reservation = yield* Step.run(
      "reserve-inventory",
      {
        success: Reservation,
        error: Schema.Union(OutOfStock, ProviderUnavailable),
        retry: providerRetry,
        retryOn: isUnavailable,
        compensate: (reservation) => inventory.release(reservation.id)
      },
      Effect.flatMap(
        Step.idempotencyKey,
        (idempotencyKey) => inventory.reserve({ orderId: order.orderId, items: order.items, idempotencyKey })
      )
    ).pipe(
      Effect.catchTags({
        OutOfStock: (error) => fail("out-of-stock", error.message),
        ProviderUnavailable: (error) => undoUnknown("release-unknown-reservation", error, inventory.releaseByKey)
      })
    )

    const charge = yield* Step.run(
      "charge-card",
      {
        success: Charge,
        error: Schema.Union(PaymentDeclined, ProviderUnavailable),
        retry: providerRetry,
        retryOn: isUnavailable,
        compensate: (charge) => payments.refund(charge.id)
      },
      Effect.flatMap(Step.idempotencyKey, (idempotencyKey) =>
        payments.charge({
          orderId: order.orderId,
          runId,
          amountCents: reservation.totalCents,
          paymentMethod: order.paymentMethod,
          idempotencyKey
        }))
    ).pipe(
      Effect.catchTags({
        PaymentDeclined: (error) => fail("card-declined", error.message),
        ProviderUnavailable: (error) => undoUnknown("refund-unknown-charge", error, payments.refundByKey)
      })
    )

    // The provider confirms asynchronously; without a confirmation the charge is refunded.
    yield* Workflow.awaitSignal(confirmationSignal, PaymentConfirmed, { timeout: confirmationTimeout }).pipe(
      Effect.catchTag("SignalTimeout", () =>
        fail("payment-not-confirmed", `the provider did not confirm charge ${charge.id} in time`))
    )

    const shipment = yield* Step.run(
      "create-shipment",
      {
        success: Shipment,
        error: ProviderUnavailable,
        retry: providerRetry,
        compensate: (shipment) =>
          shipping.cancel(shipment.id)
      },
      Effect.flatMap(Step.idempotencyKey, (idempotencyKey) =>
        shipping.create({
          orderId: order.orderId,
          reservationId: reservation.id,
          address: order.shippingAddress,
          idempotencyKey
        }))
    ).pipe(
      Effect.catchTag("ProviderUnavailable", (error) =>
        undoUnknown("cancel-unknown-shipment", error, shipping.cancelByKey))
    )

    // The point of no return: once the customer may have been told, nothing is rolled back. An
    // email that still fails after its retries is reported in the receipt, not compensated.
    const sent = yield* Step.run(
      "send-confirmation-email",
      {
        success: SentEmail,
        error: ProviderUnavailable,
        retry: providerRetry
      },
      Effect.flatMap(Step.idempotencyKey, (idempotencyKey) =>
        email.send({
          orderId: order.orderId,
          to: order.email,
          subject: `Order ${order.orderId} confirmed`,
          body: `We charged ${(charge.amountCents / 100).toFixed(2)} and shipped with ${shipment.carrier}, ` +
            `tracking number ${shipment.trackingNumber}.`,
          idempotencyKey
        }))
    ).pipe(Effect.option)

    return {
      orderId: order.orderId,
      reservationId: reservation.id,
      chargeId: charge.id,
      amountCents: charge.amountCents,
      shipmentId: shipment.id,
      trackingNumber: shipment.trackingNumber,
      confirmationEmail: sent._tag === "Some" ? sent.value.messageId : null
    }
  })
)
