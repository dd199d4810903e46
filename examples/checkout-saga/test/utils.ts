/**
 * The checkout service on a real SQLite file in a temporary folder (deleted afterwards): store,
 * client, the four providers and a worker, with short timings.
 */
import { SqlStore } from "@memento/sql"
import { Worker, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import type { Duration } from "effect"
import { Effect, Layer, Schedule } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Order } from "../src/Checkout.js"
import { Checkout, CheckoutLive, CheckoutSettings } from "../src/Checkout.js"
import * as Ledger from "../src/Ledger.js"
import * as Email from "../src/providers/Email.js"
import type { Faults } from "../src/providers/Faults.js"
import * as Inventory from "../src/providers/Inventory.js"
import * as Payments from "../src/providers/Payments.js"
import * as Shipping from "../src/providers/Shipping.js"

export interface EnvOptions {
  readonly faults?: Faults | undefined
  readonly confirmationDelay?: Duration.DurationInput | undefined
  readonly confirmationTimeout?: Duration.DurationInput | undefined
}

/** Quick retries: a provider failure is retried every 10 ms, up to 20 times. */
export const quickRetry: Schedule.Schedule<unknown, unknown> = Schedule.spaced("10 millis").pipe(
  Schedule.intersect(Schedule.recurs(20))
)

export const settings = WorkflowConfig.layer({
  pollMs: 100,
  resultPollMs: 50,
  heartbeatMs: 1_000,
  leaseMs: 5_000,
  shutdownGraceMs: 1_000,
  defaultRetry: quickRetry
})

/** The providers on the `SqlClient` in context. */
export const providers = (options: EnvOptions = {}) =>
  Layer.mergeAll(
    Inventory.layer({ faults: options.faults }),
    Payments.layer({ faults: options.faults, confirmationDelay: options.confirmationDelay ?? "50 millis" }),
    Shipping.layer({ faults: options.faults }),
    Email.layer({ faults: options.faults })
  )

export const checkoutSettings = (options: EnvOptions = {}) =>
  Layer.succeed(CheckoutSettings, {
    confirmationTimeout: options.confirmationTimeout ?? "10 seconds",
    providerRetry: quickRetry
  })

/** A temporary SQLite file, deleted with the layer. */
export const tempSqlite = Layer.unwrapScoped(Effect.map(
  Effect.acquireRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "checkout-saga-"))),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true }))
  ),
  (dir) => SqlStore.layerSqlite({ filename: join(dir, "checkout.db") })
))

/** Store, client, providers and a running worker on a fresh SQLite file. */
export const env = (options: EnvOptions = {}) => {
  const base = providers(options).pipe(
    Layer.provideMerge(WorkflowClient.layer),
    Layer.provideMerge(tempSqlite)
  )
  const worker = Worker.layer({ workflows: [Checkout] }).pipe(
    Layer.provide(CheckoutLive),
    Layer.provide(checkoutSettings(options))
  )
  return worker.pipe(Layer.provideMerge(base), Layer.provideMerge(settings))
}

export const order = (orderId: string, overrides: Partial<Order> = {}): Order => ({
  orderId,
  email: "ada@example.com",
  items: [{ sku: "mug", quantity: 2 }],
  paymentMethod: Payments.TestCards.visa,
  shippingAddress: {
    name: "Ada Lovelace",
    line1: "12 Analytical Row",
    city: "London",
    postalCode: "N1 9GU",
    country: "GB"
  },
  ...overrides
})

/** The providers' books, and the invariant violations (none expected). */
export const books = Effect.gen(function*() {
  const books = yield* Ledger.read
  const violations = Ledger.check(books, yield* Ledger.statuses)
  const orderBooks = (orderId: string) =>
    books.orders.find((order) => order.orderId === orderId) ??
      { orderId, charges: [], refunds: [], reservations: [], shipments: [], emails: 0 }
  const available = (sku: string) => books.stock.find((item) => item.sku === sku)?.available
  return { books, violations, order: orderBooks, available }
})
