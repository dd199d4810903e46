import type * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Fragment } from "@effect/sql/Statement"
import type { StoreError } from "@memento/workflow/WorkflowError"
import { InvalidRunState, LeaseLost, RunNotFound } from "@memento/workflow/WorkflowError"
import type {
  ClaimRequest,
  Commit,
  CommitResult,
  NewRun,
  RunDetails,
  RunRecord,
  StoreEvent
} from "@memento/workflow/WorkflowStore"
import { Effect, Option, PubSub, Stream } from "effect"
import {
  claimableStatuses,
  claimOrder,
  commitEvents,
  endedStatuses,
  hasFinishedEntry,
  idleStatuses,
  isEnded,
  makeList,
  makeTransaction,
  runColumnList,
  type Store,
  uniqueAttempts,
  uniqueEntries
} from "./common.js"
import { decodeDetails, decodeRun, decodeRuns, mapSqlError } from "./rows.js"
import type { Tables } from "./tables.js"

/** SQLite's clock in epoch milliseconds (stable within one statement). */
const nowMs = "CAST(unixepoch('subsec') * 1000 AS INTEGER)"

/**
 * The SQLite store: one process, one writer. Statements that must change several tables run in
 * one transaction; the single connection of `@effect/sql-sqlite-node` serialises them. Events go
 * through an in-process `PubSub`, published after the write committed.
 *
 * @internal
 */
