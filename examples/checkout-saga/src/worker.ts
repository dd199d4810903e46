/**
 * A worker process without the HTTP API: it claims and executes checkout runs from the shared
 * database until SIGTERM/SIGINT, then shuts down gracefully. Several of them (and the API
 * process's own worker) can share one Postgres (`DATABASE_URL`); the SQLite store is for one
 * process, so with SQLite run the API with its in-process worker instead.
 */
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import { Effect, Layer } from "effect"
import { BaseLive, describeStorage, WorkerLive } from "./App.js"

const program = Effect.gen(function*() {
  yield* Effect.log(`checkout worker started — storage: ${yield* describeStorage}`)
  return yield* Effect.never
}).pipe(Effect.provide(WorkerLive.pipe(Layer.provideMerge(BaseLive))))

NodeRuntime.runMain(program)
