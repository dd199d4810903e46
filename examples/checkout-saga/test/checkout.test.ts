/**
 * The checkout saga on a real SQLite file: the happy path, each failure path ending with a typed
 * error and everything undone, faults injected into every provider, and replay safety at every
 * step boundary. Every test checks the providers' books: no order charged twice, every charge of a
 * failed order refunded, inventory conserved.
 */
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { WorkflowClient } from "@memento/workflow"
import * as Testing from "@memento/workflow/testing"
import { Cause, Effect, Exit, Layer, Option } from "effect"
import { Checkout, CheckoutFailed, CheckoutLive } from "../src/Checkout.js"
import * as Payments from "../src/providers/Payments.js"
import { books, checkoutSettings, env, order, providers, tempSqlite } from "./utils.js"

const failureOf = <A, E>(exit: Exit.Exit<A, E>): E | undefined =>
  Exit.isFailure(exit) ? Option.getOrUndefined(Cause.failureOption(exit.cause)) : undefined

const stepKeys = (id: string) =>
  Effect.flatMap(WorkflowClient.WorkflowClient, (client) => client.inspect(id)).pipe(
    Effect.map((details) => ({
      status: details.run.status,
      steps: details.entries.filter((e) => e.kind !== "compensation").map((e) => `${e.key} ${e.status}`),
      compensations: details.entries.filter((e) => e.kind === "compensation").map((e) => `${e.key} ${e.status}`)
    }))
  )

