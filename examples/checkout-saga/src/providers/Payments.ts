/**
 * A simulated card payment provider. `charge` honours idempotency keys like Stripe (the same key
 * returns the stored charge or decline; nothing is charged twice) and confirms asynchronously: a
 * short while after the charge it calls back the workflow run named in the request with the
 * signal `payment-confirmed` (signal ID = charge ID, so a repeated callback is ignored), or with
 * whatever `deliver` the service configures (a signed webhook). A confirmation that was not
 * delivered — the process died first — is delivered again by any process running the provider,
 * like a provider retrying its webhooks. A refund is full and happens at most once per charge.
 *
 * The payment method picks the outcome, like Stripe's test cards (`TestCards`).
 *
 * Tables: `payments_charges`, `payments_refunds`, `payments_idempotency`.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { WorkflowClient } from "@memento/workflow"
import type { Scope } from "effect"
import { Clock, Context, Duration, Effect, Either, Layer, Schedule, Schema } from "effect"
import type { Faults, ProviderUnavailable } from "./Faults.js"
import { inject } from "./Faults.js"
import * as Idempotency from "./Idempotency.js"

export const tables = {
  charges: "payments_charges",
  refunds: "payments_refunds",
  idempotency: "payments_idempotency",
  deliveries: "payments_deliveries"
} as const

/** Payment methods with a known outcome; any other `pm_…` method is charged successfully. */
export const TestCards = {
  visa: "pm_card_visa",
  declined: "pm_card_declined",
  insufficientFunds: "pm_card_insufficient_funds",
  /** Charged, but the provider never sends the confirmation. */
  noConfirmation: "pm_card_no_confirmation"
} as const

/** The signal the provider sends to the run when a charge is confirmed. */
export const confirmationSignal = "payment-confirmed"

/** The payload of the `payment-confirmed` signal. */
export const PaymentConfirmed = Schema.Struct({ chargeId: Schema.String, amountCents: Schema.Number })
export type PaymentConfirmed = typeof PaymentConfirmed.Type

export const Charge = Schema.Struct({ id: Schema.String, amountCents: Schema.Number })
export type Charge = typeof Charge.Type

export const Refund = Schema.Struct({ id: Schema.String, chargeId: Schema.String, amountCents: Schema.Number })
export type Refund = typeof Refund.Type

/** The card was declined. Nothing was charged. */
export class PaymentDeclined extends Schema.TaggedError<PaymentDeclined>()("PaymentDeclined", {
  code: Schema.Literal("card_declined", "insufficient_funds")
}) {
  override get message() {
    return `the card was declined (${this.code})`
  }
}

export class Payments extends Context.Tag("checkout/Payments")<Payments, {
  /** Charges `amountCents`; `runId` is the workflow run the confirmation is sent to. */
  readonly charge: (request: {
    readonly orderId: string
    readonly runId: string
    readonly amountCents: number
    readonly paymentMethod: string
    readonly idempotencyKey: string
  }) => Effect.Effect<Charge, PaymentDeclined | ProviderUnavailable>
  /** Refunds the whole charge; a second refund of the same charge returns the first. */
  readonly refund: (chargeId: string) => Effect.Effect<Refund, ProviderUnavailable>
  /** Refunds the charge a `charge` with this key created, if any (its response was lost). */
  readonly refundByKey: (idempotencyKey: string) => Effect.Effect<Refund | null, ProviderUnavailable>
}>() {}

/** A confirmation the provider delivers: the charge, and the workflow run the charge request named. */
export interface Confirmation {
  readonly runId: string
  readonly chargeId: string
  readonly amountCents: number
}

export interface Options {
  readonly faults?: Faults | undefined
  /** How long after a charge its confirmation is sent. Default 500 ms. */
  readonly confirmationDelay?: Duration.DurationInput | undefined
  /**
   * How a confirmation reaches the service, and whether the receiver had it already. Default:
   * `client.signal(runId, "payment-confirmed", { chargeId, amountCents }, { signalId: chargeId })`;
   * the service configures a signed webhook (`Webhook.ts`). A failure is retried.
   */
  readonly deliver?:
    | ((confirmation: Confirmation) => Effect.Effect<{ readonly duplicate: boolean }, unknown>)
    | undefined
  /** How many times each confirmation is delivered (default 1): providers deliver webhooks at least once. */
  readonly deliveries?: number | undefined
  /**
   * How often the provider looks for charges whose confirmation was never delivered (the process
   * that made the charge died first) and delivers them again, like a provider retrying its
   * webhooks. Default 1 second.
   */
  readonly redeliveryInterval?: Duration.DurationInput | undefined
}

