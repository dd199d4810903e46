/**
 * A simulated transactional email API: `send` delivers one message per idempotency key (a repeat
 * returns the first message's ID and sends nothing). Sent mail cannot be taken back.
 *
 * Tables: `email_messages`, `email_idempotency`.
 */
import { SqlClient } from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Effect, Either, Layer, Schema } from "effect"
import type { Faults } from "./Faults.js"
import { inject, type ProviderUnavailable } from "./Faults.js"
import * as Idempotency from "./Idempotency.js"

export const tables = {
  messages: "email_messages",
  idempotency: "email_idempotency"
} as const

export const SentEmail = Schema.Struct({ messageId: Schema.String })
export type SentEmail = typeof SentEmail.Type

export class Email extends Context.Tag("checkout/Email")<Email, {
  readonly send: (message: {
    readonly orderId: string
    readonly to: string
    readonly subject: string
    readonly body: string
    readonly idempotencyKey: string
  }) => Effect.Effect<SentEmail, ProviderUnavailable>
}>() {}

export interface Options {
  readonly faults?: Faults | undefined
}

export const make = (options: Options = {}): Effect.Effect<Email["Type"], SqlError, SqlClient> =>
  Effect.gen(function*() {
    const sql = yield* SqlClient
    yield* Idempotency.createTables(sql, [
      `CREATE TABLE IF NOT EXISTS ${tables.messages} (
        id TEXT PRIMARY KEY,
        order_id TEXT NOT NULL,
        idempotency_key TEXT NOT NULL UNIQUE,
        recipient TEXT NOT NULL,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        sent_at BIGINT NOT NULL
      )`,
      Idempotency.tableDdl(tables.idempotency)
    ])
    const messages = sql.literal(tables.messages)

    return Email.of({
      send: ({ body, idempotencyKey, orderId, subject, to }) =>
        Idempotency.run(
          {
            sql,
            table: tables.idempotency,
            operation: "send",
            idempotencyKey,
            request: { orderId, to, subject, body },
            success: SentEmail,
            error: Schema.Never
          },
          Effect.gen(function*() {
            const messageId = Idempotency.idFor("msg", idempotencyKey)
            const now = yield* Clock.currentTimeMillis
            yield* sql`INSERT INTO ${messages} (id, order_id, idempotency_key, recipient, subject, body, sent_at)
              VALUES (${messageId}, ${orderId}, ${idempotencyKey}, ${to}, ${subject}, ${body}, ${now})`
            return Either.right({ messageId })
          })
        ).pipe(
          Effect.flatMap(({ response }) => response),
          inject(options.faults, { provider: "email", operation: "send", idempotencyKey })
        )
    })
  })

export const layer = (options: Options = {}): Layer.Layer<Email, SqlError, SqlClient> =>
  Layer.effect(Email, make(options))
