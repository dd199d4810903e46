/**
 * A simulated shipping carrier: `create` books a shipment for a reservation (honouring idempotency
 * keys: one booking per key), `cancel` cancels it (naturally idempotent).
 *
 * Tables: `shipping_shipments`, `shipping_idempotency`.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Effect, Either, Layer, Schema } from "effect"
import type { Faults } from "./Faults.js"
import { inject, type ProviderUnavailable } from "./Faults.js"
import * as Idempotency from "./Idempotency.js"

export const tables = {
  shipments: "shipping_shipments",
  idempotency: "shipping_idempotency"
} as const

export const Shipment = Schema.Struct({ id: Schema.String, carrier: Schema.String, trackingNumber: Schema.String })
export type Shipment = typeof Shipment.Type

export interface Address {
  readonly name: string
  readonly line1: string
  readonly city: string
  readonly postalCode: string
  readonly country: string
}

export class Shipping extends Context.Tag("checkout/Shipping")<Shipping, {
  readonly create: (request: {
    readonly orderId: string
    readonly reservationId: string
    readonly address: Address
    readonly idempotencyKey: string
  }) => Effect.Effect<Shipment, ProviderUnavailable>
  /** `cancelled` is false when the shipment was cancelled before. */
  readonly cancel: (shipmentId: string) => Effect.Effect<{ readonly cancelled: boolean }, ProviderUnavailable>
  /** Cancels the shipment a `create` with this key booked, if any (its response was lost). */
  readonly cancelByKey: (idempotencyKey: string) => Effect.Effect<{ readonly cancelled: boolean }, ProviderUnavailable>
}>() {}

export interface Options {
  readonly faults?: Faults | undefined
}

export const make = (options: Options = {}): Effect.Effect<Shipping["Type"], SqlError, SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* Idempotency.createTables(sql, [
      `CREATE TABLE IF NOT EXISTS ${tables.shipments} (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        reservation_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        carrier TEXT NOT NULL,
        tracking_number TEXT NOT NULL,
        address TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        cancelled_at BIGINT
      )`,
      Idempotency.tableDdl(tables.idempotency)
    ])
    const shipments = sql.literal(tables.shipments)

    const cancelWhere = (column: "id" | "idempotency_key", value: string) =>
      Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const rows = yield* sql`UPDATE ${shipments} SET status = 'cancelled', cancelled_at = ${now}
          WHERE ${sql(column)} = ${value} AND status = 'booked' RETURNING id`
        return { cancelled: rows.length > 0 }
      })

    return Shipping.of({
      create: ({ address, idempotencyKey, orderId, reservationId }) =>
        Idempotency.run(
          {
            sql,
            table: tables.idempotency,
            operation: "create",
            idempotencyKey,
            request: { orderId, reservationId, address },
            success: Shipment,
            error: Schema.Never
          },
          Effect.gen(function*() {
            const id = Idempotency.idFor("shp", idempotencyKey)
            const shipment: Shipment = {
              id,
              carrier: "Durable Parcels",
              trackingNumber: `DP${id.slice(4, 16).toUpperCase()}`
            }
            const now = yield* Clock.currentTimeMillis
            yield* sql`INSERT INTO ${shipments}
                (id, order_id, reservation_id, idempotency_key, carrier, tracking_number, address, status, created_at)
              VALUES (${shipment.id}, ${orderId}, ${reservationId}, ${idempotencyKey}, ${shipment.carrier},
                ${shipment.trackingNumber}, ${JSON.stringify(address)}, 'booked', ${now})`
            return Either.right(shipment)
          })
        ).pipe(
          Effect.flatMap(({ response }) => response),
          inject(options.faults, { provider: "shipping", operation: "create", idempotencyKey })
        ),
      cancel: (shipmentId) =>
        cancelWhere("id", shipmentId).pipe(
          inject(options.faults, { provider: "shipping", operation: "cancel", idempotencyKey: null })
        ),
      cancelByKey: (idempotencyKey) =>
        cancelWhere("idempotency_key", idempotencyKey).pipe(
          inject(options.faults, { provider: "shipping", operation: "cancelByKey", idempotencyKey })
        )
    })
  })

export const layer = (options: Options = {}): Layer.Layer<Shipping, SqlError, SqlClient> =>
  Layer.effect(Shipping, make(options))
