/**
 * Helpers of the @memento/http tests: the two databases (a real SQLite file, a fresh Postgres
 * database on the server of `globalSetup`), a real HTTP server on port 0, and a controllable clock.
 */
import * as NodeHttpServer from "@effect/platform-node/NodeHttpServer"
import type * as HttpApp from "@effect/platform/HttpApp"
import * as HttpClient from "@effect/platform/HttpClient"
import * as HttpClientRequest from "@effect/platform/HttpClientRequest"
import * as HttpServer from "@effect/platform/HttpServer"
import type * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import type * as SqlClient from "@effect/sql/SqlClient"
import { Clock, Duration, Effect, Layer } from "effect"
import type { Scope } from "effect"
import { freshDatabase, pgClient, sqliteClient, tempSqliteFile } from "../../sql/test/utils/database.js"

export interface Database {
  readonly name: "sqlite" | "postgres"
  /** A new, empty database (a new file or a new Postgres database) with its `SqlClient`. */
  readonly fresh: () => Layer.Layer<SqlClient.SqlClient>
}

export const sqlite: Database = {
  name: "sqlite",
  fresh: () => sqliteClient(tempSqliteFile())
}

export const postgres: Database = {
  name: "postgres",
  fresh: () =>
    Layer.unwrapEffect(Effect.map(Effect.promise(() => freshDatabase()), (url) => pgClient(url))).pipe(Layer.orDie)
}

/**
 * Real time plus an offset that the test moves forward: what the middleware reads as "now". Sleeps
 * are real (the in-flight mark is renewed in real time).
 */
export const offsetClock = () => {
  let offset = 0
  const real = Clock.make()
  const clock: Clock.Clock = {
    [Clock.ClockTypeId]: Clock.ClockTypeId,
    unsafeCurrentTimeMillis: () => real.unsafeCurrentTimeMillis() + offset,
    unsafeCurrentTimeNanos: () => real.unsafeCurrentTimeNanos() + BigInt(offset) * 1_000_000n,
    currentTimeMillis: Effect.sync(() => real.unsafeCurrentTimeMillis() + offset),
    currentTimeNanos: Effect.sync(() => real.unsafeCurrentTimeNanos() + BigInt(offset) * 1_000_000n),
    sleep: (duration) => real.sleep(duration)
  }
  return {
    clock,
    advance: (duration: Duration.DurationInput) =>
      Effect.sync(() => {
        offset += Duration.toMillis(duration)
      })
  }
}

export interface Response {
  readonly status: number
  readonly headers: Readonly<Record<string, string>>
  readonly text: string
  readonly json: any
}

/** Serves `app` on a real HTTP server (port 0) and returns a function sending requests to it. */
export const serve = <E, R>(
  app: HttpApp.Default<E, R>
): Effect.Effect<
  (request: HttpClientRequest.HttpClientRequest) => Effect.Effect<Response>,
  never,
  Exclude<R, HttpServer.HttpServer | HttpServerRequest.HttpServerRequest | Scope.Scope> | Scope.Scope
> =>
  Effect.gen(function*() {
    const context = yield* Layer.build(NodeHttpServer.layerTest)
    yield* HttpServer.serveEffect(app).pipe(Effect.provide(context))
    const client = yield* Effect.provide(HttpClient.HttpClient, context)
    return (request: HttpClientRequest.HttpClientRequest) =>
      client.execute(request).pipe(
        Effect.flatMap((response) =>
          Effect.map(response.text, (text): Response => {
            let json: unknown = undefined
            try {
              json = JSON.parse(text)
            } catch {
              json = undefined
            }
            return { status: response.status, headers: response.headers, text, json }
          })
        ),
        Effect.scoped,
        Effect.orDie
      )
  }) as any

/** A POST with a JSON body and optional headers. */
export const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
  HttpClientRequest.post(path).pipe(
    HttpClientRequest.setHeaders(headers),
    HttpClientRequest.bodyText(typeof body === "string" ? body : JSON.stringify(body), "application/json")
  )