export const make = (sql: SqlClient.SqlClient, t: Tables): Effect.Effect<Store> =>
  Effect.gen(function*() {
    const pubsub = yield* PubSub.unbounded<StoreEvent>()
    const publish = (events: ReadonlyArray<StoreEvent>): Effect.Effect<void> =>
      events.length === 0 ? Effect.void : Effect.asVoid(PubSub.publishAll(pubsub, events))
    const runnableChanged = (workflow: string): StoreEvent => ({ _tag: "RunnableChanged", workflow })

    const runs = sql.literal(t.runs)
    const journal = sql.literal(t.journal)
    const attempts = sql.literal(t.attempts)
    const signals = sql.literal(t.signals)
    const now = sql.literal(nowMs)
    const columns = sql.literal(runColumnList())
    const claimable = sql.literal(claimableStatuses)
    const idle = sql.literal(idleStatuses)
    const ended = sql.literal(endedStatuses)

    const selectRun = (runId: string) => sql`SELECT ${columns} FROM ${runs} WHERE id = ${runId}`

    const create = (input: NewRun) =>
      Effect.gen(function*() {
        const inserted = yield* sql`INSERT INTO ${runs}
            (id, workflow, status, payload, runnable_at, parent_id, created_at, updated_at)
          VALUES (${input.id}, ${input.workflow}, 'pending', ${input.payload}, ${now}, ${input.parentId ?? null},
            ${now}, ${now})
          ON CONFLICT (id) DO NOTHING
          RETURNING ${columns}`
        if (inserted.length > 0) {
          const run = yield* decodeRun("create")(inserted[0])
          yield* publish([runnableChanged(run.workflow)])
          return { run, created: true }
        }
        const existing = yield* selectRun(input.id)
        if (existing.length === 0) return yield* Effect.dieMessage(`run "${input.id}" neither inserted nor found`)
        return { run: yield* decodeRun("create")(existing[0]), created: false }
      }).pipe(mapSqlError("create"), Effect.withSpan("SqlStore.create"))

    const decodeClaimed = decodeRuns("claim")
    const claim = (request: ClaimRequest) =>
      request.workflows.length === 0 || request.limit < 1
        ? Effect.succeed([])
        : sql`UPDATE ${runs} SET
              epoch = epoch + 1,
              lease_owner = ${request.workerId},
              lease_expires_at = ${now} + ${request.leaseMs},
              recoveries = CASE WHEN lease_expires_at IS NULL THEN recoveries ELSE recoveries + 1 END,
              status = CASE WHEN status IN (${idle}) THEN 'running' ELSE status END,
              updated_at = ${now}
            WHERE id IN (
              SELECT id FROM ${runs}
              WHERE workflow IN ${sql.in(request.workflows)}
                AND runnable_at IS NOT NULL AND runnable_at <= ${now}
                AND status IN (${claimable})
                AND (lease_expires_at IS NULL OR lease_expires_at <= ${now})
              ORDER BY runnable_at, created_at, id
              LIMIT ${request.limit}
            )
            RETURNING ${columns}`.pipe(
            Effect.flatMap(decodeClaimed),
            Effect.map((claimed) => [...claimed].sort(claimOrder)),
            mapSqlError("claim"),
            Effect.withSpan("SqlStore.claim")
          )

    const heartbeat: Store["heartbeat"] = (request) =>
      request.runs.length === 0
        ? Effect.succeed([])
        : sql<{ readonly id: string }>`WITH held AS (
              SELECT x.value ->> 'id' AS id, x.value ->> 'epoch' AS epoch
              FROM json_each(${JSON.stringify(request.runs)}) x
            )
            UPDATE ${runs} SET lease_expires_at = ${now} + ${request.leaseMs}
            WHERE id IN (SELECT id FROM held)
              AND epoch IN (SELECT held.epoch FROM held WHERE held.id = ${runs}.id)
              AND lease_owner = ${request.workerId} AND lease_expires_at > ${now}
            RETURNING id`.pipe(
            Effect.map((rows) => rows.map((row) => row.id)),
            mapSqlError("heartbeat"),
            Effect.withSpan("SqlStore.heartbeat")
          )

    const release = (runId: string, epoch: number) =>
      sql<{ readonly workflow: string }>`UPDATE ${runs} SET lease_owner = NULL, lease_expires_at = NULL
        WHERE id = ${runId} AND epoch = ${epoch} AND lease_owner IS NOT NULL
        RETURNING workflow`.pipe(
        Effect.flatMap((rows) => publish(rows.map((row) => runnableChanged(row.workflow)))),
        mapSqlError("release"),
        Effect.withSpan("SqlStore.release")
      )

    const json = (columns: ReadonlyArray<readonly [key: string, expression: string]>) =>
      `json_object(${columns.map(([key, expression]) => `'${key}', ${expression}`).join(", ")})`
    const entriesJson = json([
      ["key", "j.key"],
      ["seq", "j.seq"],
      ["kind", "j.kind"],
      ["status", "j.status"],
      ["output", "j.output"],
      ["error", "j.error"],
      ["attempts", "j.attempts"],
      ["meta", "j.meta"],
      ["startedAt", "j.started_at"],
      ["completedAt", "j.completed_at"]
    ])
    const signalsJson = json([
      ["name", "s.name"],
      ["signalId", "s.signal_id"],
      ["payload", "s.payload"],
      ["seq", "s.seq"],
      ["receivedAt", "s.received_at"]
    ])
    const attemptsJson = json([
      ["key", "a.key"],
      ["attempt", "a.attempt"],
      ["outcome", "a.outcome"],
      ["error", "a.error"],
      ["startedAt", "a.started_at"],
      ["endedAt", "a.ended_at"]
    ])
    const snapshotColumns = sql.literal(
      `(SELECT json_group_array(${entriesJson} ORDER BY j.seq, j.key)
          FROM ${t.journal} j WHERE j.run_id = r.id) AS entries,
        (SELECT json_group_array(${signalsJson} ORDER BY s.seq)
          FROM ${t.signals} s WHERE s.run_id = r.id) AS signals`
    )
    const attemptsColumn = sql.literal(
      `(SELECT json_group_array(${attemptsJson} ORDER BY j.seq NULLS LAST, a.key, a.attempt)
          FROM ${t.attempts} a LEFT JOIN ${t.journal} j ON j.run_id = a.run_id AND j.key = a.key
          WHERE a.run_id = r.id) AS attempts`
    )
    const rColumns = sql.literal(runColumnList("r"))

    const details = (operation: string, runId: string, withAttempts: boolean) =>
      sql`SELECT ${rColumns}, ${snapshotColumns}${withAttempts ? sql`, ${attemptsColumn}` : sql``}
        FROM ${runs} r WHERE r.id = ${runId}`.pipe(
        mapSqlError(operation),
        Effect.flatMap((rows): Effect.Effect<RunDetails, RunNotFound | StoreError> =>
          rows.length === 0
            ? Effect.fail(new RunNotFound({ workflowId: runId }))
            : decodeDetails(operation, runId)(rows[0])
        )
      )

    const load: Store["load"] = (runId) =>
      details("load", runId, false).pipe(
        Effect.map(({ entries, run, signals }) => ({ run, entries, signals })),
        Effect.withSpan("SqlStore.load")
      )

    /** The fenced commit's statements; the caller runs them in a transaction. */
    const commitStatements = (
      c: Commit
    ): Effect.Effect<readonly [CommitResult, Effect.Effect<void>], LeaseLost | SqlError> =>
      Effect.gen(function*() {
        const tr = c.transition
        const entries = uniqueEntries(c.entries)
        const attemptRows = uniqueAttempts(c.attempts)
        const sets: Array<Fragment> = [sql`updated_at = ${now}`]
        if (hasFinishedEntry(entries)) sets.push(sql`recoveries = 0`)
        if (tr !== undefined && tr.release) {
          sets.push(sql`lease_owner = NULL, lease_expires_at = NULL`)
        } else {
          sets.push(sql`lease_expires_at = ${now} + ${c.leaseMs}`)
        }
        if (tr !== undefined) {
          sets.push(sql`status = ${tr.status}`)
          sets.push(
            tr.signalSeenSeq === undefined
              ? sql`runnable_at = ${tr.runnableAt}`
              : sql`runnable_at = CASE WHEN last_signal_seq > ${tr.signalSeenSeq} THEN ${now} ELSE ${tr.runnableAt} END`
          )
          if (tr.output !== undefined) sets.push(sql`output = ${tr.output}`)
          if (tr.error !== undefined) sets.push(sql`error = ${tr.error}`)
          sets.push(isEnded(tr.status) ? sql`completed_at = ${now}` : sql`completed_at = NULL`)
        }
        const fenced = yield* sql<
          { readonly cancel_requested: number; readonly workflow: string; readonly runnable_at: number | null }
        >`UPDATE ${runs} SET ${sql.csv(sets)}
          WHERE id = ${c.runId} AND epoch = ${c.epoch} AND lease_owner IS NOT NULL AND lease_expires_at > ${now}
          RETURNING cancel_requested, workflow, runnable_at`
        if (fenced.length === 0) return yield* new LeaseLost({ workflowId: c.runId, epoch: c.epoch })
        if (entries.length > 0) {
          yield* sql`INSERT INTO ${journal}
              (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at)
            SELECT ${c.runId}, x.value ->> 'key', x.value ->> 'seq', x.value ->> 'kind', x.value ->> 'status',
              x.value ->> 'output', x.value ->> 'error', x.value ->> 'attempts', x.value ->> 'meta',
              x.value ->> 'startedAt', x.value ->> 'completedAt'
            FROM json_each(${JSON.stringify(entries)}) x WHERE true
            ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind,
              status = excluded.status, output = excluded.output, error = excluded.error,
              attempts = excluded.attempts, meta = excluded.meta, started_at = excluded.started_at,
              completed_at = excluded.completed_at`
        }
        if (attemptRows.length > 0) {
          yield* sql`INSERT INTO ${attempts} (run_id, key, attempt, outcome, error, started_at, ended_at)
            SELECT ${c.runId}, x.value ->> 'key', x.value ->> 'attempt', x.value ->> 'outcome',
              x.value ->> 'error', x.value ->> 'startedAt', x.value ->> 'endedAt'
            FROM json_each(${JSON.stringify(attemptRows)}) x WHERE true
            ON CONFLICT (run_id, key, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error,
              started_at = excluded.started_at, ended_at = excluded.ended_at`
        }
        const [row] = fenced
        const events = commitEvents(c, { workflow: row.workflow, runnableAt: row.runnable_at })
        return [{ cancelRequested: row.cancel_requested === 1 }, publish(events)] as const
      })

    const commit = (c: Commit) =>
      sql.withTransaction(commitStatements(c)).pipe(
        Effect.flatMap(([result, after]) => Effect.as(after, result)),
        mapSqlError("commit"),
        Effect.withSpan("SqlStore.commit")
      )

    const transaction = makeTransaction(sql, commitStatements)

    const signal: Store["signal"] = ({ name, payload, runId, signalId }) =>
      sql.withTransaction(Effect.gen(function*() {
        const inserted = yield* sql<{ readonly seq: number }>`INSERT INTO ${signals}
            (run_id, name, signal_id, payload, received_at)
          SELECT id, ${name}, ${signalId}, ${payload}, ${now} FROM ${runs} WHERE id = ${runId}
          ON CONFLICT (run_id, signal_id) DO NOTHING
          RETURNING seq`
        if (inserted.length === 0) {
          const found = yield* sql`SELECT 1 AS found FROM ${runs} WHERE id = ${runId}`
          return found.length === 0
            ? yield* new RunNotFound({ workflowId: runId })
            : [{ duplicate: true }, Effect.void] as const
        }
        const [woken] = yield* sql<{ readonly workflow: string; readonly status: string }>`UPDATE ${runs} SET
            last_signal_seq = max(last_signal_seq, ${inserted[0].seq}),
            runnable_at = CASE WHEN status = 'waiting' THEN ${now} ELSE runnable_at END,
            updated_at = CASE WHEN status = 'waiting' THEN ${now} ELSE updated_at END
          WHERE id = ${runId}
          RETURNING workflow, status`
        const events = woken !== undefined && woken.status === "waiting" ? [runnableChanged(woken.workflow)] : []
        return [{ duplicate: false }, publish(events)] as const
      })).pipe(
        Effect.flatMap(([result, after]) => Effect.as(after, result)),
        mapSqlError("signal"),
        Effect.withSpan("SqlStore.signal")
      )

    const existing = (operation: string, runId: string) =>
      selectRun(runId).pipe(
        mapSqlError(operation),
        Effect.flatMap((rows): Effect.Effect<RunRecord, RunNotFound | StoreError> =>
          rows.length === 0 ? Effect.fail(new RunNotFound({ workflowId: runId })) : decodeRun(operation)(rows[0])
        )
      )

    const requestCancel = (runId: string) =>
      Effect.gen(function*() {
        const rows = yield* sql`UPDATE ${runs} SET
            cancel_requested = 1,
            runnable_at = CASE WHEN status IN (${idle}) THEN ${now} ELSE runnable_at END,
            updated_at = ${now}
          WHERE id = ${runId} AND status NOT IN (${ended})
          RETURNING ${columns}`.pipe(mapSqlError("requestCancel"))
        if (rows.length === 0) return yield* existing("requestCancel", runId)
        const run = yield* decodeRun("requestCancel")(rows[0])
        if (run.status === "pending" || run.status === "sleeping" || run.status === "waiting") {
          yield* publish([runnableChanged(run.workflow)])
        }
        return run
      }).pipe(Effect.withSpan("SqlStore.requestCancel"))

    const resume = (runId: string) =>
      Effect.gen(function*() {
        const rows = yield* sql`UPDATE ${runs} SET status = 'pending', runnable_at = ${now}, recoveries = 0,
            lease_owner = NULL, lease_expires_at = NULL, completed_at = NULL, updated_at = ${now}
          WHERE id = ${runId} AND status IN ('needs_attention', 'dead')
          RETURNING ${columns}`.pipe(mapSqlError("resume"))
        if (rows.length === 0) {
          const run = yield* existing("resume", runId)
          return yield* new InvalidRunState({ workflowId: runId, status: run.status, operation: "resume" })
        }
        const run = yield* decodeRun("resume")(rows[0])
        yield* publish([runnableChanged(run.workflow)])
        return run
      }).pipe(Effect.withSpan("SqlStore.resume"))

    const get = (runId: string): Effect.Effect<Option.Option<RunRecord>, StoreError> =>
      selectRun(runId).pipe(
        mapSqlError("get"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(decodeRun("get")(rows[0]), Option.some)
        ),
        Effect.withSpan("SqlStore.get")
      )

    const list = makeList(sql, t)

    const inspect: Store["inspect"] = (runId) => details("inspect", runId, true).pipe(Effect.withSpan("SqlStore.inspect"))

    return {
      create,
      claim,
      heartbeat,
      release,
      load,
      commit,
      transaction,
      signal,
      requestCancel,
      resume,
      get,
      list: (filter) => list(filter).pipe(Effect.withSpan("SqlStore.list")),
      inspect,
      events: Stream.fromPubSub(pubsub)
    }
  })

