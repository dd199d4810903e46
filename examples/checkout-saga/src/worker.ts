/**
 * A worker process without the HTTP API: it claims and executes checkout runs from the shared
 * database until SIGTERM/SIGINT, then shuts down gracefully. Several of them (and the API
 * process's own worker) can share one Postgres (`DATABASE_URL`); the SQLite store is for one
 * process, so with SQLite run the API with its in-process worker instead.
 *
 * Prints one line `checkout worker <WORKER_ID> ready` on stdout once it serves (the chaos driver
 * waits for it).
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Config, Console, Effect, Layer } from "effect"
import { BaseLive, describeStorage, WorkerLive } from "./App.js"
import { TracingLive } from "./Tracing.js"

const program = Effect.gen(function*() {
  const workerId = yield* Config.string("WORKER_ID").pipe(Config.withDefault(`pid ${process.pid}`))
  yield* Console.log(`checkout worker ${workerId} ready — storage: ${yield* describeStorage}`)
  return yield* Effect.never
}).pipe(Effect.provide(WorkerLive.pipe(Layer.provideMerge(BaseLive), Layer.provide(TracingLive))))

NodeRuntime.runMain(program)
