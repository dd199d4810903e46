import type { Scope } from "effect"
import * as Clock from "effect/Clock"
import * as Cron from "effect/Cron"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Schedule from "effect/Schedule"
import type * as Workflow from "../Workflow.js"
import * as WorkflowClient from "../WorkflowClient.js"
import type { StoreError } from "../WorkflowError.js"
import { InvalidPayload } from "../WorkflowError.js"
import { WorkflowStore } from "../WorkflowStore.js"
import * as Codec from "./codec.js"

/**
 * What a scheduler does, when it starts, with ticks whose time passed while no scheduler of the
 * schedule was running: start a run for `"all"` of them (oldest first), for the `"latest"` only,
 * or for `"none"`.
 *
 * @since 0.1.0
 * @category models
 */
export type CatchUp = "all" | "latest" | "none"

/**
 * @since 0.1.0
 * @category models
 */
export interface ScheduleOptions<W extends Workflow.Any> {
  /** A cron expression (5 fields, or 6 with seconds first), as `effect/Cron` parses it. */
  readonly cron: string
  /** The IANA time zone the expression is read in (`"Europe/Berlin"`). Default `"UTC"`. */
  readonly timezone?: string | undefined
  /** The payload of every run the schedule starts. */
  readonly payload: Workflow.PayloadOf<W>
  /** Ticks missed while every scheduler was down: `"all"`, `"latest"` (default) or `"none"`. */
  readonly catchUp?: CatchUp | undefined
  /**
   * Names the schedule: run IDs are `<name>@<tick as ISO 8601 UTC>` and the store keeps the
   * schedule's cursor under it. Default: the workflow's name. Give two schedules of one workflow
   * different names.
   */
  readonly name?: string | undefined
}

/** The latest tick at or before `time`. */
const latestTick = (cron: Cron.Cron, time: number): number | undefined => {
  try {
    return Cron.prev(cron, new Date(Math.floor(time / 1_000) * 1_000 + 1_000)).getTime()
  } catch {
    return undefined
  }
}

const nextTick = (cron: Cron.Cron, after: number): number => Cron.next(cron, new Date(after)).getTime()

/** Store calls are retried (capped at a minute between attempts) until the store answers. */
const untilStored = <A>(effect: Effect.Effect<A, StoreError>): Effect.Effect<A> =>
  effect.pipe(
    Effect.tapError((error) => Effect.logWarning(`schedule: store unavailable, retrying: ${error.message}`)),
    Effect.retry(
      Schedule.exponential("1 second", 2).pipe(
        Schedule.modifyDelay((_, delay): Duration.DurationInput => Math.min(60_000, Duration.toMillis(delay)))
      )
    ),
    Effect.orDie
  )

/**
 * Runs a schedule in the current scope: see `schedule`.
 */
export const make = <W extends Workflow.Any>(
  workflow: W,
  options: ScheduleOptions<W>
): Effect.Effect<void, Cron.ParseError | InvalidPayload, Scope.Scope | WorkflowStore> =>
  Effect.gen(function*() {
    const name = options.name ?? workflow.name
    const cron = yield* Cron.parse(options.cron, options.timezone ?? "UTC")
    yield* Codec.encode(workflow.payloadSchema, options.payload).pipe(
      Effect.mapError((error) =>
        new InvalidPayload({ workflow: workflow.name, message: `payload of schedule "${name}": ${error.message}` })
      )
    )
    const store = yield* WorkflowStore
    const client = yield* WorkflowClient.make
    const catchUp = options.catchUp ?? "latest"

    // A tick whose run cannot be started (its ID holds another run, the payload is too large) is
    // logged and passed: retrying it would block every later tick.
    const notStarted = (id: string, message: string) =>
      Effect.as(Effect.logError(`schedule "${name}" could not start ${id}: ${message}`), false)

    /** Starts the tick's run (idempotent: every scheduler starts the same ID) and moves the cursor. */
    const fire = (tick: number) =>
      Effect.gen(function*() {
        const id = `${name}@${new Date(tick).toISOString()}`
        const started = yield* client.start(workflow, options.payload, { id }).pipe(
          Effect.map((handle) => handle.created),
          Effect.catchTags({
            WorkflowIdConflict: (error) => notStarted(id, error.message),
            InvalidPayload: (error) => notStarted(id, error.message),
            PayloadTooLarge: (error) => notStarted(id, error.message)
          }),
          untilStored
        )
        if (started) yield* Effect.logInfo(`schedule "${name}" started ${id}`)
        yield* untilStored(store.advanceSchedule(name, tick))
      })

    const run = Effect.gen(function*() {
      const startedAt = yield* Clock.currentTimeMillis
      const cursor = yield* untilStored(store.scheduleCursor(name))
      if (Option.isNone(cursor)) {
        // The schedule's first start ever: ticks from now on are due, and missed if every scheduler
        // is down when they come.
        yield* untilStored(store.advanceSchedule(name, startedAt))
      } else {
        const latest = latestTick(cron, startedAt)
        if (latest !== undefined && latest > cursor.value) {
          if (catchUp === "all") {
            for (let tick = nextTick(cron, cursor.value); tick <= latest; tick = nextTick(cron, tick)) {
              yield* fire(tick)
            }
          } else if (catchUp === "latest") {
            yield* fire(latest)
          } else {
            yield* untilStored(store.advanceSchedule(name, latest))
          }
        }
      }
      // From here on the scheduler is up: every tick is started, even one it wakes up late for.
      let last = Math.max(startedAt, Option.getOrElse(cursor, () => startedAt))
      while (true) {
        const tick = nextTick(cron, last)
        const now = yield* Clock.currentTimeMillis
        if (tick > now) {
          yield* Effect.sleep(Duration.millis(tick - now))
          continue
        }
        yield* fire(tick)
        last = tick
      }
    })

    yield* run.pipe(Effect.annotateLogs("memento.schedule", name), Effect.forkScoped)
  })

/**
 * Starts one run of `workflow` per tick of a cron expression, as a layer that runs a scheduler while
 * it is in use (put it next to each worker). Every tick's run has the workflow ID
 * `<name>@<tick as ISO 8601 UTC>` (`nightly@2026-01-31T02:00:00.000Z`) and is started with the
 * client's idempotent `start`, so however many schedulers run, each tick starts exactly one run.
 *
 * The store keeps the last tick the schedule started (its cursor). A scheduler that starts reads it
 * and handles the ticks that passed while no scheduler ran per `catchUp` (default `"latest"`: one
 * run for the most recent missed tick). While it runs, a scheduler starts every tick, late if it
 * was held up. The layer fails with `Cron.ParseError` for an invalid expression or time zone and
 * with `InvalidPayload` for a payload its Schema does not encode.
 *
 * @since 0.1.0
 * @category scheduling
 */
export const schedule = <W extends Workflow.Any>(
  workflow: W,
  options: ScheduleOptions<W>
): Layer.Layer<never, Cron.ParseError | InvalidPayload, WorkflowStore> => Layer.scopedDiscard(make(workflow, options))
