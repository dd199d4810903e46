/**
 * The scripted scenario `npm start` drives on first start (no checkout in the database yet):
 * two orders through the service's own HTTP API — a good one, which ends `succeeded`, and one
 * with a declined card, which ends `compensated` (nothing to refund, its inventory released) —
 * then what happened, from the runs and from the providers' books.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type { SqlClient } from "@effect/sql/SqlClient"
import { WorkflowClient } from "@memento/workflow"
import { Console, Duration, Effect } from "effect"
import { Checkout, type Order } from "./Checkout.js"
import * as Ledger from "./Ledger.js"
import { TestCards } from "./providers/Payments.js"

const address = {
  name: "Ada Lovelace",
  line1: "12 Analytical Row",
  city: "London",
  postalCode: "N1 9GU",
  country: "GB"
}

export const orders: ReadonlyArray<{ readonly label: string; readonly order: Order }> = [
  {
    label: "a good order",
    order: {
      orderId: "demo-good-1",
      email: "ada@example.com",
      items: [{ sku: "mug", quantity: 2 }, { sku: "sticker", quantity: 3 }],
      paymentMethod: TestCards.visa,
      shippingAddress: address
    }
  },
  {
    label: "a declined card",
    order: {
      orderId: "demo-declined-1",
      email: "charles@example.com",
      items: [{ sku: "tshirt", quantity: 1 }],
      paymentMethod: TestCards.declined,
      shippingAddress: { ...address, name: "Charles Babbage" }
    }
  }
]

interface OrderView {
  readonly status: string
  readonly receipt: {
    readonly amountCents: number
    readonly chargeId: string
    readonly shipmentId: string
    readonly trackingNumber: string
    readonly confirmationEmail: string | null
  } | null
  readonly error: { readonly reason?: string; readonly detail?: string; readonly message: string } | null
  readonly steps: ReadonlyArray<{ readonly key: string; readonly status: string }>
  readonly compensations: ReadonlyArray<{ readonly step: string; readonly status: string }>
}

const finished = ["succeeded", "failed", "compensated", "cancelled", "needs_attention", "dead"]
const mark = (status: string) => status === "succeeded" ? "✓" : status === "failed" ? "✗" : "…"
const money = (cents: number) => (cents / 100).toFixed(2)

/** Runs the scenario against the API at `baseUrl` unless checkouts exist already. */
export const runOnFirstStart = (baseUrl: string): Effect.Effect<
  void,
  never,
  HttpClient.HttpClient | WorkflowClient.WorkflowClient | SqlClient
> =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const existing = yield* client.list({ workflow: Checkout.name, limit: 1 })
    if (existing.runs.length > 0) {
      yield* Console.log("Checkouts exist in the database already; the first-start scenario is skipped.")
      return
    }
    const http = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
    yield* Console.log("First start: two orders through POST /checkout ...\n")
    for (const { order } of orders) {
      yield* HttpClientRequest.post(`${baseUrl}/checkout`).pipe(
        HttpClientRequest.bodyUnsafeJson(order),
        http.execute,
        Effect.scoped
      )
    }
    for (const { label, order } of orders) {
      const get = http.get(`${baseUrl}/orders/${order.orderId}`).pipe(
        Effect.flatMap((response) => response.json),
        Effect.map((json) => json as OrderView),
        Effect.scoped
      )
      let view = yield* get
      for (let polls = 0; polls < 600 && !finished.includes(view.status); polls++) {
        yield* Effect.sleep("100 millis")
        view = yield* get
      }
      const outcome = view.error === null
        ? ""
        : ` (${view.error.reason ?? "error"}: ${view.error.detail ?? view.error.message})`
      yield* Console.log(`  ${order.orderId}, ${label}, ${order.paymentMethod}: ${view.status}${outcome}`)
      const steps = view.steps.map((step) => `${step.key} ${mark(step.status)}`)
      yield* Console.log(`    steps:         ${steps.join("  ")}`)
      if (view.compensations.length > 0) {
        yield* Console.log(
          `    compensations: ${view.compensations.map((c) => `${c.step} undone ${mark(c.status)}`).join("  ")}`
        )
      }
      if (view.receipt !== null) {
        const receipt = view.receipt
        yield* Console.log(
          `    receipt:       charged ${money(receipt.amountCents)} (${receipt.chargeId}), shipment ` +
            `${receipt.shipmentId} tracking ${receipt.trackingNumber}, email ${receipt.confirmationEmail ?? "not sent"}`
        )
      }
    }

    const books = yield* Ledger.read
    const violations = Ledger.check(books, yield* Ledger.statuses)
    const charges = books.orders.flatMap((order) => order.charges)
    const refunds = books.orders.flatMap((order) => order.refunds)
    yield* Console.log("\nThe providers' books:")
    yield* Console.log(`  charges:   ${charges.length} (${money(books.chargedCents)})`)
    yield* Console.log(`  refunds:   ${refunds.length} (${money(books.refundedCents)})`)
    const stock = books.stock.map((item) => `${item.sku} ${item.available}/${item.total} (${item.held} held)`)
    yield* Console.log(`  inventory: ${stock.join(", ")} available/owned`)
    yield* Console.log(
      violations.length === 0
        ? "  invariants hold: no order charged twice, every failed order refunded and released, inventory conserved"
        : `  INVARIANTS VIOLATED:\n    ${violations.join("\n    ")}`
    )
  }).pipe(
    Effect.timeout(Duration.minutes(2)),
    Effect.catchAll((error) => Console.error(`The first-start scenario failed: ${error.message}`))
  )