type ChargeRow = {
  readonly id: string
  readonly run_id: string
  readonly amount_cents: number | string
  readonly payment_method: string
  readonly confirmed_at: number | string | null
}

/** Creates the tables and builds the service; confirmation callbacks run in the layer's scope. */
export const make = (
  options: Options = {}
): Effect.Effect<Payments["Type"], SqlError, SqlClient | WorkflowClient.WorkflowClient | Scope.Scope> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    const client = yield* WorkflowClient.WorkflowClient
    const scope = yield* Effect.scope
    yield* Idempotency.createTables(sql, [
      `CREATE TABLE IF NOT EXISTS ${tables.charges} (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        run_id TEXT NOT NULL,
        amount_cents BIGINT NOT NULL,
        payment_method TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        created_at BIGINT NOT NULL,
        confirmed_at BIGINT
      )`,
      `CREATE TABLE IF NOT EXISTS ${tables.refunds} (
        id TEXT PRIMARY KEY,
        charge_id TEXT NOT NULL UNIQUE,
        amount_cents BIGINT NOT NULL,
        created_at BIGINT NOT NULL
      )`,
      Idempotency.tableDdl(tables.idempotency),
      `CREATE TABLE IF NOT EXISTS ${tables.deliveries} (
        charge_id TEXT NOT NULL,
        duplicate INTEGER NOT NULL,
        delivered_at BIGINT NOT NULL
      )`
    ])
    const charges = sql.literal(tables.charges)
    const deliveries = sql.literal(tables.deliveries)
    const refunds = sql.literal(tables.refunds)
    const confirmationDelay = Duration.decode(options.confirmationDelay ?? "500 millis")
    const redeliveryInterval = Duration.decode(options.redeliveryInterval ?? "1 second")
    const deliver = options.deliver ?? ((confirmation: Confirmation) =>
      client.signal(
        confirmation.runId,
        confirmationSignal,
        { chargeId: confirmation.chargeId, amountCents: confirmation.amountCents },
        { signalId: confirmation.chargeId }
      ))

    // Delivers a confirmation (`deliveries` times), then marks the charge confirmed. Several
    // deliveries of one confirmation (repeats, and the redelivery of another process) are
    // de-duplicated by the receiver; each is logged in `payments_deliveries`.
    const deliverOnce = (confirmation: Confirmation) =>
      Effect.gen(function*() {
        const { duplicate } = yield* deliver(confirmation)
        const now = yield* Clock.currentTimeMillis
        yield* sql`INSERT INTO ${deliveries} (charge_id, duplicate, delivered_at)
          VALUES (${confirmation.chargeId}, ${duplicate ? 1 : 0}, ${now})`
      }).pipe(Effect.retry(Schedule.exponential("200 millis").pipe(Schedule.intersect(Schedule.recurs(5)))))
    const deliverConfirmation = (confirmation: Confirmation) =>
      Effect.gen(function*() {
        for (let i = 0; i < Math.max(1, options.deliveries ?? 1); i++) yield* deliverOnce(confirmation)
        const now = yield* Clock.currentTimeMillis
        yield* sql`UPDATE ${charges} SET confirmed_at = ${now} WHERE id = ${confirmation.chargeId}`
      }).pipe(
        Effect.catchAllCause((cause) =>
          Effect.logWarning(`payments: confirmation of ${confirmation.chargeId} not delivered (retried later)`, cause)
        )
      )

    // Confirmations scheduled by this process and not yet delivered.
    const scheduled = new Set<string>()
    const scheduleConfirmation = (charge: Charge, runId: string) =>
      Effect.suspend(() => {
        if (scheduled.has(charge.id)) return Effect.void
        scheduled.add(charge.id)
        return Effect.asVoid(
          Effect.sleep(confirmationDelay).pipe(
            Effect.zipRight(deliverConfirmation({ runId, chargeId: charge.id, amountCents: charge.amountCents })),
            Effect.ensuring(Effect.sync(() => scheduled.delete(charge.id))),
            Effect.forkIn(scope)
          )
        )
      })

    // Redelivery of confirmations that are overdue: the process that made the charge died before
    // delivering, or every attempt failed.
    const redeliver = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const due = now - Duration.toMillis(confirmationDelay) - Duration.toMillis(redeliveryInterval)
      const overdue = yield* sql<ChargeRow>`SELECT id, run_id, amount_cents FROM ${charges}
        WHERE confirmed_at IS NULL AND payment_method <> ${TestCards.noConfirmation} AND created_at <= ${due}
        ORDER BY created_at LIMIT 100`
      yield* Effect.forEach(
        overdue.filter((row) => !scheduled.has(row.id)),
        (row) => deliverConfirmation({ runId: row.run_id, chargeId: row.id, amountCents: Number(row.amount_cents) }),
        { concurrency: 10, discard: true }
      )
    }).pipe(
      Effect.catchAllCause((cause) => Effect.logWarning("payments: redelivery of confirmations failed", cause)),
      Effect.repeat(Schedule.spaced(redeliveryInterval)),
      Effect.interruptible
    )
    yield* Effect.forkIn(redeliver, scope)

    const charge: Payments["Type"]["charge"] = ({ amountCents, idempotencyKey, orderId, paymentMethod, runId }) =>
      Idempotency.run(
        {
          sql,
          table: tables.idempotency,
          operation: "charge",
          idempotencyKey,
          request: { orderId, runId, amountCents, paymentMethod },
          success: Charge,
          error: PaymentDeclined
        },
        Effect.gen(function*() {
          if (paymentMethod === TestCards.declined) return Either.left(new PaymentDeclined({ code: "card_declined" }))
          if (paymentMethod === TestCards.insufficientFunds) {
            return Either.left(new PaymentDeclined({ code: "insufficient_funds" }))
          }
          const created: Charge = { id: Idempotency.idFor("ch", idempotencyKey), amountCents }
          const now = yield* Clock.currentTimeMillis
          yield* sql`INSERT INTO ${charges}
              (id, order_id, run_id, amount_cents, payment_method, idempotency_key, created_at)
            VALUES (${created.id}, ${orderId}, ${runId}, ${amountCents}, ${paymentMethod}, ${idempotencyKey}, ${now})`
          return Either.right(created)
        })
      ).pipe(
        Effect.flatMap(({ response }) => response),
        // a charge the provider has not confirmed yet (a repeat after a crash, too) is confirmed later
        Effect.tap((created) =>
          paymentMethod === TestCards.noConfirmation
            ? Effect.void
            : Effect.flatMap(
              sql<Pick<ChargeRow, "confirmed_at">>`SELECT confirmed_at FROM ${charges} WHERE id = ${created.id}`,
              (rows) => rows[0]?.confirmed_at == null ? scheduleConfirmation(created, runId) : Effect.void
            )
        ),
        inject(options.faults, { provider: "payments", operation: "charge", idempotencyKey })
      )

    const refundCharge = (chargeId: string) =>
      sql.withTransaction(Effect.gen(function*() {
        const rows = yield* sql<ChargeRow>`SELECT id, amount_cents FROM ${charges} WHERE id = ${chargeId}`
        if (rows.length === 0) return yield* Effect.dieMessage(`payments: no charge ${chargeId} to refund`)
        const now = yield* Clock.currentTimeMillis
        yield* sql`INSERT INTO ${refunds} (id, charge_id, amount_cents, created_at)
          VALUES (${`re_${chargeId.slice(3)}`}, ${chargeId}, ${Number(rows[0]!.amount_cents)}, ${now})
          ON CONFLICT (charge_id) DO NOTHING`
        const refund = yield* sql<{ readonly id: string; readonly amount_cents: number | string }>`
          SELECT id, amount_cents FROM ${refunds} WHERE charge_id = ${chargeId}`
        return { id: refund[0]!.id, chargeId, amountCents: Number(refund[0]!.amount_cents) }
      }))

    return Payments.of({
      charge,
      refund: (chargeId) =>
        refundCharge(chargeId).pipe(
          inject(options.faults, { provider: "payments", operation: "refund", idempotencyKey: null })
        ),
      refundByKey: (idempotencyKey) =>
        sql<{ readonly id: string }>`SELECT id FROM ${charges} WHERE idempotency_key = ${idempotencyKey}`.pipe(
          Effect.flatMap((rows) => rows.length === 0 ? Effect.succeed(null) : refundCharge(rows[0]!.id)),
          inject(options.faults, { provider: "payments", operation: "refundByKey", idempotencyKey })
        )
    })
  })

export const layer = (
  options: Options = {}
): Layer.Layer<Payments, SqlError, SqlClient | WorkflowClient.WorkflowClient> => Layer.scoped(Payments, make(options))