describe("checkout saga on SQLite", () => {
  it.live("a good order is reserved, charged, confirmed, shipped and emailed", () =>
    Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const receipt = yield* client.execute(Checkout, order("good-1"))
      assert.strictEqual(receipt.amountCents, 2 * 1200)
      assert.isNotNull(receipt.confirmationEmail)

      const run = yield* stepKeys("good-1")
      assert.strictEqual(run.status, "succeeded")
      assert.deepStrictEqual(run.steps, [
        "reserve-inventory succeeded",
        "charge-card succeeded",
        "payment-confirmed succeeded",
        "create-shipment succeeded",
        "send-confirmation-email succeeded"
      ])
      assert.deepStrictEqual(run.compensations, [])

      const { available, order: orderBooks, violations } = yield* books
      const good = orderBooks("good-1")
      assert.deepStrictEqual(good.charges.map((c) => [c.id, c.amountCents, c.confirmed]), [
        [receipt.chargeId, 2400, true]
      ])
      assert.deepStrictEqual(good.refunds, [])
      assert.deepStrictEqual(good.reservations.map((r) => r.status), ["held"])
      assert.deepStrictEqual(good.shipments.map((s) => [s.id, s.status]), [[receipt.shipmentId, "booked"]])
      assert.strictEqual(good.emails, 1)
      assert.strictEqual(available("mug"), 48)
      assert.deepStrictEqual(violations, [])

      // starting the same order again is the same run: nothing runs twice
      const again = yield* client.start(Checkout, order("good-1"))
      assert.isFalse(again.created)
      assert.deepStrictEqual(yield* client.result(Checkout, "good-1"), receipt)
      assert.strictEqual((yield* books).order("good-1").charges.length, 1)
    }).pipe(Effect.provide(env())))

  it.live("a declined card ends compensated: nothing charged, the inventory released", () =>
    Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const exit = yield* Effect.exit(client.execute(
        Checkout,
        order("declined-1", {
          paymentMethod: Payments.TestCards.declined
        })
      ))
      const error = failureOf(exit)
      assert.instanceOf(error, CheckoutFailed)
      assert.strictEqual((error as CheckoutFailed).reason, "card-declined")

      const run = yield* stepKeys("declined-1")
      assert.strictEqual(run.status, "compensated")
      assert.deepStrictEqual(run.steps, ["reserve-inventory succeeded", "charge-card failed"])
      assert.deepStrictEqual(run.compensations, ["reserve-inventory#compensate succeeded"])

      const { available, order: orderBooks, violations } = yield* books
      const declined = orderBooks("declined-1")
      assert.deepStrictEqual(declined.charges, [])
      assert.deepStrictEqual(declined.refunds, [])
      assert.deepStrictEqual(declined.reservations.map((r) => r.status), ["released"])
      assert.deepStrictEqual(declined.shipments, [])
      assert.strictEqual(declined.emails, 0)
      assert.strictEqual(available("mug"), 50)
      assert.deepStrictEqual(violations, [])
    }).pipe(Effect.provide(env())))

  it.live("an out-of-stock item fails the checkout before anything was reserved or charged", () =>
    Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      // the mugs are in stock, the poster is sold out: the reservation is all or nothing
      const exit = yield* Effect.exit(client.execute(
        Checkout,
        order("sold-out-1", {
          items: [{ sku: "mug", quantity: 1 }, { sku: "poster", quantity: 1 }]
        })
      ))
      const error = failureOf(exit)
      assert.instanceOf(error, CheckoutFailed)
      assert.strictEqual((error as CheckoutFailed).reason, "out-of-stock")
      assert.include((error as CheckoutFailed).detail, "poster")

      const run = yield* stepKeys("sold-out-1")
      // nothing succeeded, so nothing is compensated: the run ends `failed`, not `compensated`
      assert.strictEqual(run.status, "failed")
      assert.deepStrictEqual(run.steps, ["reserve-inventory failed"])
      assert.deepStrictEqual(run.compensations, [])

      const { available, order: orderBooks, violations } = yield* books
      assert.deepStrictEqual(orderBooks("sold-out-1").charges, [])
      assert.deepStrictEqual(orderBooks("sold-out-1").reservations, [])
      assert.strictEqual(available("mug"), 50)
      assert.deepStrictEqual(violations, [])
    }).pipe(Effect.provide(env())))

  it.live("a payment the provider never confirms times out and is refunded", () =>
    Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const exit = yield* Effect.exit(client.execute(
        Checkout,
        order("unconfirmed-1", {
          paymentMethod: Payments.TestCards.noConfirmation
        })
      ))
      const error = failureOf(exit)
      assert.instanceOf(error, CheckoutFailed)
      assert.strictEqual((error as CheckoutFailed).reason, "payment-not-confirmed")

      const run = yield* stepKeys("unconfirmed-1")
      assert.strictEqual(run.status, "compensated")
      assert.deepStrictEqual(run.steps, [
        "reserve-inventory succeeded",
        "charge-card succeeded",
        "payment-confirmed failed"
      ])
      assert.deepStrictEqual(run.compensations, [
        "charge-card#compensate succeeded",
        "reserve-inventory#compensate succeeded"
      ])

      const { available, order: orderBooks, violations } = yield* books
      const unconfirmed = orderBooks("unconfirmed-1")
      assert.strictEqual(unconfirmed.charges.length, 1)
      assert.deepStrictEqual(unconfirmed.refunds.map((r) => [r.chargeId, r.amountCents]), [
        [unconfirmed.charges[0]!.id, 2400]
      ])
      assert.deepStrictEqual(unconfirmed.reservations.map((r) => r.status), ["released"])
      assert.strictEqual(available("mug"), 50)
      assert.deepStrictEqual(violations, [])
    }).pipe(Effect.provide(env({ confirmationTimeout: "400 millis" }))))

  it.live("with errors and lost responses injected into every provider, no order is charged twice", () =>
    Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      const orders = Array.from({ length: 12 }, (_, i) =>
        order(`faulty-${i}`, {
          items: [{ sku: i % 2 === 0 ? "mug" : "sticker", quantity: 1 + (i % 3) }],
          paymentMethod: i % 4 === 3 ? Payments.TestCards.declined : Payments.TestCards.visa
        }))
      const exits = yield* Effect.forEach(orders, (o) => Effect.exit(client.execute(Checkout, o)), {
        concurrency: "unbounded"
      })
      exits.forEach((exit, i) => {
        if (i % 4 === 3) assert.strictEqual((failureOf(exit) as CheckoutFailed | undefined)?.reason, "card-declined")
        else assert.isTrue(Exit.isSuccess(exit), `order ${i}: ${Exit.isFailure(exit) ? Cause.pretty(exit.cause) : ""}`)
      })

      // the faults did happen, and were retried
      const retried = yield* Effect.forEach(orders, (o) => client.inspect(o.orderId)).pipe(
        Effect.map((all) => all.flatMap((details) => details.attempts.filter((a) => a.outcome === "retrying")))
      )
      assert.isAbove(retried.length, 0)
      assert.isTrue(retried.some((a) => a.error?.includes("lost response") === true))

      const { books: all, violations } = yield* books
      assert.deepStrictEqual(violations, [])
      for (const o of all.orders) assert.isAtMost(o.charges.length, 1, `order ${o.orderId} charged twice`)
      assert.strictEqual(all.orders.filter((o) => o.charges.length === 1).length, 9)
      assert.strictEqual(all.refundedCents, 0)
    }).pipe(Effect.provide(env({ faults: { errorRate: 0.2, lostResponseRate: 0.2 } }))))
})

