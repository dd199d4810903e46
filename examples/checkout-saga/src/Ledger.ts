/**
 * The providers' books, read back from their tables, and the invariants a correct saga keeps:
 * no order charged twice, every charge of a failed order refunded in full, no stock or shipment
 * left behind by a failed order, and inventory conserved (available + held = owned).
 */
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { WorkflowError, WorkflowStore } from "@memento/workflow"
import { WorkflowClient } from "@memento/workflow"
import { Effect } from "effect"
import { Checkout } from "./Checkout.js"
import * as Email from "./providers/Email.js"
import * as Inventory from "./providers/Inventory.js"
import * as Payments from "./providers/Payments.js"
import * as Shipping from "./providers/Shipping.js"

export interface OrderBooks {
  readonly orderId: string
  readonly charges: ReadonlyArray<{ readonly id: string; readonly amountCents: number; readonly confirmed: boolean }>
  readonly refunds: ReadonlyArray<{ readonly id: string; readonly chargeId: string; readonly amountCents: number }>
  readonly reservations: ReadonlyArray<{ readonly id: string; readonly status: string; readonly totalCents: number }>
  readonly shipments: ReadonlyArray<{ readonly id: string; readonly status: string }>
  readonly emails: number
}

export interface Books {
  readonly orders: ReadonlyArray<OrderBooks>
  readonly stock: ReadonlyArray<Inventory.StockLevel & { readonly held: number }>
  readonly chargedCents: number
  readonly refundedCents: number
  /** Confirmations the payment provider delivered, and how many of them the service had already. */
  readonly webhookDeliveries: number
  readonly webhookDuplicates: number
}

type Row = Record<string, string | number | null>

/** Reads every provider table. */
export const read: Effect.Effect<Books, SqlError, SqlClient> = Effect.gen(function*() {
  const sql = yield* SqlClient
  const table = (name: string) => sql.literal(name)
  const charges = yield* sql<Row>`SELECT id, order_id, amount_cents, confirmed_at
    FROM ${table(Payments.tables.charges)}`
  const refunds = yield* sql<Row>`SELECT r.id, r.charge_id, r.amount_cents, c.order_id
    FROM ${table(Payments.tables.refunds)} r JOIN ${table(Payments.tables.charges)} c ON c.id = r.charge_id`
  const reservations = yield* sql<Row>`SELECT id, order_id, status, total_cents, items
    FROM ${table(Inventory.tables.reservations)}`
  const shipments = yield* sql<Row>`SELECT id, order_id, status FROM ${table(Shipping.tables.shipments)}`
  const emails = yield* sql<Row>`SELECT order_id FROM ${table(Email.tables.messages)}`
  const deliveries = yield* sql<Row>`SELECT count(*) AS deliveries, coalesce(sum(duplicate), 0) AS duplicates
    FROM ${table(Payments.tables.deliveries)}`
  const items = yield* sql<Row>`SELECT sku, name, price_cents, available, total
    FROM ${table(Inventory.tables.items)} ORDER BY sku`

  const orders = new Map<
    string,
    {
      -readonly [K in keyof OrderBooks]: OrderBooks[K] extends ReadonlyArray<infer A> ? Array<A> : OrderBooks[K]
    }
  >()
  const order = (id: unknown) => {
    const orderId = String(id)
    let books = orders.get(orderId)
    if (books === undefined) {
      books = { orderId, charges: [], refunds: [], reservations: [], shipments: [], emails: 0 }
      orders.set(orderId, books)
    }
    return books
  }
  for (const row of charges) {
    order(row.order_id).charges.push({
      id: String(row.id),
      amountCents: Number(row.amount_cents),
      confirmed: row.confirmed_at !== null
    })
  }
  for (const row of refunds) {
    order(row.order_id).refunds.push({
      id: String(row.id),
      chargeId: String(row.charge_id),
      amountCents: Number(row.amount_cents)
    })
  }
  const held = new Map<string, number>()
  for (const row of reservations) {
    order(row.order_id).reservations.push({
      id: String(row.id),
      status: String(row.status),
      totalCents: Number(row.total_cents)
    })
    if (row.status === "held") {
      for (const item of JSON.parse(String(row.items)) as ReadonlyArray<{ sku: string; quantity: number }>) {
        held.set(item.sku, (held.get(item.sku) ?? 0) + item.quantity)
      }
    }
  }
  for (const row of shipments) order(row.order_id).shipments.push({ id: String(row.id), status: String(row.status) })
  for (const row of emails) order(row.order_id).emails++

  return {
    orders: [...orders.values()].sort((a, b) => a.orderId.localeCompare(b.orderId)),
    stock: items.map((row) => ({
      sku: String(row.sku),
      name: String(row.name),
      priceCents: Number(row.price_cents),
      available: Number(row.available),
      total: Number(row.total),
      held: held.get(String(row.sku)) ?? 0
    })),
    chargedCents: charges.reduce((sum, row) => sum + Number(row.amount_cents), 0),
    refundedCents: refunds.reduce((sum, row) => sum + Number(row.amount_cents), 0),
    webhookDeliveries: Number(deliveries[0]?.deliveries ?? 0),
    webhookDuplicates: Number(deliveries[0]?.duplicates ?? 0)
  }
})

