/**
 * The service's layers, configured from the environment. Shared by `main.ts` (API, in-process
 * worker and the first-start scenario) and `worker.ts` (a worker only).
 *
 * - `DATABASE_URL`: a Postgres URL; without it, an embedded SQLite file (`SQLITE_FILE`, default
 *   `.memento/checkout.db`, its folder created).
 * - `FAULT_ERROR_RATE`, `FAULT_LOST_RESPONSE_RATE` (0..1), `FAULT_LATENCY_MS`: failure injection in
 *   every simulated provider (default none).
 * - `PAYMENT_CONFIRMATION_DELAY` (default 500 millis), `PAYMENT_CONFIRMATION_TIMEOUT` (default
 *   30 seconds): when the payment provider confirms, and how long the saga waits for it.
 * - `PAYMENTS_WEBHOOK_URL` (default `http://127.0.0.1:$PORT/webhooks/payments`),
 *   `PAYMENTS_WEBHOOK_SECRET`, `PAYMENTS_WEBHOOK_DELIVERIES` (default 2: every confirmation is
 *   delivered twice, the second de-duplicated): how the payment provider confirms (`PaymentWebhook.ts`).
 * - `WORKER_ID`, `WORKER_CONCURRENCY` (default 10): the worker's name and how many runs it executes
 *   at once.
 * - `LEASE_MS`, `HEARTBEAT_MS`, `POLL_MS`, `MAX_RECOVERIES`: the engine's settings
 *   (`WorkflowConfig`), defaults from `@memento/workflow`.
 */
