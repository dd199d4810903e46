/**
 * The scripted scenario `npm start` drives on first start (no checkout in the database yet),
 * through the service's own HTTP API:
 *
 * 1. a worker process of its own (`node dist/worker.js`, providers slowed down by 500 ms) executes
 *    a good order, which ends `succeeded`, and one with a declined card, which ends `compensated`
 *    (nothing to refund, its inventory released);
 * 2. a third order is placed and the worker process is killed with SIGKILL while that saga books
 *    the shipment (after the charge); the API process's own worker then starts, claims the run
 *    once the dead worker's lease has expired, and finishes it from the journal: the card was
 *    charged once, the shipment booked once;
 * 3. what happened, from the runs and from the providers' books.
 */
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import type { SqlClient } from "@effect/sql/SqlClient"
import { WorkflowClient } from "@memento/workflow"
import { Console, Duration, Effect } from "effect"
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
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

/** The order whose worker is killed mid-saga. */
export const crashOrder: { readonly label: string; readonly order: Order } = {
  label: "its worker killed mid-saga",
  order: {
    orderId: "demo-crash-1",
    email: "grace@example.com",
    items: [{ sku: "tshirt", quantity: 1 }, { sku: "sticker", quantity: 2 }],
    paymentMethod: TestCards.visa,
    shippingAddress: { ...address, name: "Grace Hopper" }
  }
}

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
  readonly steps: ReadonlyArray<{ readonly key: string; readonly status: string; readonly attempts: number }>
  readonly compensations: ReadonlyArray<{ readonly step: string; readonly status: string }>
}

const finished = ["succeeded", "failed", "compensated", "cancelled", "needs_attention", "dead"]
const mark = (status: string) => status === "succeeded" ? "✓" : status === "failed" ? "✗" : "…"
const workerScript = fileURLToPath(new URL("./worker.js", import.meta.url))

/** The scenario's worker process; killed (SIGKILL) when the scope closes if it still runs. */
const workerProcess = (baseUrl: string) =>
  Effect.acquireRelease(
    Effect.async<{ readonly pid: number; readonly kill: Effect.Effect<void> }, Error>((resume) => {
      const child = spawn(process.execPath, ["--enable-source-maps", workerScript], {
        env: {
          ...process.env,
          WORKER_ID: "scenario-worker",
          PAYMENTS_WEBHOOK_URL: process.env.PAYMENTS_WEBHOOK_URL ?? `${baseUrl}/webhooks/payments`,
          LEASE_MS: "3000",
          HEARTBEAT_MS: "1000",
          POLL_MS: "200",
          FAULT_LATENCY_MS: "500",
          FAULT_ERROR_RATE: "0",
          FAULT_LOST_RESPONSE_RATE: "0",
          OTEL_TRACES: "none"
        },
        stdio: ["ignore", "pipe", "pipe"]
      })
      let output = ""
      let exited = false
      let ready = false
      const exit = new Promise<void>((resolve) => child.on("exit", () => resolve()))
      const kill = Effect.promise(() => {
        if (!exited) child.kill("SIGKILL")
        return exit
      })
      child.on("exit", (code, signal) => {
        exited = true
        if (!ready) resume(Effect.fail(new Error(`the worker process exited (${signal ?? code}):\n${output}`)))
      })
      const onData = (chunk: Buffer) => {
        output = (output + chunk.toString("utf8")).slice(-20_000)
        if (!ready && output.includes("checkout worker scenario-worker ready")) {
          ready = true
          resume(Effect.succeed({ pid: child.pid!, kill }))
        }
      }
      child.stdout.on("data", onData)
      child.stderr.on("data", onData)
      return Effect.sync(() => child.kill("SIGKILL"))
    }).pipe(
      Effect.timeoutFail({ duration: "60 seconds", onTimeout: () => new Error("the worker process did not start") })
    ),
    (worker) => worker.kill
  )

const money = (cents: number) => (cents / 100).toFixed(2)

/**
 * Runs the scenario against the API at `baseUrl` unless checkouts exist already; returns whether it
 * ran. `startWorker` starts the API process's own worker (the scenario starts it after the crash).
 */
