import type * as SqlClient from "@effect/sql/SqlClient"
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
import { Effect, Option } from "effect"
import type { Stream } from "effect"
import {
  claimableStatuses,
  claimOrder,
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

/** The database clock in epoch milliseconds. */
const nowMs = "(floor(extract(epoch from clock_timestamp()) * 1000))::bigint"

/**
 * The Postgres store. Every operation is one statement on the happy path; notifications are sent
 * with `pg_notify` inside the statement that changes the run, so they cost no round trip and are
 * delivered only if it commits.
 *
 * @internal
 */
export const make = (sql: SqlClient.SqlClient, t: Tables, events: Stream.Stream<StoreEvent>): Store => {
  const runs = sql.literal(t.runs)
  const journal = sql.literal(t.journal)
  const attempts = sql.literal(t.attempts)
  const signals = sql.literal(t.signals)
  const now = sql.literal(nowMs)
  const columns = sql.literal(runColumnList())
  const rColumns = sql.literal(runColumnList("r"))
  const claimable = sql.literal(claimableStatuses)
  const idle = sql.literal(idleStatuses)
  const ended = sql.literal(endedStatuses)

  /** `pg_notify` of a JSON event; skipped (NULL) for payloads over Postgres' 8000-byte limit. */
  const notify = (json: string): Fragment =>
    sql.literal(
      `(CASE WHEN octet_length((${json})::text) < 7900 THEN pg_notify('${t.channel}', (${json})::text) END)`
    )
  const runnableChanged = (workflow: string) =>
    notify(`json_build_object('_tag', 'RunnableChanged', 'workflow', ${workflow})`)
  const runFinished = (runId: string) => notify(`json_build_object('_tag', 'RunFinished', 'runId', ${runId})`)

  const selectRun = (runId: string) => sql`SELECT ${columns} FROM ${runs} WHERE id = ${runId}::text`

  const create = (input: NewRun) =>
    Effect.gen(function*() {
      const inserted = yield* sql`WITH clock AS (SELECT ${now} AS now),
        ins AS (
          INSERT INTO ${runs} (id, workflow, status, payload, runnable_at, parent_id, created_at, updated_at)
          SELECT ${input.id}::text, ${input.workflow}::text, 'pending', ${input.payload}::text, clock.now,
            ${input.parentId ?? null}::text, clock.now, clock.now
          FROM clock
          ON CONFLICT (id) DO NOTHING
          RETURNING ${columns}
        )
        SELECT ins.*, ${runnableChanged("ins.workflow")} AS notified FROM ins`
      if (inserted.length > 0) return { run: yield* decodeRun("create")(inserted[0]), created: true }
      const existing = yield* selectRun(input.id)
      if (existing.length === 0) return yield* Effect.dieMessage(`run "${input.id}" neither inserted nor found`)
      return { run: yield* decodeRun("create")(existing[0]), created: false }
    }).pipe(mapSqlError("create"), Effect.withSpan("SqlStore.create"))

  const decodeClaimed = decodeRuns("claim")
  const claim = (request: ClaimRequest) =>
    request.workflows.length === 0 || request.limit < 1
      ? Effect.succeed([])
      : sql`WITH clock AS (SELECT ${now} AS now),
          c AS (
            SELECT r.id FROM ${runs} r, clock
            WHERE r.workflow IN ${sql.in(request.workflows)}
              AND r.runnable_at IS NOT NULL AND r.runnable_at <= clock.now
              AND r.status IN (${claimable})
              AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= clock.now)
            ORDER BY r.runnable_at, r.created_at, r.id
            LIMIT ${request.limit}::bigint
            FOR UPDATE OF r SKIP LOCKED
          )
          UPDATE ${runs} r SET
            epoch = r.epoch + 1,
            lease_owner = ${request.workerId}::text,
            lease_expires_at = clock.now + ${request.leaseMs}::bigint,
            recoveries = CASE WHEN r.lease_expires_at IS NULL THEN r.recoveries ELSE r.recoveries + 1 END,
            status = CASE WHEN r.status IN (${idle}) THEN 'running' ELSE r.status END,
            updated_at = clock.now
          FROM c, clock
          WHERE r.id = c.id
          RETURNING ${rColumns}`.pipe(
          Effect.flatMap(decodeClaimed),
          Effect.map((claimed) => [...claimed].sort(claimOrder)),
          mapSqlError("claim"),
          Effect.withSpan("SqlStore.claim")
        )

  const heartbeat: Store["heartbeat"] = (request) =>
    request.runs.length === 0
      ? Effect.succeed([])
      : sql<{ readonly id: string }>`WITH clock AS (SELECT ${now} AS now)
          UPDATE ${runs} r SET lease_expires_at = clock.now + ${request.leaseMs}::bigint
          FROM clock, json_to_recordset(${JSON.stringify(request.runs)}::json) AS x(id text, epoch bigint)
          WHERE r.id = x.id AND r.epoch = x.epoch AND r.lease_owner = ${request.workerId}::text
            AND r.lease_expires_at > clock.now
          RETURNING r.id`.pipe(
          Effect.map((rows) => rows.map((row) => row.id)),
          mapSqlError("heartbeat"),
          Effect.withSpan("SqlStore.heartbeat")
        )

  const release = (runId: string, epoch: number) =>
    sql`WITH u AS (
        UPDATE ${runs} SET lease_owner = NULL, lease_expires_at = NULL
        WHERE id = ${runId}::text AND epoch = ${epoch}::bigint AND lease_owner IS NOT NULL
        RETURNING workflow
      )
      SELECT ${runnableChanged("u.workflow")} AS notified FROM u`.pipe(
      Effect.asVoid,
      mapSqlError("release"),
      Effect.withSpan("SqlStore.release")
    )

  const json = (columns: ReadonlyArray<readonly [key: string, expression: string]>) =>
    `json_build_object(${columns.map(([key, expression]) => `'${key}', ${expression}`).join(", ")})`
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
    `(SELECT coalesce(json_agg(${entriesJson} ORDER BY j.seq, j.key), '[]'::json)
        FROM ${t.journal} j WHERE j.run_id = r.id) AS entries,
      (SELECT coalesce(json_agg(${signalsJson} ORDER BY s.seq), '[]'::json)
        FROM ${t.signals} s WHERE s.run_id = r.id) AS signals`
  )
  const attemptsColumn = sql.literal(
    `(SELECT coalesce(json_agg(${attemptsJson} ORDER BY j.seq NULLS LAST, a.key, a.attempt), '[]'::json)
        FROM ${t.attempts} a LEFT JOIN ${t.journal} j ON j.run_id = a.run_id AND j.key = a.key
        WHERE a.run_id = r.id) AS attempts`
  )

  /** The run with its journal and signals (and attempts), in one query. */
  const details = (operation: string, runId: string, withAttempts: boolean) =>
    sql`SELECT ${rColumns}, ${snapshotColumns}${withAttempts ? sql`, ${attemptsColumn}` : sql``}
      FROM ${runs} r WHERE r.id = ${runId}::text`.pipe(
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

  /**
   * The fenced commit: one statement. The `fence` CTE updates the run only if the epoch and a live
   * lease still hold; the journal and attempt upserts read from `fence`, so they write nothing when
   * it matched nothing, and zero rows back mean `LeaseLost`.
   */
  const commitStatement = (c: Commit) => {
    const tr = c.transition
    const entries = uniqueEntries(c.entries)
    const attemptRows = uniqueAttempts(c.attempts)
    const sets: Array<Fragment> = [sql`updated_at = clock.now`]
    if (hasFinishedEntry(entries)) sets.push(sql`recoveries = 0`)
    if (tr !== undefined && tr.release) {
      sets.push(sql`lease_owner = NULL, lease_expires_at = NULL`)
    } else {
      sets.push(sql`lease_expires_at = clock.now + ${c.leaseMs}::bigint`)
    }
    if (tr !== undefined) {
      sets.push(sql`status = ${tr.status}::text`)
      sets.push(
        tr.signalSeenSeq === undefined
          ? sql`runnable_at = ${tr.runnableAt}::bigint`
          : sql`runnable_at = CASE WHEN r.last_signal_seq > ${tr.signalSeenSeq}::bigint THEN clock.now
              ELSE ${tr.runnableAt}::bigint END`
      )
      if (tr.output !== undefined) sets.push(sql`output = ${tr.output}::text`)
      if (tr.error !== undefined) sets.push(sql`error = ${tr.error}::text`)
      sets.push(isEnded(tr.status) ? sql`completed_at = clock.now` : sql`completed_at = NULL`)
    }
    const notifications: Array<Fragment> = []
    if (tr !== undefined && isEnded(tr.status)) notifications.push(sql`${runFinished("f.id")} AS finished`)
    if (tr !== undefined && tr.release) {
      notifications.push(
        sql`(CASE WHEN f.runnable_at IS NOT NULL THEN ${runnableChanged("f.workflow")} END) AS runnable`
      )
    }
    const entriesCte = entries.length === 0 ? sql`` : sql`, e AS (
        INSERT INTO ${journal} (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at)
        SELECT ${c.runId}::text, x.key, x.seq, x.kind, x.status, x.output, x.error, x.attempts, x.meta,
          x."startedAt", x."completedAt"
        FROM json_to_recordset(${JSON.stringify(entries)}::json) AS x(key text, seq integer, kind text,
          status text, output text, error text, attempts integer, meta text, "startedAt" bigint, "completedAt" bigint)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, status = excluded.status,
          output = excluded.output, error = excluded.error, attempts = excluded.attempts, meta = excluded.meta,
          started_at = excluded.started_at, completed_at = excluded.completed_at
      )`
    const attemptsCte = attemptRows.length === 0 ? sql`` : sql`, a AS (
        INSERT INTO ${attempts} (run_id, key, attempt, outcome, error, started_at, ended_at)
        SELECT ${c.runId}::text, x.key, x.attempt, x.outcome, x.error, x."startedAt", x."endedAt"
        FROM json_to_recordset(${JSON.stringify(attemptRows)}::json) AS x(key text, attempt integer, outcome text,
          error text, "startedAt" bigint, "endedAt" bigint)
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (run_id, key, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error,
          started_at = excluded.started_at, ended_at = excluded.ended_at
      )`
    return sql<{ readonly cancel_requested: boolean }>`WITH clock AS (SELECT ${now} AS now),
      fence AS (
        UPDATE ${runs} r SET ${sql.csv(sets)}
        FROM clock
        WHERE r.id = ${c.runId}::text AND r.epoch = ${c.epoch}::bigint
          AND r.lease_owner IS NOT NULL AND r.lease_expires_at > clock.now
        RETURNING r.id, r.workflow, r.runnable_at, r.cancel_requested
      )${entriesCte}${attemptsCte}
      SELECT f.cancel_requested${notifications.length === 0 ? sql`` : sql`, ${sql.csv(notifications)}`}
      FROM fence f`.pipe(
      Effect.flatMap((rows): Effect.Effect<CommitResult, LeaseLost> =>
        rows.length === 0
          ? Effect.fail(new LeaseLost({ workflowId: c.runId, epoch: c.epoch }))
          : Effect.succeed({ cancelRequested: rows[0].cancel_requested === true })
      )
    )
  }

  const commit = (c: Commit) => commitStatement(c).pipe(mapSqlError("commit"), Effect.withSpan("SqlStore.commit"))

  const transaction = makeTransaction(
    sql,
    (c) => Effect.map(commitStatement(c), (result) => [result, Effect.void] as const)
  )

  const signal: Store["signal"] = ({ name, payload, runId, signalId }) =>
    sql<{ readonly found: number; readonly inserted: number }>`WITH clock AS (SELECT ${now} AS now),
      target AS (SELECT id FROM ${runs} WHERE id = ${runId}::text),
      ins AS (
        INSERT INTO ${signals} (run_id, name, signal_id, payload, received_at)
        SELECT target.id, ${name}::text, ${signalId}::text, ${payload}::text, clock.now FROM target, clock
        ON CONFLICT (run_id, signal_id) DO NOTHING
        RETURNING seq, run_id
      ),
      u AS (
        UPDATE ${runs} r SET
          last_signal_seq = GREATEST(r.last_signal_seq, ins.seq),
          runnable_at = CASE WHEN r.status = 'waiting' THEN clock.now ELSE r.runnable_at END,
          updated_at = CASE WHEN r.status = 'waiting' THEN clock.now ELSE r.updated_at END
        FROM ins, clock
        WHERE r.id = ins.run_id
        RETURNING r.workflow, r.status
      )
      SELECT (SELECT count(*) FROM target)::int AS found, (SELECT count(*) FROM ins)::int AS inserted,
        (SELECT count(${runnableChanged("u.workflow")}) FROM u WHERE u.status = 'waiting')::int AS woken`.pipe(
      mapSqlError("signal"),
      Effect.flatMap(([row]) =>
        row === undefined || row.found === 0
          ? Effect.fail(new RunNotFound({ workflowId: runId }))
          : Effect.succeed({ duplicate: row.inserted === 0 })
      ),
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
    sql`WITH clock AS (SELECT ${now} AS now),
      u AS (
        UPDATE ${runs} r SET
          cancel_requested = true,
          runnable_at = CASE WHEN r.status IN (${idle}) THEN clock.now ELSE r.runnable_at END,
          updated_at = clock.now
        FROM clock
        WHERE r.id = ${runId}::text AND r.status NOT IN (${ended})
        RETURNING ${rColumns}
      )
      SELECT u.*, (CASE WHEN u.status IN (${idle}) THEN ${runnableChanged("u.workflow")} END) AS notified FROM u`
      .pipe(
        mapSqlError("requestCancel"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? existing("requestCancel", runId) : decodeRun("requestCancel")(rows[0])
        ),
        Effect.withSpan("SqlStore.requestCancel")
      )

  const resume = (runId: string) =>
    sql`WITH clock AS (SELECT ${now} AS now),
      u AS (
        UPDATE ${runs} r SET status = 'pending', runnable_at = clock.now, recoveries = 0, lease_owner = NULL,
          lease_expires_at = NULL, completed_at = NULL, updated_at = clock.now
        FROM clock
        WHERE r.id = ${runId}::text AND r.status IN ('needs_attention', 'dead')
        RETURNING ${rColumns}
      )
      SELECT u.*, ${runnableChanged("u.workflow")} AS notified FROM u`.pipe(
      mapSqlError("resume"),
      Effect.flatMap((rows): Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError> =>
        rows.length > 0
          ? decodeRun("resume")(rows[0])
          : Effect.flatMap(existing("resume", runId), (run) =>
            Effect.fail(new InvalidRunState({ workflowId: runId, status: run.status, operation: "resume" })))
      ),
      Effect.withSpan("SqlStore.resume")
    )

  const get = (runId: string) =>
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
    events
  }
}