import type { MigrationError } from "@effect/sql/Migrator"
import type { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { SqlStore } from "@memento/sql"
import type { WorkflowStore } from "@memento/workflow"
import { Worker, WorkflowClient, WorkflowConfig } from "@memento/workflow"
import type { ConfigError } from "effect"
import { Config, Duration, Effect, Layer, Option, Redacted } from "effect"
import { mkdirSync } from "node:fs"
import { dirname } from "node:path"
import { Checkout, CheckoutLive, CheckoutSettings } from "./Checkout.js"
import * as PaymentWebhook from "./PaymentWebhook.js"
import * as Email from "./providers/Email.js"
import type { Faults } from "./providers/Faults.js"
import * as Inventory from "./providers/Inventory.js"
import * as Payments from "./providers/Payments.js"
import * as Shipping from "./providers/Shipping.js"

/** Where the runs and the providers' tables live. */
export const storageConfig = Config.all({
  databaseUrl: Config.option(Config.redacted("DATABASE_URL")),
  sqliteFile: Config.string("SQLITE_FILE").pipe(Config.withDefault(".memento/checkout.db"))
})

/** A line for people: which database the service uses (without credentials). */
export const describeStorage: Effect.Effect<string, ConfigError.ConfigError> = Effect.map(
  storageConfig,
  ({ databaseUrl, sqliteFile }) =>
    Option.match(databaseUrl, {
      onNone: () => `SQLite file ${sqliteFile}`,
      onSome: (url) => {
        try {
          const parsed = new URL(Redacted.value(url))
          return `Postgres ${parsed.host}${parsed.pathname}`
        } catch {
          return "Postgres (DATABASE_URL)"
        }
      }
    })
)

/** The workflow store and the `SqlClient` the providers share with it. */
export const StorageLive: Layer.Layer<
  WorkflowStore.WorkflowStore | SqlClient,
  SqlError | MigrationError | ConfigError.ConfigError
> = Layer.unwrapEffect(Effect.map(storageConfig, ({ databaseUrl, sqliteFile }) =>
  Option.match(databaseUrl, {
    onSome: (url): Layer.Layer<WorkflowStore.WorkflowStore | SqlClient, SqlError | MigrationError> =>
      SqlStore.layerPg({ url }),
    onNone: () =>
      Layer.unwrapEffect(Effect.sync(() => {
        mkdirSync(dirname(sqliteFile), { recursive: true })
        return SqlStore.layerSqlite({ filename: sqliteFile })
      }))
  })))

export const faultsConfig: Config.Config<Faults> = Config.all({
  errorRate: Config.number("FAULT_ERROR_RATE").pipe(Config.withDefault(0)),
  lostResponseRate: Config.number("FAULT_LOST_RESPONSE_RATE").pipe(Config.withDefault(0)),
  latency: Config.map(Config.integer("FAULT_LATENCY_MS").pipe(Config.withDefault(0)), Duration.millis)
})

/** The four simulated providers, with the configured faults. */
export const ProvidersLive: Layer.Layer<
  Inventory.Inventory | Payments.Payments | Shipping.Shipping | Email.Email,
  SqlError | ConfigError.ConfigError,
  SqlClient | WorkflowClient.WorkflowClient
> = Layer.unwrapEffect(Effect.gen(function*() {
  const faults = yield* faultsConfig
  const confirmationDelay = yield* Config.duration("PAYMENT_CONFIRMATION_DELAY").pipe(
    Config.withDefault(Duration.millis(500))
  )
  const deliver = yield* PaymentWebhook.deliverConfig
  const deliveries = yield* Config.integer("PAYMENTS_WEBHOOK_DELIVERIES").pipe(Config.withDefault(2))
  return Layer.mergeAll(
    Inventory.layer({ faults }),
    Payments.layer({ faults, confirmationDelay, deliver, deliveries }),
    Shipping.layer({ faults }),
    Email.layer({ faults })
  )
}))

const optionalInt = (name: string) => Config.option(Config.integer(name))

/** The engine's settings from the environment: `LEASE_MS`, `HEARTBEAT_MS`, `POLL_MS`, `MAX_RECOVERIES`. */
export const EngineConfigLive: Layer.Layer<WorkflowConfig.WorkflowConfig, ConfigError.ConfigError> = Layer
  .unwrapEffect(Effect.map(
    Config.all({
      leaseMs: optionalInt("LEASE_MS"),
      heartbeatMs: optionalInt("HEARTBEAT_MS"),
      pollMs: optionalInt("POLL_MS"),
      resultPollMs: optionalInt("POLL_MS"),
      maxRecoveries: optionalInt("MAX_RECOVERIES")
    }),
    (settings) => {
      const set: Partial<Record<keyof typeof settings, number>> = {}
      for (const [key, value] of Object.entries(settings) as Array<[keyof typeof settings, Option.Option<number>]>) {
        if (Option.isSome(value)) set[key] = value.value
      }
      return WorkflowConfig.layer(set)
    }
  ))

/** Storage, client and providers: what both the API process and a worker process need. */
export const BaseLive = ProvidersLive.pipe(
  Layer.provideMerge(WorkflowClient.layer),
  Layer.provideMerge(StorageLive),
  Layer.provideMerge(EngineConfigLive)
)

/** A worker executing checkouts, with the saga's settings from the environment. */
export const WorkerLive: Layer.Layer<
  never,
  ConfigError.ConfigError,
  WorkflowStore.WorkflowStore | Inventory.Inventory | Payments.Payments | Shipping.Shipping | Email.Email
> = Layer.unwrapEffect(Effect.map(
  Config.all({
    workerId: Config.option(Config.string("WORKER_ID")),
    concurrency: Config.integer("WORKER_CONCURRENCY").pipe(Config.withDefault(10))
  }),
  ({ concurrency, workerId }) =>
    Worker.layer({ workflows: [Checkout], concurrency, workerId: Option.getOrUndefined(workerId) })
)).pipe(
  Layer.provide(CheckoutLive),
  Layer.provide(Layer.unwrapEffect(Effect.map(
    Config.duration("PAYMENT_CONFIRMATION_TIMEOUT").pipe(Config.withDefault(Duration.seconds(30))),
    (confirmationTimeout) =>
      Layer.effect(CheckoutSettings, Effect.map(CheckoutSettings, (settings) => ({ ...settings, confirmationTimeout })))
  )))
)