/** The status of every checkout run, by order ID (= workflow ID). */
export const statuses: Effect.Effect<
  ReadonlyMap<string, WorkflowStore.RunStatus>,
  WorkflowError.StoreError,
  WorkflowClient.WorkflowClient
> = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  const result = new Map<string, WorkflowStore.RunStatus>()
  let cursor: string | undefined
  do {
    const page = yield* client.list({ workflow: Checkout.name, limit: 500, cursor })
    for (const run of page.runs) result.set(run.id, run.status)
    cursor = page.nextCursor ?? undefined
  } while (cursor !== undefined)
  return result
})

const undone: ReadonlyArray<WorkflowStore.RunStatus> = ["failed", "compensated", "cancelled"]

/**
 * Checks the invariants against the books and the runs' statuses; returns one message per
 * violation (none: all hold). Orders whose run has not finished are checked for double charges
 * and inventory only.
 */
export const check = (books: Books, runs: ReadonlyMap<string, WorkflowStore.RunStatus>): ReadonlyArray<string> => {
  const violations: Array<string> = []
  for (const order of books.orders) {
    const status = runs.get(order.orderId)
    const id = `order ${order.orderId} (${status ?? "no run"})`
    if (order.charges.length > 1) violations.push(`${id} was charged ${order.charges.length} times`)
    for (const refund of order.refunds) {
      const charge = order.charges.find((c) => c.id === refund.chargeId)
      if (charge !== undefined && charge.amountCents !== refund.amountCents) {
        violations.push(`${id}: refund ${refund.id} of ${refund.amountCents} for a charge of ${charge.amountCents}`)
      }
    }
    if (status === "succeeded") {
      if (order.charges.length !== 1) violations.push(`${id} succeeded with ${order.charges.length} charges`)
      if (order.refunds.length > 0) violations.push(`${id} succeeded but was refunded`)
      if (!order.shipments.some((s) => s.status === "booked")) violations.push(`${id} succeeded without a shipment`)
    } else if (status !== undefined && undone.includes(status)) {
      for (const charge of order.charges) {
        if (!order.refunds.some((r) => r.chargeId === charge.id)) {
          violations.push(`${id}: charge ${charge.id} not refunded`)
        }
      }
      for (const reservation of order.reservations) {
        if (reservation.status === "held") violations.push(`${id}: reservation ${reservation.id} still held`)
      }
      for (const shipment of order.shipments) {
        if (shipment.status === "booked") violations.push(`${id}: shipment ${shipment.id} still booked`)
      }
    } else if (status === undefined) {
      violations.push(`${id}: provider records for an order without a checkout run`)
    }
  }
  for (const item of books.stock) {
    if (item.available + item.held !== item.total) {
      violations.push(
        `inventory of ${item.sku}: ${item.available} available + ${item.held} held != ${item.total} owned`
      )
    }
  }
  return violations
}