export const runOnFirstStart = <R>(baseUrl: string, options: {
  readonly startWorker: Effect.Effect<void, unknown, R>
  readonly workerEnabled: boolean
}): Effect.Effect<boolean, never, HttpClient.HttpClient | WorkflowClient.WorkflowClient | SqlClient | R> =>
  Effect.gen(function*() {
    const client = yield* WorkflowClient.WorkflowClient
    const existing = yield* client.list({ workflow: Checkout.name, limit: 1 })
    if (existing.runs.length > 0) {
      yield* Console.log("Checkouts exist in the database already; the first-start scenario is skipped.")
      return false
    }
    if (!options.workerEnabled) {
      yield* Console.log("WORKER=false: the first-start scenario needs the in-process worker; it is skipped.")
      return false
    }
    const http = (yield* HttpClient.HttpClient).pipe(HttpClient.filterStatusOk)
    const post = (order: Order) =>
      HttpClientRequest.post(`${baseUrl}/checkout`).pipe(
        HttpClientRequest.setHeader("idempotency-key", `scenario-${order.orderId}`),
        HttpClientRequest.bodyUnsafeJson(order),
        http.execute,
        Effect.scoped
      )
    const view = (orderId: string) =>
      http.get(`${baseUrl}/orders/${orderId}`).pipe(
        Effect.flatMap((response) => response.json),
        Effect.map((json) => json as OrderView),
        Effect.scoped
      )
    const until = (orderId: string, done: (view: OrderView) => boolean, every: Duration.DurationInput) =>
      Effect.gen(function*() {
        let current = yield* view(orderId)
        while (!done(current)) {
          yield* Effect.sleep(every)
          current = yield* view(orderId)
        }
        return current
      })
    const isFinished = (current: OrderView) => finished.includes(current.status)
    const steps = (current: OrderView) =>
      current.steps.map((step) =>
        `${step.key} ${mark(step.status)}${step.attempts > 1 ? ` (${step.attempts} attempts)` : ""}`
      ).join("  ")
    const report = (label: string, order: Order, current: OrderView) =>
      Effect.gen(function*() {
        const outcome = current.error === null
          ? ""
          : ` (${current.error.reason ?? "error"}: ${current.error.detail ?? current.error.message})`
        yield* Console.log(`  ${order.orderId}, ${label}, ${order.paymentMethod}: ${current.status}${outcome}`)
        yield* Console.log(`    steps:         ${steps(current)}`)
        if (current.compensations.length > 0) {
          yield* Console.log(
            `    compensations: ${current.compensations.map((c) => `${c.step} undone ${mark(c.status)}`).join("  ")}`
          )
        }
        if (current.receipt !== null) {
          const receipt = current.receipt
          yield* Console.log(
            `    receipt:       charged ${money(receipt.amountCents)} (${receipt.chargeId}), shipment ` +
              `${receipt.shipmentId} tracking ${receipt.trackingNumber}, ` +
              `email ${receipt.confirmationEmail ?? "not sent"}`
          )
        }
      })

    // 1. a worker process executes a good order and a declined card
    yield* Console.log("First start: a worker process of its own and three orders through POST /checkout ...\n")
    const worker = yield* workerProcess(baseUrl)
    yield* Console.log(
      `  worker process pid ${worker.pid} (node dist/worker.js, every provider call slowed down by 500 ms) started\n`
    )
    for (const { order } of orders) yield* post(order)
    for (const { label, order } of orders) {
      yield* report(label, order, yield* until(order.orderId, isFinished, "100 millis"))
    }

    // 2. a third order; the worker process is killed with SIGKILL while it books the shipment
    const crash = crashOrder.order
    yield* post(crash)
    const inFlight = yield* until(
      crash.orderId,
      (current) => isFinished(current) || current.steps.some((step) => step.key === "create-shipment"),
      "20 millis"
    )
    yield* worker.kill
    const killed = yield* view(crash.orderId)
    yield* Console.log(
      `\n  ${crash.orderId}, ${crashOrder.label}: worker process pid ${worker.pid} killed with SIGKILL ` +
        (isFinished(inFlight) ? `too late, the run had ${inFlight.status}` : "in the middle of the saga")
    )
    yield* Console.log(
      `    journal at the kill: ${steps(killed)}   (run ${killed.status}, its lease held by the dead worker)`
    )

    // 3. the API process's worker recovers the run
    yield* Console.log(
      "    the API process's own worker starts and claims the run when the dead worker's lease expires ..."
    )
    const recoveryStarted = Date.now()
    yield* Effect.orDie(options.startWorker)
    const recovered = yield* until(crash.orderId, isFinished, "100 millis")
    const seconds = ((Date.now() - recoveryStarted) / 1000).toFixed(1)
    yield* Console.log(`    recovered in ${seconds} s, replaying the journal:`)
    yield* report(crashOrder.label, crash, recovered)

    const books = yield* Ledger.read
    const violations = Ledger.check(books, yield* Ledger.statuses)
    const crashBooks = books.orders.find((order) => order.orderId === crash.orderId)
    if (crashBooks !== undefined) {
      yield* Console.log(
        `    ${crash.orderId} at the providers: ${crashBooks.charges.length} charge` +
          `${crashBooks.charges.length === 1 ? "" : "s"} ` +
          `(${crashBooks.charges.map((c) => money(c.amountCents)).join(", ")}), ` +
          `${crashBooks.reservations.length} reservation, ${crashBooks.shipments.length} shipment, ` +
          `${crashBooks.emails} email — ` +
          (crashBooks.charges.length === 1 ? "the card was charged once" : "CHARGED TWICE")
      )
    }
    const charges = books.orders.flatMap((order) => order.charges)
    const refunds = books.orders.flatMap((order) => order.refunds)
    yield* Console.log("\nThe providers' books:")
    yield* Console.log(`  charges:   ${charges.length} (${money(books.chargedCents)})`)
    yield* Console.log(`  refunds:   ${refunds.length} (${money(books.refundedCents)})`)
    yield* Console.log(
      `  webhooks:  the payment provider POSTed ${books.webhookDeliveries} signed confirmations to ` +
        `/webhooks/payments, ${books.webhookDuplicates} of them repeats that signalled nothing`
    )
    const stock = books.stock.map((item) => `${item.sku} ${item.available}/${item.total} (${item.held} held)`)
    yield* Console.log(`  inventory: ${stock.join(", ")} available/owned`)
    yield* Console.log(
      violations.length === 0
        ? "  invariants hold: no order charged twice, every failed order refunded and released, inventory conserved"
        : `  INVARIANTS VIOLATED:\n    ${violations.join("\n    ")}`
    )
    return true
  }).pipe(
    Effect.scoped,
    Effect.timeout(Duration.minutes(2)),
    Effect.catchAll((error) =>
      Effect.as(
        Console.error(`The first-start scenario failed: ${error instanceof Error ? error.message : String(error)}`),
        false
      )
    )
  )
