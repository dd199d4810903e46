/**
 * The Postgres store and its connection pool: a store operation interrupted while it waits for a
 * pooled connection must not keep that connection once the pool hands it over. (A connection
 * taken with `SqlClient.reserve` by a fiber interrupted during the wait is never released by
 * `@effect/sql-pg`; with a small pool a worker would then wait forever.)
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { SqlStore } from "@memento/sql"
import { WorkflowStore } from "@memento/workflow/WorkflowStore"
import { Context, Deferred, Effect, Either, Fiber, Layer } from "effect"
import { freshDatabase, pgClient } from "./utils/database.js"

const url = await freshDatabase()

describe("Postgres store and its pool", () => {
  it.scopedLive("an operation interrupted while it waits for a connection gives the connection back", () =>
    Effect.gen(function*() {
      const context = yield* Layer.build(SqlStore.layer().pipe(Layer.provideMerge(pgClient(url, { maxConnections: 1 }))))
      const store = Context.get(context, WorkflowStore)
      const sql = Context.get(context, SqlClient.SqlClient)
      const { run } = yield* store.create({ id: "pool-1", workflow: "pool", payload: "{}" })

      for (let round = 0; round < 3; round++) {
        // the pool's only connection is busy in a transaction
        const release = yield* Deferred.make<void>()
        const holder = yield* Effect.fork(sql.withTransaction(Effect.zipRight(sql`SELECT 1`, Deferred.await(release))))
        yield* Effect.sleep("50 millis")
        // a load waits for it, and is interrupted while it waits
        const waiting = yield* Effect.fork(store.load(run.id))
        yield* Effect.sleep("50 millis")
        yield* Fiber.interruptFork(waiting)
        yield* Deferred.succeed(release, undefined)
        yield* Fiber.join(holder)
        yield* Fiber.await(waiting).pipe(Effect.timeout("5 seconds"))
        // the connection the interrupted load was given goes back to the pool
        const after = yield* store.load(run.id).pipe(Effect.timeout("5 seconds"), Effect.either)
        assert.isTrue(Either.isRight(after), `round ${round}: the pool's connection was not given back`)
      }
    }))
})
