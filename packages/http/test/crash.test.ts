/**
 * A process that dies (kill -9) while its handler runs must not wedge the key: its in-flight mark
 * stops being renewed and expires, and a repeat is then processed again by another process.
 *
 * The dying process is `fixtures/crash-server.mjs` on the BUILT package (`tsc -b` first, as
 * `npm test` does); the test kills it with SIGKILL while its handler is in flight — no finalizer
 * runs, nothing is released — then serves the same route in this process on the same database, with
 * a clock it moves past the in-flight expiry (30 s in the fixture).
 */
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { IdempotencyKey } from "@memento/http"
import { Effect, Layer } from "effect"
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { freshDatabase, pgClient, sqliteClient, tempSqliteFile } from "../../sql/test/utils/database.js"
import { offsetClock, post, serve } from "./utils.js"

const fixture = fileURLToPath(new URL("./fixtures/crash-server.mjs", import.meta.url))
const dist = fileURLToPath(new URL("../dist/index.js", import.meta.url))

interface Child {
  readonly port: number
  readonly handling: Promise<void>
  readonly kill: () => Promise<void>
}

/** Starts the fixture on `database`; resolves once it listens. */
const startChild = (database: string): Promise<Child> =>
  new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [fixture], {
      env: { ...process.env, DATABASE: database },
      stdio: ["ignore", "pipe", "inherit"]
    })
    let onHandling: () => void = () => {}
    const handling = new Promise<void>((r) => (onHandling = r))
    const exited = new Promise<void>((r) => child.once("exit", () => r()))
    let buffer = ""
    child.stdout.on("data", (data: Buffer) => {
      buffer += data.toString()
      let newline: number
      while ((newline = buffer.indexOf("\n")) >= 0) {
        const line = JSON.parse(buffer.slice(0, newline)) as { readonly event: string; readonly port?: number }
        buffer = buffer.slice(newline + 1)
        if (line.event === "listening") {
          resolve({
            port: line.port!,
            handling,
            kill: () => {
              child.kill("SIGKILL")
              return exited
            }
          })
        }
        if (line.event === "handling") onHandling()
      }
    })
    child.once("exit", (code) => reject(new Error(`the crash server exited early (${code})`)))
  })

const crashMidRequest = (database: string, client: Layer.Layer<SqlClient.SqlClient>) =>
  Effect.gen(function*() {
    assert.isTrue(existsSync(dist), "build @memento/http first: npx tsc -b packages/http")
    const body = JSON.stringify({ order: "o-1" })
    const headers = { "idempotency-key": "crash-1", "content-type": "application/json" }

    // 1. the first request reaches the other process's handler, which is killed -9 while in flight
    const child = yield* Effect.promise(() => startChild(database))
    const request = fetch(`http://127.0.0.1:${child.port}/slow`, { method: "POST", body, headers }).catch(() => {
      // the connection dies with the process
    })
    yield* Effect.promise(() => child.handling)
    yield* Effect.promise(() => child.kill())
    yield* Effect.promise(() => request)

    // 2. this process serves the same route on the same database
    let executions = 0
    const clock = offsetClock()
    const router = HttpRouter.empty.pipe(
      HttpRouter.post(
        "/slow",
        Effect.sync(() => {
          executions++
          return HttpServerResponse.unsafeJson({ processedBy: "survivor" })
        }).pipe(IdempotencyKey.middleware({ inFlightTtl: "30 seconds" }))
      )
    )
    yield* Effect.gen(function*() {
      const sql = yield* SqlClient.SqlClient
      const [mark] = yield* sql<{ readonly state: string }>`SELECT state FROM memento_idempotency_keys`
      assert.strictEqual(mark?.state, "in_flight")
      const send = yield* serve(HttpRouter.toHttpApp(router).pipe(Effect.flatten, Effect.withClock(clock.clock)))
      const repeat = () => send(post("/slow", JSON.parse(body), { "idempotency-key": "crash-1" }))

      // the mark is still live: the dead process cannot be told from a slow one
      const early = yield* repeat()
      assert.strictEqual(early.status, 409)
      assert.isDefined(early.headers["retry-after"])
      assert.strictEqual(executions, 0)

      // past the in-flight expiry the repeat is processed again, once, and then replayed
      yield* clock.advance("31 seconds")
      const processed = yield* repeat()
      assert.strictEqual(processed.status, 200)
      assert.deepStrictEqual(processed.json, { processedBy: "survivor" })
      assert.strictEqual(processed.headers["idempotent-replayed"], undefined)
      const replayed = yield* repeat()
      assert.strictEqual(replayed.headers["idempotent-replayed"], "true")
      assert.strictEqual(executions, 1)
    }).pipe(Effect.provide(IdempotencyKey.layer().pipe(Layer.provideMerge(client))), Effect.scoped)
  })

describe("a crash mid-request", () => {
  it.live("SQLite: the killed process's key is processed again after the in-flight expiry", () => {
    const file = tempSqliteFile()
    // the tables exist before the child starts (it would create them too)
    return Effect.zipRight(
      Effect.provide(IdempotencyKey.migrate(), sqliteClient(file)),
      crashMidRequest(file, sqliteClient(file))
    )
  }, 60_000)

  it.live("Postgres: the killed process's key is processed again after the in-flight expiry", () =>
    Effect.flatMap(
      Effect.promise(() => freshDatabase()),
      (url) => crashMidRequest(url, pgClient(url).pipe(Layer.orDie))
    ), 60_000)
})
