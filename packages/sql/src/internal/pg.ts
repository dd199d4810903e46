import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
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
import { Effect, Exit, Option } from "effect"
import type { Scope, Stream } from "effect"
import * as Batcher from "./batcher.js"
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
import { makePrepared } from "./prepared.js"
import { decodeDetails, decodeRun, decodeRuns, mapSqlError } from "./rows.js"
import type { Tables } from "./tables.js"

/** The database clock in epoch milliseconds. */
const nowMs = "(floor(extract(epoch from clock_timestamp()) * 1000))::bigint"

/** Batches (of commits, creates, gets) executing at once; requests arriving meanwhile form the next. */
const batchSlots = 2
const maxBatch = 200

/** One commit as a row of the batch statement's input (see `commitText`). */
const commitRow = (c: Commit, i: number) => {
  const tr = c.transition
  const entries = uniqueEntries(c.entries)
  return {
    i,
    run_id: c.runId,
    epoch: c.epoch,
    lease_ms: c.leaseMs,
    reset: hasFinishedEntry(entries),
    tr: tr !== undefined,
    release: tr?.release === true,
    status: tr?.status ?? null,
    runnable_at: tr?.runnableAt ?? null,
    seen: tr?.signalSeenSeq ?? null,
    set_output: tr?.output !== undefined,
    output: tr?.output ?? null,
    set_error: tr?.error !== undefined,
    error: tr?.error ?? null,
    ended: tr !== undefined && isEnded(tr.status),
    entries,
    attempts: uniqueAttempts(c.attempts)
  }
}

interface CommitOutcome {
  readonly i: number
  readonly ok: boolean
  readonly cancel_requested: boolean | null
}

/**
 * The Postgres store. Every operation is one statement on the happy path; notifications are sent
 * with `pg_notify` inside the statement that changes the run, so they cost no round trip and are
 * delivered only if it commits.
 *
 * The hot statements have fixed texts run as named prepared statements (`prepared.ts`). Commits,
 * creates and `get`s of concurrent callers are applied by one statement per batch (`batcher.ts`,
 * no waiting window: an idle store sends each at once); each commit in a batch stays fenced on its
 * own run, so a lost lease fails only that run's commit.
 *
 * @internal
 */
