import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type { Fragment } from "@effect/sql/Statement"
import * as Tracing from "@memento/workflow/Tracing"
import type { StoreError } from "@memento/workflow/WorkflowError"
import { InvalidRunState, LeaseLost, RunNotFound } from "@memento/workflow/WorkflowError"
import type {
  ClaimRequest,
  Commit,
  CommitResult,
  NewRun,
  RunDetails,
  RunRecord,
  SignalDelivery,
  StoreEvent
} from "@memento/workflow/WorkflowStore"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as PubSub from "effect/PubSub"
import * as Stream from "effect/Stream"
import {
  alertId,
  claimableStatuses,
  claimOrder,
  commitEvents,
  endedStatuses,
  executionLogSql,
  hasFinishedEntry,
  idleStatuses,
  isAlerting,
  isEnded,
  type JsonColumns,
  jsonObjectSql,
  makeList,
  makeTransaction,
  purgeable,
  runColumnList,
  runJson,
  type Store,
  storedRows
} from "./common.js"
import {
  decodeAlerts,
  decodeCounts,
  decodeDetails,
  decodeRun,
  decodeRuns,
  decodeSnapshot,
  mapSqlError
} from "./rows.js"
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
    const journalArchive = sql.literal(t.journalArchive)
    const attemptsArchive = sql.literal(t.attemptsArchive)
    const alerts = sql.literal(t.alerts)
    const schedules = sql.literal(t.schedules)
    const alertColumns = sql.literal("id, run_id, workflow, status, error, created_at, attempts, delivered_at")
    const now = sql.literal(nowMs)
    const columns = sql.literal(runColumnList())
    const claimable = sql.literal(claimableStatuses)
    const idle = sql.literal(idleStatuses)
    const ended = sql.literal(endedStatuses)

    const selectRun = (runId: string) => sql`SELECT ${columns} FROM ${runs} WHERE id = ${runId}`

    const create = (input: NewRun) =>
      Effect.gen(function*() {
        // Inside the caller's transaction the run does not exist for anyone else until it commits:
        // it is never created claimed (a worker could not commit to it), the usual wake-up follows.
        const claim = Option.isSome(yield* Effect.serviceOption(SqlClient.TransactionConnection))
          ? undefined
          : input.claim
        const inserted = yield* sql`INSERT INTO ${runs}
            (id, workflow, status, payload, runnable_at, parent_id, created_at, updated_at, epoch, lease_owner,
              lease_expires_at)
          VALUES (${input.id}, ${input.workflow}, ${claim === undefined ? "pending" : "running"}, ${input.payload},
            ${now}, ${input.parentId ?? null}, ${now}, ${now}, ${claim === undefined ? 0 : 1}, ${
          claim?.workerId ?? null
        },
            ${claim === undefined ? null : sql`${now} + ${claim.leaseMs}`})
          ON CONFLICT (id) DO NOTHING
          RETURNING ${columns}`
        if (inserted.length > 0) {
          const run = yield* decodeRun("create")(inserted[0])
          if (claim === undefined) yield* publish([runnableChanged(run.workflow)])
          return { run, created: true }
        }
        const existing = yield* selectRun(input.id)
        if (existing.length === 0) return yield* Effect.dieMessage(`run "${input.id}" neither inserted nor found`)
        return { run: yield* decodeRun("create")(existing[0]), created: false }
      }).pipe(mapSqlError("create"), Tracing.withSpan("SqlStore.create"))

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
          Tracing.withSpan("SqlStore.claim")
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
          Tracing.withSpan("SqlStore.heartbeat")
        )

    const release = (runId: string, epoch: number) =>
      sql<{ readonly workflow: string }>`UPDATE ${runs} SET lease_owner = NULL, lease_expires_at = NULL
        WHERE id = ${runId} AND epoch = ${epoch} AND lease_owner IS NOT NULL
        RETURNING workflow`.pipe(
        Effect.flatMap((rows) => publish(rows.map((row) => runnableChanged(row.workflow)))),
        mapSqlError("release"),
        Tracing.withSpan("SqlStore.release")
      )

    const json = (columns: JsonColumns) => jsonObjectSql("json_object", columns)
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
    const snapshotColumns = sql.literal(
      `(SELECT json_group_array(${entriesJson} ORDER BY j.seq, j.key)
          FROM ${t.journal} j WHERE j.run_id = r.id) AS entries,
        (SELECT json_group_array(${signalsJson} ORDER BY s.seq)
          FROM ${t.signals} s WHERE s.run_id = r.id) AS signals`
    )
    const archivedEntriesJson = json([
      ["key", "j.key"],
      ["seq", "j.seq"],
      ["kind", "j.kind"],
      ["status", "j.status"],
      ["output", "j.output"],
      ["error", "j.error"],
      ["attempts", "j.attempts"],
      ["meta", "j.meta"],
      ["startedAt", "j.started_at"],
      ["completedAt", "j.completed_at"],
      ["generation", "j.generation"],
      ["archivedAt", "j.archived_at"]
    ])
    // `json(x.o)`: a JSON object read back from the subquery is text to `json_group_array` otherwise
    const executionLog = executionLogSql(t, {
      jsonObject: "json_object",
      aggregate: (value, order) => `json_group_array(json(${value}) ORDER BY ${order})`
    })
    const inspectColumns = sql.literal(
      `${executionLog.attempts} AS attempts,
        (SELECT json_group_array(${archivedEntriesJson} ORDER BY j.generation, j.seq, j.key)
          FROM ${t.journalArchive} j WHERE j.run_id = r.id) AS archived_entries,
        ${executionLog.archivedAttempts} AS archived_attempts,
        (SELECT json_group_array(${runJson("json_object", "c")} ORDER BY c.created_at, c.id)
          FROM ${t.runs} c WHERE c.parent_id = r.id) AS children`
    )
    const rColumns = sql.literal(runColumnList("r"))

    const details = <E>(
      operation: string,
      runId: string,
      withAttempts: boolean,
      decode: (row: unknown) => Effect.Effect<RunDetails, E>
    ) =>
      sql`SELECT ${rColumns}, ${snapshotColumns}${withAttempts ? sql`, ${inspectColumns}` : sql``}
        FROM ${runs} r WHERE r.id = ${runId}`.pipe(
        mapSqlError(operation),
        Effect.flatMap((rows): Effect.Effect<RunDetails, RunNotFound | E> =>
          rows.length === 0 ? Effect.fail(new RunNotFound({ workflowId: runId })) : decode(rows[0])
        )
      )

    const load: Store["load"] = (runId) =>
      details("load", runId, false, decodeSnapshot(runId)).pipe(
        Effect.map(({ entries, run, signals }) => ({ run, entries, signals })),
        Tracing.withSpan("SqlStore.load")
      )

    /**
     * Stores a signal unless its ID was seen and wakes its run if it waits; the caller runs it in a
     * transaction. `inserted` is false for a duplicate and for a run that does not exist.
     */
    const deliver = (delivery: SignalDelivery) =>
      Effect.gen(function*() {
        const inserted = yield* sql<{ readonly seq: number }>`INSERT INTO ${signals}
            (run_id, name, signal_id, payload, received_at)
          SELECT id, ${delivery.name}, ${delivery.signalId}, ${delivery.payload}, ${now} FROM ${runs}
          WHERE id = ${delivery.runId}
          ON CONFLICT (run_id, signal_id) DO NOTHING
          RETURNING seq`
        if (inserted.length === 0) return { inserted: false, events: [] as ReadonlyArray<StoreEvent> }
        const [woken] = yield* sql<{ readonly workflow: string; readonly status: string }>`UPDATE ${runs} SET
            last_signal_seq = max(last_signal_seq, ${inserted[0].seq}),
            runnable_at = CASE WHEN status = 'waiting' THEN ${now} ELSE runnable_at END,
            updated_at = CASE WHEN status = 'waiting' THEN ${now} ELSE updated_at END
          WHERE id = ${delivery.runId}
          RETURNING workflow, status`
        const events: ReadonlyArray<StoreEvent> = woken !== undefined && woken.status === "waiting"
          ? [runnableChanged(woken.workflow)]
          : []
        return { inserted: true, events }
      })

    /** The fenced commit's statements; the caller runs them in a transaction. */
    const commitStatements = (
      c: Commit
    ): Effect.Effect<readonly [CommitResult, Effect.Effect<void>], LeaseLost | SqlError> =>
      Effect.gen(function*() {
        const tr = c.transition
        const { attempts: attemptRows, entries } = storedRows(c.entries, c.attempts)
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
        if (c.create !== undefined) {
          // A run not stored yet: created claimed at epoch 1, then the fenced update below applies to it.
          const created = c.epoch !== 1 ? [] : yield* sql`INSERT INTO ${runs}
              (id, workflow, status, payload, runnable_at, created_at, updated_at, epoch, lease_owner, lease_expires_at)
            VALUES (${c.runId}, ${c.create.workflow}, 'running', ${c.create.payload}, ${now}, ${now}, ${now}, 1,
              ${c.create.workerId}, ${now} + ${c.leaseMs})
            ON CONFLICT (id) DO NOTHING
            RETURNING id`
          if (created.length === 0) return yield* new LeaseLost({ workflowId: c.runId, epoch: c.epoch })
        }
        const fenced = yield* sql<
          {
            readonly cancel_requested: number
            readonly workflow: string
            readonly runnable_at: number | null
            readonly epoch: number
            readonly error: string | null
          }
        >`UPDATE ${runs} SET ${sql.csv(sets)}
          WHERE id = ${c.runId} AND epoch = ${c.epoch} AND lease_owner IS NOT NULL AND lease_expires_at > ${now}
          RETURNING cancel_requested, workflow, runnable_at, epoch, error`
        if (fenced.length === 0) return yield* new LeaseLost({ workflowId: c.runId, epoch: c.epoch })
        if (entries.length > 0) {
          yield* sql`INSERT INTO ${journal}
              (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at, implied_attempt)
            SELECT ${c.runId}, x.value ->> 'key', x.value ->> 'seq', x.value ->> 'kind', x.value ->> 'status',
              x.value ->> 'output', x.value ->> 'error', x.value ->> 'attempts', x.value ->> 'meta',
              x.value ->> 'startedAt', x.value ->> 'completedAt', x.value ->> 'impliedAttempt'
            FROM json_each(${JSON.stringify(entries)}) x WHERE true
            ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind,
              status = excluded.status, output = excluded.output, error = excluded.error,
              attempts = excluded.attempts, meta = excluded.meta, started_at = excluded.started_at,
              completed_at = excluded.completed_at,
              implied_attempt = coalesce(excluded.implied_attempt, ${journal}.implied_attempt)`
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
        if (tr !== undefined && isAlerting(tr.status)) {
          yield* sql`INSERT INTO ${alerts} (id, run_id, workflow, status, error, created_at)
            VALUES (${alertId(c.runId, row.epoch, tr.status)}, ${c.runId}, ${row.workflow}, ${tr.status}, ${row.error},
              ${now})
            ON CONFLICT (id) DO NOTHING`
        }
        const delivered = tr?.signal === undefined ? [] : (yield* deliver(tr.signal)).events
        const events = [...commitEvents(c, { workflow: row.workflow, runnableAt: row.runnable_at }), ...delivered]
        return [{ cancelRequested: row.cancel_requested === 1 }, publish(events)] as const
      })

    const commit = (c: Commit) =>
      sql.withTransaction(commitStatements(c)).pipe(
        Effect.flatMap(([result, after]) => Effect.as(after, result)),
        mapSqlError("commit"),
        Tracing.withSpan("SqlStore.commit")
      )

    const transaction = makeTransaction(sql, commitStatements)

    const signal: Store["signal"] = ({ name, payload, runId, signalId }) =>
      sql.withTransaction(Effect.gen(function*() {
        const { events, inserted } = yield* deliver({ runId, name, signalId, payload })
        if (!inserted) {
          const found = yield* sql`SELECT 1 AS found FROM ${runs} WHERE id = ${runId}`
          return found.length === 0
            ? yield* new RunNotFound({ workflowId: runId })
            : [{ duplicate: true }, Effect.void] as const
        }
        return [{ duplicate: false }, publish(events)] as const
      })).pipe(
        Effect.flatMap(([result, after]) => Effect.as(after, result)),
        mapSqlError("signal"),
        Tracing.withSpan("SqlStore.signal")
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
      }).pipe(Tracing.withSpan("SqlStore.requestCancel"))

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
      }).pipe(Tracing.withSpan("SqlStore.resume"))

    const get = (runId: string): Effect.Effect<Option.Option<RunRecord>, StoreError> =>
      selectRun(runId).pipe(
        mapSqlError("get"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(decodeRun("get")(rows[0]), Option.some)
        ),
        Tracing.withSpan("SqlStore.get")
      )

    const list = makeList(sql, t)

    const inspect: Store["inspect"] = (runId) =>
      details("inspect", runId, true, decodeDetails("inspect", runId)).pipe(
        Tracing.withSpan("SqlStore.inspect")
      )

    const retry: Store["retry"] = ({ archiveKeys, from, runId }) =>
      sql.withTransaction(Effect.gen(function*() {
        const rows = from.length === 0 ? [] : yield* sql`UPDATE ${runs} SET status = 'pending', runnable_at = ${now},
            output = NULL, error = NULL, completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
            cancel_requested = 0, recoveries = 0, updated_at = ${now}
          WHERE id = ${runId} AND status IN ${sql.in(from)}
          RETURNING ${columns}`
        if (rows.length === 0) {
          const run = yield* existing("retry", runId)
          return yield* new InvalidRunState({ workflowId: runId, status: run.status, operation: "retry" })
        }
        const run = yield* decodeRun("retry")(rows[0])
        if (archiveKeys.length > 0) {
          const keys = JSON.stringify(archiveKeys)
          const [{ generation }] = yield* sql<{ readonly generation: number }>`SELECT max(
              coalesce((SELECT max(generation) FROM ${journalArchive} WHERE run_id = ${runId}), 0),
              coalesce((SELECT max(generation) FROM ${attemptsArchive} WHERE run_id = ${runId}), 0)
            ) + 1 AS generation`
          yield* sql`INSERT INTO ${journalArchive} (run_id, generation, key, seq, kind, status, output, error,
              attempts, meta, started_at, completed_at, implied_attempt, archived_at)
            SELECT run_id, ${generation}, key, seq, kind, status, output, error, attempts, meta, started_at,
              completed_at, implied_attempt, ${now}
            FROM ${journal} WHERE run_id = ${runId} AND key IN (SELECT value FROM json_each(${keys}))`
          yield* sql`DELETE FROM ${journal} WHERE run_id = ${runId} AND key IN (SELECT value FROM json_each(${keys}))`
          yield* sql`INSERT INTO ${attemptsArchive} (run_id, generation, key, attempt, outcome, error, started_at,
              ended_at)
            SELECT run_id, ${generation}, key, attempt, outcome, error, started_at, ended_at
            FROM ${attempts} WHERE run_id = ${runId} AND key IN (SELECT value FROM json_each(${keys}))`
          yield* sql`DELETE FROM ${attempts} WHERE run_id = ${runId} AND key IN (SELECT value FROM json_each(${keys}))`
        }
        return [run, publish([runnableChanged(run.workflow)])] as const
      })).pipe(
        Effect.flatMap(([run, after]) => Effect.as(after, run)),
        mapSqlError("retry"),
        Tracing.withSpan("SqlStore.retry")
      )

    const purge: Store["purge"] = ({ completedBefore, limit, statuses }) => {
      const deletable = purgeable(statuses)
      const max = Math.floor(limit)
      if (deletable.length === 0 || !(max >= 1)) return Effect.succeed(0)
      return sql.withTransaction(Effect.gen(function*() {
        const victims = yield* sql<{ readonly id: string }>`SELECT id FROM ${runs}
          WHERE status IN ${sql.in(deletable)} AND completed_at < ${completedBefore}
          LIMIT ${max}`
        if (victims.length === 0) return 0
        const ids = JSON.stringify(victims.map((victim) => victim.id))
        // Explicit deletes: the cascades need `PRAGMA foreign_keys`, which a caller's client may lack.
        for (const table of [journal, attempts, signals, journalArchive, attemptsArchive, alerts]) {
          yield* sql`DELETE FROM ${table} WHERE run_id IN (SELECT value FROM json_each(${ids}))`
        }
        yield* sql`DELETE FROM ${runs} WHERE id IN (SELECT value FROM json_each(${ids}))`
        return victims.length
      })).pipe(mapSqlError("purge"), Tracing.withSpan("SqlStore.purge"))
    }

    const stats: Store["stats"] = sql`SELECT workflow, status, count(*) AS count FROM ${runs}
      GROUP BY workflow, status`.pipe(
      Effect.flatMap(decodeCounts),
      mapSqlError("stats"),
      Tracing.withSpan("SqlStore.stats")
    )

    const decodeClaimedAlerts = decodeAlerts("claimAlerts")
    const claimAlerts: Store["claimAlerts"] = ({ leaseMs, limit }) =>
      Math.floor(limit) < 1 ? Effect.succeed([]) : sql`UPDATE ${alerts} SET
          lease_expires_at = ${now} + ${leaseMs}, attempts = attempts + 1
        WHERE id IN (
          SELECT id FROM ${alerts}
          WHERE delivered_at IS NULL AND (lease_expires_at IS NULL OR lease_expires_at <= ${now})
          ORDER BY created_at, id
          LIMIT ${Math.floor(limit)}
        )
        RETURNING ${alertColumns}`.pipe(
        Effect.flatMap(decodeClaimedAlerts),
        mapSqlError("claimAlerts"),
        Tracing.withSpan("SqlStore.claimAlerts")
      )

    const completeAlert: Store["completeAlert"] = (id) =>
      sql`UPDATE ${alerts} SET delivered_at = ${now}, lease_expires_at = NULL
        WHERE id = ${id} AND delivered_at IS NULL`.pipe(
        Effect.asVoid,
        mapSqlError("completeAlert"),
        Tracing.withSpan("SqlStore.completeAlert")
      )

    const decodeRunAlerts = decodeAlerts("alerts")
    const alertsOf: Store["alerts"] = (runId) =>
      sql`SELECT ${alertColumns} FROM ${alerts} WHERE run_id = ${runId} ORDER BY created_at, id`.pipe(
        Effect.flatMap(decodeRunAlerts),
        mapSqlError("alerts"),
        Tracing.withSpan("SqlStore.alerts")
      )

    const scheduleCursor: Store["scheduleCursor"] = (name) =>
      sql<{ readonly last_tick: number }>`SELECT last_tick FROM ${schedules} WHERE name = ${name}`.pipe(
        Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(Number(rows[0].last_tick))),
        mapSqlError("scheduleCursor"),
        Tracing.withSpan("SqlStore.scheduleCursor")
      )

    const advanceSchedule: Store["advanceSchedule"] = (name, tick) =>
      sql`INSERT INTO ${schedules} (name, last_tick, updated_at) VALUES (${name}, ${tick}, ${now})
        ON CONFLICT (name) DO UPDATE SET last_tick = max(last_tick, excluded.last_tick),
          updated_at = excluded.updated_at`.pipe(
        Effect.asVoid,
        mapSqlError("advanceSchedule"),
        Tracing.withSpan("SqlStore.advanceSchedule")
      )

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
      list: (filter) => list(filter).pipe(Tracing.withSpan("SqlStore.list")),
      inspect,
      retry,
      purge,
      stats,
      claimAlerts,
      completeAlert,
      alerts: alertsOf,
      scheduleCursor,
      advanceSchedule,
      events: Stream.fromPubSub(pubsub)
    }
  })
