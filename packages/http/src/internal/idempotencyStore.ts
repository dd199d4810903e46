import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import type { Tables } from "./tables.js"

/** A stored response. @internal */
export interface StoredResponse {
  readonly status: number
  readonly headers: ReadonlyArray<readonly [string, string]>
  readonly body: Uint8Array
}

/** What a reservation found. @internal */
export type Reservation =
  | { readonly _tag: "Acquired" }
  | { readonly _tag: "Completed"; readonly response: StoredResponse }
  | { readonly _tag: "TooLarge"; readonly status: number }
  | { readonly _tag: "InFlight"; readonly leaseExpiresAt: number }
  | { readonly _tag: "Mismatch" }

/** @internal */
export interface ReserveInput {
  readonly principal: string
  readonly key: string
  readonly fingerprint: string
  readonly method: string
  readonly path: string
  readonly token: string
  readonly now: number
  readonly leaseMs: number
  readonly ttlMs: number
}

/** @internal */
export interface Store {
  readonly reserve: (input: ReserveInput) => Effect.Effect<Reservation, SqlError>
  /** Extends the in-flight mark; false when the mark is no longer this token's. */
  readonly renew: (
    principal: string,
    key: string,
    token: string,
    leaseExpiresAt: number
  ) => Effect.Effect<boolean, SqlError>
  /** Stores the response (or, with `body: undefined`, that it was too large); false when the mark was lost. */
  readonly complete: (input: {
    readonly principal: string
    readonly key: string
    readonly token: string
    readonly now: number
    readonly status: number
    readonly headers: ReadonlyArray<readonly [string, string]>
    readonly body: Uint8Array | undefined
  }) => Effect.Effect<boolean, SqlError>
  /** Deletes this token's in-flight mark, so that a repeat is processed again. */
  readonly release: (principal: string, key: string, token: string) => Effect.Effect<void, SqlError>
  /** Deletes up to `limit` expired keys (never a live in-flight mark); returns how many. */
  readonly purgeBatch: (now: number, limit: number) => Effect.Effect<number, SqlError>
}

interface Row {
  readonly fingerprint: string
  readonly state: string
  readonly token: string | null
  readonly lease_expires_at: number | string | bigint | null
  readonly status: number | string | null
  readonly headers: string | null
  readonly body: Uint8Array | null
  readonly expires_at: number | string | bigint
}

const num = (value: number | string | bigint | null): number => value === null ? 0 : Number(value)

const toBuffer = (bytes: Uint8Array): Buffer => Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)

/** How many times `reserve` re-reads a key that changed under it before giving up. */
const maxRounds = 10

/**
 * The SQL of the idempotency records; the same statements on Postgres and SQLite. Times are epoch
 * milliseconds from the caller (the Effect `Clock`).
 *
 * @internal
 */
export const make = (sql: SqlClient.SqlClient, t: Tables): Store => {
  const table = sql.literal(t.idempotencyKeys)

  const takeOver = (input: ReserveInput, previousToken: string | null) =>
    sql`UPDATE ${table} SET fingerprint = ${input.fingerprint}, state = 'in_flight', token = ${input.token},
        method = ${input.method}, path = ${input.path}, lease_expires_at = ${input.now + input.leaseMs},
        status = NULL, headers = NULL, body = NULL, created_at = ${input.now}, completed_at = NULL,
        expires_at = ${input.now + input.ttlMs}
      WHERE principal = ${input.principal} AND idempotency_key = ${input.key}
        AND ${previousToken === null ? sql`token IS NULL` : sql`token = ${previousToken}`}
      RETURNING principal`.pipe(Effect.map((rows) => rows.length > 0))

  const reserve = (input: ReserveInput): Effect.Effect<Reservation, SqlError> =>
    Effect.gen(function*() {
      for (let round = 0; round < maxRounds; round++) {
        const inserted = yield* sql`INSERT INTO ${table}
            (principal, idempotency_key, fingerprint, state, token, method, path, lease_expires_at, created_at,
             expires_at)
          VALUES (${input.principal}, ${input.key}, ${input.fingerprint}, 'in_flight', ${input.token},
            ${input.method}, ${input.path}, ${input.now + input.leaseMs}, ${input.now}, ${input.now + input.ttlMs})
          ON CONFLICT (principal, idempotency_key) DO NOTHING
          RETURNING principal`
        if (inserted.length > 0) return { _tag: "Acquired" } as const
        const [row] = yield* sql<Row>`SELECT fingerprint, state, token, lease_expires_at, status, headers, body,
            expires_at
          FROM ${table} WHERE principal = ${input.principal} AND idempotency_key = ${input.key}`
        if (row === undefined) continue // deleted in between (released or purged): insert again
        const leaseLive = row.state === "in_flight" && num(row.lease_expires_at) > input.now
        if (num(row.expires_at) <= input.now && !leaseLive) {
          // the key expired: it is a new key
          if (yield* takeOver(input, row.token)) return { _tag: "Acquired" } as const
          continue
        }
        if (row.fingerprint !== input.fingerprint) return { _tag: "Mismatch" } as const
        if (row.state === "completed") {
          const headers = JSON.parse(row.headers ?? "[]") as ReadonlyArray<readonly [string, string]>
          const body = row.body === null ? new Uint8Array(0) : new Uint8Array(row.body)
          return { _tag: "Completed", response: { status: num(row.status), headers, body } } as const
        }
        if (row.state === "too_large") return { _tag: "TooLarge", status: num(row.status) } as const
        if (leaseLive) return { _tag: "InFlight", leaseExpiresAt: num(row.lease_expires_at) } as const
        // an in-flight mark whose holder stopped renewing it (the process died): processed again
        if (yield* takeOver(input, row.token)) return { _tag: "Acquired" } as const
      }
      return yield* Effect.dieMessage(`Idempotency-Key "${input.key}": the record kept changing while it was read`)
    })

  return {
    reserve,
    renew: (principal, key, token, leaseExpiresAt) =>
      sql`UPDATE ${table} SET lease_expires_at = ${leaseExpiresAt}
        WHERE principal = ${principal} AND idempotency_key = ${key} AND token = ${token} AND state = 'in_flight'
        RETURNING principal`.pipe(Effect.map((rows) => rows.length > 0)),
    complete: (input) =>
      sql`UPDATE ${table} SET state = ${input.body === undefined ? "too_large" : "completed"},
          status = ${input.status}, headers = ${JSON.stringify(input.headers)},
          body = ${input.body === undefined ? null : toBuffer(input.body)}, completed_at = ${input.now},
          lease_expires_at = NULL
        WHERE principal = ${input.principal} AND idempotency_key = ${input.key} AND token = ${input.token}
          AND state = 'in_flight'
        RETURNING principal`.pipe(Effect.map((rows) => rows.length > 0)),
    release: (principal, key, token) =>
      sql`DELETE FROM ${table}
        WHERE principal = ${principal} AND idempotency_key = ${key} AND token = ${token} AND state = 'in_flight'`
        .pipe(Effect.asVoid),
    purgeBatch: (now, limit) =>
      sql`DELETE FROM ${table} WHERE (principal, idempotency_key) IN (
          SELECT principal, idempotency_key FROM ${table}
          WHERE expires_at <= ${now} AND (state <> 'in_flight' OR lease_expires_at <= ${now})
          LIMIT ${limit}
        )
        RETURNING principal`.pipe(Effect.map((rows) => rows.length))
  }
}