describe("simulated payment provider", () => {
  const charge = (payments: Payments.Payments["Type"], amountCents: number) =>
    payments.charge({
      orderId: "o-1",
      runId: "o-1",
      amountCents,
      paymentMethod: Payments.TestCards.noConfirmation,
      idempotencyKey: "key-1"
    })

  it.live("the same idempotency key returns the stored charge, even after a lost response", () =>
    Effect.gen(function*() {
      const losing = yield* Payments.make({ faults: { lostResponseRate: 1 } })
      const healthy = yield* Payments.make()
      const lost = yield* Effect.flip(charge(losing, 1000))
      assert.strictEqual(lost._tag, "ProviderUnavailable")
      const first = yield* charge(healthy, 1000)
      const second = yield* charge(healthy, 1000)
      assert.deepStrictEqual(second, first)
      const sql = yield* SqlClient
      const rows = yield* sql`SELECT id FROM payments_charges`
      assert.deepStrictEqual(rows.map((row) => row.id), [first.id])
      // the same key for another request is a bug in the caller
      const reused = yield* Effect.exit(charge(healthy, 2000))
      assert.isTrue(Exit.isFailure(reused) && Cause.isDie(reused.cause))
      // a refund happens once per charge
      const refund = yield* healthy.refund(first.id)
      assert.deepStrictEqual(yield* healthy.refund(first.id), refund)
      assert.deepStrictEqual(yield* healthy.refundByKey("key-1"), refund)
      assert.isNull(yield* healthy.refundByKey("no-such-key"))
    }).pipe(Effect.scoped, Effect.provide(WorkflowClient.layer.pipe(Layer.provideMerge(tempSqlite)))))
})

describe("Testing.replaySafety", () => {
  // The providers live in an in-memory SQLite database built afresh for every run of the kit.
  const implementation = CheckoutLive.pipe(
    Layer.provide(providers({ confirmationDelay: "1 second" })),
    Layer.provide(checkoutSettings()),
    Layer.provide(WorkflowClient.layer),
    Layer.provide(SqliteClient.layer({ filename: ":memory:" }))
  )

  it.effect("a good order ends the same after a crash at any step boundary", () =>
    Effect.gen(function*() {
      const report = yield* Testing.replaySafety({ workflow: Checkout, implementation, payload: order("replay-good") })
      assert.strictEqual(report.clean.status, "succeeded")
      const keys = new Set(report.boundaries.map((boundary) => boundary.key))
      const steps = [
        "reserve-inventory",
        "charge-card",
        "payment-confirmed",
        "create-shipment",
        "send-confirmation-email"
      ]
      for (const key of steps) assert.isTrue(keys.has(key), `no boundary at ${key}`)
    }))

  it.effect("a declined card ends the same after a crash at any step boundary, compensation included", () =>
    Effect.gen(function*() {
      const report = yield* Testing.replaySafety({
        workflow: Checkout,
        implementation,
        payload: order("replay-declined", { paymentMethod: Payments.TestCards.declined })
      })
      assert.strictEqual(report.clean.status, "compensated")
      assert.isTrue(report.boundaries.some((boundary) => boundary.key === "reserve-inventory#compensate"))
    }))
})
