/**
 * A simulated inventory service: a catalog with stock levels, and reservations that hold stock
 * for an order. `reserve` is all-or-nothing and honours idempotency keys; `release` puts the stock
 * back and is naturally idempotent (a reservation is released once).
 *
 * Tables: `inventory_items`, `inventory_reservations`, `inventory_idempotency`.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Effect, Either, Layer, Schema } from "effect"
import type { Faults } from "./Faults.js"
import { inject, ProviderUnavailable } from "./Faults.js"
import * as Idempotency from "./Idempotency.js"

export const tables = {
  items: "inventory_items",
  reservations: "inventory_reservations",
  idempotency: "inventory_idempotency"
} as const

export const ReservedItem = Schema.Struct({
  sku: Schema.String,
  quantity: Schema.Number,
  unitPriceCents: Schema.Number
})

/** Stock held for one order. */
export const Reservation = Schema.Struct({
  id: Schema.String,
  items: Schema.Array(ReservedItem),
  totalCents: Schema.Number
})
export type Reservation = typeof Reservation.Type

/** Not enough stock of `sku` (or no such product). Nothing was reserved. */
export class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", {
  sku: Schema.String,
  requested: Schema.Number,
  available: Schema.Number
}) {
  override get message() {
    return `${this.sku}: ${this.requested} requested, ${this.available} available`
  }
}

export interface CatalogItem {
  readonly sku: string
  readonly name: string
  readonly priceCents: number
  readonly stock: number
}

/** The shop's catalog, seeded into an empty database. */
export const defaultCatalog: ReadonlyArray<CatalogItem> = [
  { sku: "mug", name: "Memento mug", priceCents: 1200, stock: 50 },
  { sku: "tshirt", name: "Saga T-shirt", priceCents: 2500, stock: 20 },
  { sku: "sticker", name: "Replay sticker", priceCents: 300, stock: 500 },
  { sku: "poster", name: "Journal poster", priceCents: 1500, stock: 0 }
]

export interface StockLevel {
  readonly sku: string
  readonly name: string
  readonly priceCents: number
  readonly available: number
  /** Units the shop owns: available plus held by reservations. */
  readonly total: number
}

export class Inventory extends Context.Tag("checkout/Inventory")<Inventory, {
  readonly reserve: (request: {
    readonly orderId: string
    readonly items: ReadonlyArray<{ readonly sku: string; readonly quantity: number }>
    readonly idempotencyKey: string
  }) => Effect.Effect<Reservation, OutOfStock | ProviderUnavailable>
  /** Returns the reservation's stock; `released` is false when it was released before. */
  readonly release: (reservationId: string) => Effect.Effect<{ readonly released: boolean }, ProviderUnavailable>
  /** Releases whatever a `reserve` with this key reserved, if anything (its response was lost). */
  readonly releaseByKey: (idempotencyKey: string) => Effect.Effect<{ readonly released: boolean }, ProviderUnavailable>
  readonly stock: Effect.Effect<ReadonlyArray<StockLevel>, ProviderUnavailable>
}>() {}

export interface Options {
  readonly faults?: Faults | undefined
  readonly catalog?: ReadonlyArray<CatalogItem> | undefined
}

