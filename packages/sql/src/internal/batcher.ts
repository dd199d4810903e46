import type { Scope } from "effect"
import * as Context from "effect/Context"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"

/**
 * How a batch is executed: one result per item, in order. A failure of the whole effect fails
 * every item of the batch (after the batch was split, see `make`).
 *
 * @internal
 */
export type RunBatch<I, A, E, E2> = (items: ReadonlyArray<I>) => Effect.Effect<ReadonlyArray<Exit.Exit<A, E>>, E2>

/** @internal */
export interface Options<I, A, E, E2> {
  /** Items with the same key never share a batch and never run at once (they keep their order). */
  readonly key: (item: I) => string
  /** Batches executing at once. While they are all busy, new items queue up and form the next batch. */
  readonly maxInFlight: number
  readonly maxBatch: number
  readonly run: RunBatch<I, A, E, E2>
  /** Context services the batch must not inherit from the fiber that happened to start it. */
  readonly omit?: ReadonlyArray<Context.Tag<any, any>> | undefined
}

interface Pending<I, A, E> {
  readonly item: I
  readonly key: string
  /** The item's result, once its batch completed. */
  exit: Exit.Exit<A, E> | undefined
  /** Resumes the submitter waiting for `exit` (set while it waits). */
  resume: ((exit: Exit.Exit<A, E>) => void) | undefined
}

/**
 * A self-clocking batcher, like a database's group commit: an item submitted while fewer than
 * `maxInFlight` batches execute and nothing is queued is executed at once, alone, by the submitting
 * fiber — there is no waiting window, so an idle system pays no latency. Items submitted while every
 * slot is busy queue up, and the next free slot takes all of them (up to `maxBatch`) as one batch,
 * executed by a fiber of the batcher's scope. The busier the system, the larger the batches.
 *
 * When a batch of several items fails as a whole (the statement failed, not an item), each of its
 * items is executed again alone, so one item that breaks the statement fails only itself.
 * An item whose submitter is interrupted before its batch was sent is dropped.
 *
 * @internal
 */
export const make = <I, A, E, E2>(
  options: Options<I, A, E | E2, E2>
): Effect.Effect<(item: I) => Effect.Effect<A, E | E2>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    const queue: Array<Pending<I, A, E | E2>> = []
    const busy = new Set<string>()
    let inFlight = 0

    const complete = (batch: ReadonlyArray<Pending<I, A, E | E2>>, exits: ReadonlyArray<Exit.Exit<A, E | E2>>) => {
      for (let i = 0; i < batch.length; i++) {
        const pending = batch[i]
        if (pending.exit !== undefined) continue
        pending.exit = exits[i] ?? Exit.die("the batch returned no result for an item")
        pending.resume?.(pending.exit)
      }
    }

    const runAlone = (pending: Pending<I, A, E | E2>): Effect.Effect<Exit.Exit<A, E | E2>> =>
      options.run([pending.item]).pipe(
        Effect.exit,
        Effect.map((exit): Exit.Exit<A, E | E2> =>
          Exit.isSuccess(exit) ? exit.value[0] ?? Exit.die("the batch returned no result") : Exit.failCause(exit.cause)
        )
      )

    const execute = (batch: ReadonlyArray<Pending<I, A, E | E2>>): Effect.Effect<void> =>
      options.run(batch.map((pending) => pending.item)).pipe(
        Effect.exit,
        Effect.flatMap((exit) =>
          Exit.isSuccess(exit)
            ? Effect.sync(() => complete(batch, exit.value))
            : batch.length === 1
            ? Effect.sync(() => complete(batch, [Exit.failCause(exit.cause)]))
            : Effect.flatMap(Effect.forEach(batch, runAlone), (exits) => Effect.sync(() => complete(batch, exits)))
        ),
        Effect.onExit((exit) =>
          Effect.suspend(() => {
            // Interrupted (the store's scope closed): nobody waits in vain.
            if (Exit.isFailure(exit)) complete(batch, batch.map(() => exit as Exit.Exit<never, never>))
            inFlight--
            for (const pending of batch) busy.delete(pending.key)
            return pump
          })
        ),
        options.omit === undefined || options.omit.length === 0
          ? (effect) => effect
          : Effect.mapInputContext((context: Context.Context<never>) => Context.omit(...options.omit!)(context))
      )

    /** The queued items that may go now: at most `maxBatch`, one per key, none whose key is busy. */
    const takeBatch = (): Array<Pending<I, A, E | E2>> => {
      const batch: Array<Pending<I, A, E | E2>> = []
      const keys = new Set<string>()
      let i = 0
      while (i < queue.length && batch.length < options.maxBatch) {
        const pending = queue[i]
        if (busy.has(pending.key) || keys.has(pending.key)) {
          i++
          continue
        }
        queue.splice(i, 1)
        keys.add(pending.key)
        batch.push(pending)
      }
      for (const key of keys) busy.add(key)
      return batch
    }

    const pump: Effect.Effect<void> = Effect.suspend(() => {
      const batches: Array<Array<Pending<I, A, E | E2>>> = []
      while (inFlight < options.maxInFlight && queue.length > 0) {
        const batch = takeBatch()
        if (batch.length === 0) break
        inFlight++
        batches.push(batch)
      }
      return batches.length === 0
        ? Effect.void
        : Effect.forEach(batches, (batch) => Effect.forkIn(execute(batch), scope), { discard: true })
    })

    /** A free slot and nothing queued: the item goes alone, executed by the submitting fiber itself. */
    const alone = (item: I, key: string): Effect.Effect<A, E | E2> => {
      inFlight++
      busy.add(key)
      return options.run([item]).pipe(
        Effect.flatMap((exits) => exits[0] ?? Exit.die("the batch returned no result")),
        Effect.ensuring(Effect.suspend(() => {
          inFlight--
          busy.delete(key)
          return pump
        }))
      )
    }

    return (item: I): Effect.Effect<A, E | E2> =>
      Effect.suspend((): Effect.Effect<A, E | E2> => {
        const key = options.key(item)
        if (queue.length === 0 && inFlight < options.maxInFlight && !busy.has(key)) return alone(item, key)
        // A plain callback rather than a `Deferred`: one of these is made for most commits of a
        // busy store, and a `Deferred` costs several times as much to make and to await.
        const pending: Pending<I, A, E | E2> = { item, key, exit: undefined, resume: undefined }
        queue.push(pending)
        // only the wait is interruptible: an item still queued is then dropped; one already sent
        // completes unseen
        return Effect.uninterruptibleMask((restore) =>
          Effect.zipRight(
            pump,
            restore(Effect.async<A, E | E2>((resume) => {
              if (pending.exit !== undefined) return resume(pending.exit)
              pending.resume = resume
              return Effect.sync(() => {
                pending.resume = undefined
                const index = queue.indexOf(pending)
                if (index >= 0) queue.splice(index, 1)
              })
            }))
          )
        )
      })
  })