export const make = (
  sql: SqlClient.SqlClient,
  t: Tables,
  events: Stream.Stream<StoreEvent>,
  options: { readonly prepare: boolean }
): Effect.Effect<Store, never, Scope.Scope> =>
  Effect.gen(function*() {
    const prepared = makePrepared(sql, options.prepare)
    const runs = sql.literal(t.runs)
    const now = sql.literal(nowMs)
    const columns = runColumnList()
    const rColumns = runColumnList("r")
    const claimable = claimableStatuses
    const idle = sql.literal(idleStatuses)
    const ended = sql.literal(endedStatuses)

    /** `pg_notify` of a JSON event; skipped (NULL) for payloads over Postgres' 8000-byte limit. */
    const notify = (json: string): string =>
      `(CASE WHEN octet_length((${json})::text) < 7900 THEN pg_notify('${t.channel}', (${json})::text) END)`
    const runnableChanged = (workflow: string) =>
      notify(`json_build_object('_tag', 'RunnableChanged', 'workflow', ${workflow})`)
    const runFinished = (runId: string) => notify(`json_build_object('_tag', 'RunFinished', 'runId', ${runId})`)

    const selectRunText = `SELECT ${columns} FROM ${t.runs} WHERE id = $1::text`
    const selectRun = (runId: string) => prepared(selectRunText, [runId])

    /**
     * Creates of concurrent callers share one statement (in ID order, so that concurrent batches
     * creating the same IDs take their locks in one order). A run that already existed is not
     * returned by the insert and is read by a second statement, as for a single create.
     */
    const createText = `WITH clock AS (SELECT ${nowMs} AS now),
      ins AS (
        INSERT INTO ${t.runs} (id, workflow, status, payload, runnable_at, parent_id, created_at, updated_at)
        SELECT x.id, x.workflow, 'pending', x.payload, clock.now, x.parent_id, clock.now, clock.now
        FROM json_to_recordset($1::json) AS x(id text, workflow text, payload text, parent_id text), clock
        ON CONFLICT (id) DO NOTHING
        RETURNING ${columns}
      )
      SELECT ins.*, ${runnableChanged("ins.workflow")} AS notified FROM ins`
    const insertRuns = yield* Batcher.make<NewRun, ReadonlyArray<unknown>, never, SqlError>({
      key: (input) => input.id,
      maxInFlight: batchSlots,
      maxBatch,
      run: (inputs) => {
        const rows = inputs
          .map((input) => ({
            id: input.id,
            workflow: input.workflow,
            payload: input.payload,
            parent_id: input.parentId ?? null
          }))
          .sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
        return Effect.map(prepared<{ readonly id: string }>(createText, [JSON.stringify(rows)]), (inserted) => {
          const byId = new Map(inserted.map((row) => [row.id, row]))
          return inputs.map((input) => {
            const row = byId.get(input.id)
            return Exit.succeed(row === undefined ? [] : [row])
          })
        })
      }
    })
    const create = (input: NewRun) =>
      Effect.gen(function*() {
        const inserted = yield* insertRuns(input)
        if (inserted.length > 0) return { run: yield* decodeRun("create")(inserted[0]), created: true }
        const existing = yield* selectRun(input.id)
        if (existing.length === 0) return yield* Effect.dieMessage(`run "${input.id}" neither inserted nor found`)
        return { run: yield* decodeRun("create")(existing[0]), created: false }
      }).pipe(mapSqlError("create"), Effect.withSpan("SqlStore.create", { captureStackTrace: false }))

    const claimText = `WITH clock AS (SELECT ${nowMs} AS now),
      c AS (
        SELECT r.id FROM ${t.runs} r, clock
        WHERE r.workflow = ANY($1::text[])
          AND r.runnable_at IS NOT NULL AND r.runnable_at <= clock.now
          AND r.status IN (${claimable})
          AND (r.lease_expires_at IS NULL OR r.lease_expires_at <= clock.now)
        ORDER BY r.runnable_at, r.created_at, r.id
        LIMIT $2::bigint
        FOR UPDATE OF r SKIP LOCKED
      )
      UPDATE ${t.runs} r SET
        epoch = r.epoch + 1,
        lease_owner = $3::text,
        lease_expires_at = clock.now + $4::bigint,
        recoveries = CASE WHEN r.lease_expires_at IS NULL THEN r.recoveries ELSE r.recoveries + 1 END,
        status = CASE WHEN r.status IN (${idleStatuses}) THEN 'running' ELSE r.status END,
        updated_at = clock.now
      FROM c, clock
      WHERE r.id = c.id
      RETURNING ${rColumns}`
    const decodeClaimed = decodeRuns("claim")
    const claim = (request: ClaimRequest) =>
      request.workflows.length === 0 || request.limit < 1
        ? Effect.succeed([])
        : prepared(claimText, [request.workflows, request.limit, request.workerId, request.leaseMs]).pipe(
          Effect.flatMap(decodeClaimed),
          Effect.map((claimed) => [...claimed].sort(claimOrder)),
          mapSqlError("claim"),
          Effect.withSpan("SqlStore.claim", { captureStackTrace: false })
        )

    const heartbeatText = `WITH clock AS (SELECT ${nowMs} AS now)
      UPDATE ${t.runs} r SET lease_expires_at = clock.now + $3::bigint
      FROM clock, unnest($1::text[], $4::bigint[]) AS x(id, epoch)
      WHERE r.id = ANY($1::text[]) AND r.id = x.id AND r.epoch = x.epoch AND r.lease_owner = $2::text
        AND r.lease_expires_at > clock.now
      RETURNING r.id`
    const heartbeat: Store["heartbeat"] = (request) => {
      if (request.runs.length === 0) return Effect.succeed([])
      // in ID order, like commit batches, so statements locking several runs lock them in one order
      const held = [...request.runs].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
      return prepared<{ readonly id: string }>(heartbeatText, [
        held.map((run) => run.id),
        request.workerId,
        request.leaseMs,
        held.map((run) => run.epoch)
      ]).pipe(
        Effect.map((rows) => rows.map((row) => row.id)),
        mapSqlError("heartbeat"),
        Effect.withSpan("SqlStore.heartbeat", { captureStackTrace: false })
      )
    }

    const releaseText = `WITH u AS (
        UPDATE ${t.runs} SET lease_owner = NULL, lease_expires_at = NULL
        WHERE id = $1::text AND epoch = $2::bigint AND lease_owner IS NOT NULL
        RETURNING workflow
      )
      SELECT ${runnableChanged("u.workflow")} AS notified FROM u`
    const release = (runId: string, epoch: number) =>
      prepared(releaseText, [runId, epoch]).pipe(
        Effect.asVoid,
        mapSqlError("release"),
        Effect.withSpan("SqlStore.release", { captureStackTrace: false })
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
    const snapshotColumns = `(SELECT coalesce(json_agg(${entriesJson} ORDER BY j.seq, j.key), '[]'::json)
        FROM ${t.journal} j WHERE j.run_id = r.id) AS entries,
      (SELECT coalesce(json_agg(${signalsJson} ORDER BY s.seq), '[]'::json)
        FROM ${t.signals} s WHERE s.run_id = r.id) AS signals`
    const attemptsColumn = `(SELECT coalesce(json_agg(${attemptsJson} ORDER BY j.seq NULLS LAST, a.key, a.attempt), '[]'::json)
        FROM ${t.attempts} a LEFT JOIN ${t.journal} j ON j.run_id = a.run_id AND j.key = a.key
        WHERE a.run_id = r.id) AS attempts`

    const detailsRow = (operation: string, runId: string) =>
      Effect.flatMap(
        mapSqlError(operation)(prepared(rows(operation), [runId])),
        (found): Effect.Effect<RunDetails, RunNotFound | StoreError> =>
          found.length === 0
            ? Effect.fail(new RunNotFound({ workflowId: runId }))
            : decodeDetails(operation, runId)(found[0])
      )
    const loadText = `SELECT ${rColumns}, ${snapshotColumns} FROM ${t.runs} r WHERE r.id = $1::text`
    const inspectText = `SELECT ${rColumns}, ${snapshotColumns}, ${attemptsColumn} FROM ${t.runs} r WHERE r.id = $1::text`
    const rows = (operation: string) => operation === "inspect" ? inspectText : loadText

    const load: Store["load"] = (runId) =>
      detailsRow("load", runId).pipe(
        Effect.map(({ entries, run, signals }) => ({ run, entries, signals })),
        Effect.withSpan("SqlStore.load", { captureStackTrace: false })
      )

    /**
     * The fenced commit of any number of runs, one statement with one fixed text (so it is prepared
     * once per connection). `input` holds one row per commit; the `fence` CTE updates each run only
     * if its epoch and a live lease still hold; the journal and attempt upserts read their rows from
     * `fence`, so a run that matched nothing writes nothing, and its output row says `ok = false`
     * (`LeaseLost`) without affecting the other runs of the batch. `$2` repeats the run IDs as an
     * array so that the planner, which cannot see into `$1`, finds the runs by primary key even in a
     * generic plan (it assumes 100 input rows, and would otherwise scan the table).
     */
    const commitText = `WITH clock AS (SELECT ${nowMs} AS now),
      input AS (
        SELECT * FROM json_to_recordset($1::json) AS x(i integer, run_id text, epoch bigint, lease_ms bigint,
          reset boolean, tr boolean, release boolean, status text, runnable_at bigint, seen bigint,
          set_output boolean, output text, set_error boolean, error text, ended boolean, entries json, attempts json)
      ),
      fence AS (
        UPDATE ${t.runs} r SET
          updated_at = clock.now,
          recoveries = CASE WHEN x.reset THEN 0 ELSE r.recoveries END,
          lease_owner = CASE WHEN x.release THEN NULL ELSE r.lease_owner END,
          lease_expires_at = CASE WHEN x.release THEN NULL ELSE clock.now + x.lease_ms END,
          status = CASE WHEN x.tr THEN x.status ELSE r.status END,
          runnable_at = CASE WHEN NOT x.tr THEN r.runnable_at
            WHEN x.seen IS NOT NULL AND r.last_signal_seq > x.seen THEN clock.now
            ELSE x.runnable_at END,
          output = CASE WHEN x.set_output THEN x.output ELSE r.output END,
          error = CASE WHEN x.set_error THEN x.error ELSE r.error END,
          completed_at = CASE WHEN NOT x.tr THEN r.completed_at WHEN x.ended THEN clock.now END
        FROM input x, clock
        WHERE r.id = ANY($2::text[]) AND r.id = x.run_id AND r.epoch = x.epoch
          AND r.lease_owner IS NOT NULL AND r.lease_expires_at > clock.now
        RETURNING x.i, r.id, r.workflow, r.runnable_at, r.cancel_requested, x.release, x.ended, x.entries, x.attempts
      ),
      e AS (
        INSERT INTO ${t.journal} (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at)
        SELECT f.id, j.key, j.seq, j.kind, j.status, j.output, j.error, j.attempts, j.meta, j."startedAt", j."completedAt"
        FROM fence f, json_to_recordset(f.entries) AS j(key text, seq integer, kind text, status text, output text,
          error text, attempts integer, meta text, "startedAt" bigint, "completedAt" bigint)
        ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, status = excluded.status,
          output = excluded.output, error = excluded.error, attempts = excluded.attempts, meta = excluded.meta,
          started_at = excluded.started_at, completed_at = excluded.completed_at
      ),
      a AS (
        INSERT INTO ${t.attempts} (run_id, key, attempt, outcome, error, started_at, ended_at)
        SELECT f.id, y.key, y.attempt, y.outcome, y.error, y."startedAt", y."endedAt"
        FROM fence f, json_to_recordset(f.attempts) AS y(key text, attempt integer, outcome text, error text,
          "startedAt" bigint, "endedAt" bigint)
        ON CONFLICT (run_id, key, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error,
          started_at = excluded.started_at, ended_at = excluded.ended_at
      )
      SELECT x.i, f.i IS NOT NULL AS ok, f.cancel_requested,
        CASE WHEN f.ended THEN ${runFinished("f.id")} END AS finished,
        CASE WHEN f.release AND f.runnable_at IS NOT NULL THEN ${runnableChanged("f.workflow")} END AS runnable
      FROM input x LEFT JOIN fence f ON f.i = x.i`

    const commitAll = (commits: ReadonlyArray<Commit>) => {
      // In run ID order, so that batches (and heartbeats) lock the runs they share in one order.
      const input = commits.map(commitRow).sort((a, b) => (a.run_id < b.run_id ? -1 : a.run_id > b.run_id ? 1 : 0))
      return prepared<CommitOutcome>(commitText, [JSON.stringify(input), input.map((row) => row.run_id)]).pipe(
        Effect.map((outcomes) => {
          const byIndex = new Map(outcomes.map((outcome) => [outcome.i, outcome]))
          return commits.map((c, i): Exit.Exit<CommitResult, LeaseLost> => {
            const outcome = byIndex.get(i)
            return outcome?.ok === true
              ? Exit.succeed({ cancelRequested: outcome.cancel_requested === true })
              : Exit.fail(new LeaseLost({ workflowId: c.runId, epoch: c.epoch }))
          })
        })
      )
    }

    const commitOne = (c: Commit): Effect.Effect<CommitResult, LeaseLost | SqlError> =>
      Effect.flatMap(commitAll([c]), ([exit]) => exit)

    const submitCommit = yield* Batcher.make<Commit, CommitResult, LeaseLost, SqlError>({
      key: (c) => c.runId,
      maxInFlight: batchSlots,
      maxBatch,
      run: commitAll,
      omit: [SqlClient.TransactionConnection]
    })

    const commit = (c: Commit) =>
      submitCommit(c).pipe(mapSqlError("commit"), Effect.withSpan("SqlStore.commit", { captureStackTrace: false }))

    const transaction = makeTransaction(
      sql,
      (c) => Effect.map(commitOne(c), (result) => [result, Effect.void] as const)
    )

    const signalText = `WITH clock AS (SELECT ${nowMs} AS now),
      target AS (SELECT id FROM ${t.runs} WHERE id = $1::text),
      ins AS (
        INSERT INTO ${t.signals} (run_id, name, signal_id, payload, received_at)
        SELECT target.id, $2::text, $3::text, $4::text, clock.now FROM target, clock
        ON CONFLICT (run_id, signal_id) DO NOTHING
        RETURNING seq, run_id
      ),
      u AS (
        UPDATE ${t.runs} r SET
          last_signal_seq = GREATEST(r.last_signal_seq, ins.seq),
          runnable_at = CASE WHEN r.status = 'waiting' THEN clock.now ELSE r.runnable_at END,
          updated_at = CASE WHEN r.status = 'waiting' THEN clock.now ELSE r.updated_at END
        FROM ins, clock
        WHERE r.id = ins.run_id
        RETURNING r.workflow, r.status
      )
      SELECT (SELECT count(*) FROM target)::int AS found, (SELECT count(*) FROM ins)::int AS inserted,
        (SELECT count(${runnableChanged("u.workflow")}) FROM u WHERE u.status = 'waiting')::int AS woken`
    const signal: Store["signal"] = ({ name, payload, runId, signalId }) =>
      prepared<{ readonly found: number; readonly inserted: number }>(signalText, [runId, name, signalId, payload]).pipe(
        mapSqlError("signal"),
        Effect.flatMap(([row]) =>
          row === undefined || row.found === 0
            ? Effect.fail(new RunNotFound({ workflowId: runId }))
            : Effect.succeed({ duplicate: row.inserted === 0 })
        ),
        Effect.withSpan("SqlStore.signal", { captureStackTrace: false })
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
          RETURNING ${sql.literal(rColumns)}
        )
        SELECT u.*, (CASE WHEN u.status IN (${idle}) THEN ${sql.literal(runnableChanged("u.workflow"))} END) AS notified
        FROM u`
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
          RETURNING ${sql.literal(rColumns)}
        )
        SELECT u.*, ${sql.literal(runnableChanged("u.workflow"))} AS notified FROM u`.pipe(
        mapSqlError("resume"),
        Effect.flatMap((rows): Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError> =>
          rows.length > 0
            ? decodeRun("resume")(rows[0])
            : Effect.flatMap(existing("resume", runId), (run) =>
              Effect.fail(new InvalidRunState({ workflowId: runId, status: run.status, operation: "resume" })))
        ),
        Effect.withSpan("SqlStore.resume")
      )

    /** `get`s of concurrent callers (e.g. many `result` waiters woken at once) share one statement. */
    const selectRunsText = `SELECT ${columns} FROM ${t.runs} WHERE id = ANY($1::text[])`
    let getSeq = 0
    const getBatched = yield* Batcher.make<string, ReadonlyArray<unknown>, never, SqlError>({
      key: () => String(getSeq++),
      maxInFlight: batchSlots,
      maxBatch,
      run: (ids) =>
        Effect.map(prepared<{ readonly id: string }>(selectRunsText, [ids]), (rows) => {
          const byId = new Map(rows.map((row) => [row.id, row]))
          return ids.map((id) => {
            const row = byId.get(id)
            return Exit.succeed(row === undefined ? [] : [row])
          })
        })
    })

    const get = (runId: string) =>
      getBatched(runId).pipe(
        mapSqlError("get"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(decodeRun("get")(rows[0]), Option.some)
        ),
        Effect.withSpan("SqlStore.get")
      )

    const list = makeList(sql, t)

    const inspect: Store["inspect"] = (runId) => detailsRow("inspect", runId).pipe(Effect.withSpan("SqlStore.inspect"))

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
  })