/** Creates the tables, seeds the catalog (products not there yet) and builds the service. */
export const make = (options: Options = {}): Effect.Effect<Inventory["Type"], SqlError, SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* Idempotency.createTables(sql, [
      `CREATE TABLE IF NOT EXISTS ${tables.items} (
        sku TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        price_cents BIGINT NOT NULL,
        available BIGINT NOT NULL,
        total BIGINT NOT NULL
      )`,
      `CREATE TABLE IF NOT EXISTS ${tables.reservations} (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        items TEXT NOT NULL,
        total_cents BIGINT NOT NULL,
        status TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        released_at BIGINT
      )`,
      Idempotency.tableDdl(tables.idempotency)
    ])
    const items = sql.literal(tables.items)
    const reservations = sql.literal(tables.reservations)
    for (const item of options.catalog ?? defaultCatalog) {
      yield* sql`INSERT INTO ${items} (sku, name, price_cents, available, total)
        VALUES (${item.sku}, ${item.name}, ${item.priceCents}, ${item.stock}, ${item.stock})
        ON CONFLICT (sku) DO NOTHING`
    }

    const reserve: Inventory["Type"]["reserve"] = ({ idempotencyKey, items: requested, orderId }) => {
      const quantities = new Map<string, number>()
      for (const item of requested) quantities.set(item.sku, (quantities.get(item.sku) ?? 0) + item.quantity)
      return Idempotency.run(
        {
          sql,
          table: tables.idempotency,
          operation: "reserve",
          idempotencyKey,
          request: { orderId, items: [...quantities] },
          success: Reservation,
          error: OutOfStock
        },
        Effect.gen(function*() {
          const reserved: Array<typeof ReservedItem.Type> = []
          for (const [sku, quantity] of quantities) {
            const rows = yield* sql<{ readonly available: number | string; readonly price_cents: number | string }>`
              SELECT available, price_cents FROM ${items} WHERE sku = ${sku}`
            const available = rows.length === 0 ? 0 : Number(rows[0]!.available)
            if (available < quantity) {
              return Either.left(new OutOfStock({ sku, requested: quantity, available }))
            }
            reserved.push({ sku, quantity, unitPriceCents: Number(rows[0]!.price_cents) })
          }
          for (const { quantity, sku } of reserved) {
            const updated = yield* sql`UPDATE ${items} SET available = available - ${quantity}
              WHERE sku = ${sku} AND available >= ${quantity} RETURNING sku`
            if (updated.length === 0) {
              // another transaction took the stock meanwhile (Postgres): roll back, the caller retries
              return yield* new ProviderUnavailable({
                provider: "inventory",
                operation: "reserve",
                idempotencyKey,
                reason: `concurrent update of ${sku}`
              })
            }
          }
          const reservation: Reservation = {
            id: Idempotency.idFor("res", idempotencyKey),
            items: reserved,
            totalCents: reserved.reduce((sum, item) => sum + item.quantity * item.unitPriceCents, 0)
          }
          const now = yield* Clock.currentTimeMillis
          yield* sql`INSERT INTO ${reservations}
              (id, order_id, idempotency_key, items, total_cents, status, created_at)
            VALUES (${reservation.id}, ${orderId}, ${idempotencyKey}, ${JSON.stringify(reserved)},
              ${reservation.totalCents}, 'held', ${now})`
          return Either.right(reservation)
        })
      ).pipe(
        Effect.flatMap(({ response }) => response),
        inject(options.faults, { provider: "inventory", operation: "reserve", idempotencyKey })
      )
    }

    const releaseWhere = (column: "id" | "idempotency_key", value: string) =>
      sql.withTransaction(Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        const rows = yield* sql<{ readonly items: string }>`UPDATE ${reservations}
          SET status = 'released', released_at = ${now}
          WHERE ${sql(column)} = ${value} AND status = 'held' RETURNING items`
        if (rows.length === 0) return { released: false }
        const held = JSON.parse(rows[0]!.items) as ReadonlyArray<{ readonly sku: string; readonly quantity: number }>
        for (const item of held) {
          yield* sql`UPDATE ${items} SET available = available + ${item.quantity} WHERE sku = ${item.sku}`
        }
        return { released: true }
      }))

    return Inventory.of({
      reserve,
      release: (reservationId) =>
        releaseWhere("id", reservationId).pipe(
          inject(options.faults, { provider: "inventory", operation: "release", idempotencyKey: null })
        ),
      releaseByKey: (idempotencyKey) =>
        releaseWhere("idempotency_key", idempotencyKey).pipe(
          inject(options.faults, { provider: "inventory", operation: "releaseByKey", idempotencyKey })
        ),
      stock: sql<{
        readonly sku: string
        readonly name: string
        readonly price_cents: number | string
        readonly available: number | string
        readonly total: number | string
      }>`SELECT sku, name, price_cents, available, total FROM ${items} ORDER BY sku`.pipe(
        Effect.map((rows) =>
          rows.map((row) => ({
            sku: row.sku,
            name: row.name,
            priceCents: Number(row.price_cents),
            available: Number(row.available),
            total: Number(row.total)
          }))
        ),
        inject(undefined, { provider: "inventory", operation: "stock", idempotencyKey: null })
      )
    })
  })

export const layer = (options: Options = {}): Layer.Layer<Inventory, SqlError, SqlClient> =>
  Layer.effect(Inventory, make(options))
