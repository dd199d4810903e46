import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
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
  StoreEvent
} from "@memento/workflow/WorkflowStore"
import type { Scope, Stream } from "effect"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Option from "effect/Option"
import * as Batcher from "./batcher.js"
import {
  claimableStatuses,
  claimOrder,
  endedStatuses,
  executionLogSql,
  hasFinishedEntry,
  idleStatuses,
  isAlerting,
  isEnded,
  isSqlError,
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
import { makePrepared } from "./prepared.js"
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

/** The database clock in epoch milliseconds. */
const nowMs = "(floor(extract(epoch from clock_timestamp()) * 1000))::bigint"

/** Whether the calling fiber is inside a `withTransaction` (then creates and gets are not batched). */
const inTransaction = Effect.map(Effect.serviceOption(SqlClient.TransactionConnection), Option.isSome)

/** Batches (of commits, creates, gets) executing at once; requests arriving meanwhile form the next. */
const batchSlots = 2
const maxBatch = 200

/** One commit as a row of the batch statement's input (see `commitText`). */
const hasSignal = (c: Commit): boolean => c.transition?.signal !== undefined

const commitRow = (c: Commit, i: number) => {
  const tr = c.transition
  const { attempts, entries } = storedRows(c.entries, c.attempts)
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
    alert: tr !== undefined && isAlerting(tr.status),
    entries,
    attempts,
    // only in a commit that creates its run (undefined keys are left out of the JSON: NULL)
    workflow: c.create?.workflow,
    payload: c.create?.payload,
    owner: c.create?.workerId
  }
}

const isCreate = (c: Commit): boolean => c.create !== undefined

interface CommitOutcome {
  readonly i: number
  readonly ok: boolean
  readonly cancel_requested: boolean | null
}

/**
 * Logs a warning when the server may lose commits it acknowledged: `fsync` off (a crash of the
 * machine can lose or corrupt committed data) or `synchronous_commit` off (a crash of the server
 * can lose the last commits). The journal relies on an acknowledged commit staying: a lost step
 * result runs the step again, a lost start or finish is forgotten.
 *
 * @internal
 */
export const warnIfNotDurable = (sql: SqlClient.SqlClient): Effect.Effect<void> =>
  sql<{ readonly fsync: string; readonly synchronous_commit: string }>`SELECT current_setting('fsync') AS fsync,
    current_setting('synchronous_commit') AS synchronous_commit`.pipe(
    Effect.flatMap(([row]) => {
      const problems = [
        ...(row.fsync === "off" ? ["fsync is off: a crash of the machine can lose or corrupt committed data"] : []),
        ...(row.synchronous_commit === "off"
          ? ["synchronous_commit is off: a crash of the server can lose the last commits it acknowledged"]
          : [])
      ]
      return problems.length === 0 ? Effect.void : Effect.logWarning(
        `SqlStore: this Postgres may lose commits it acknowledged (${problems.join("; ")}). A lost journal ` +
          "write runs its step again; a lost start or finish is forgotten. Turn them on for the database or " +
          "role Memento uses."
      )
    }),
    Effect.catchAll((error) => Effect.logDebug("SqlStore: could not read fsync and synchronous_commit", error))
  )

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
    const journal = sql.literal(t.journal)
    const attempts = sql.literal(t.attempts)
    const journalArchive = sql.literal(t.journalArchive)
    const attemptsArchive = sql.literal(t.attemptsArchive)
    const alerts = sql.literal(t.alerts)
    const schedules = sql.literal(t.schedules)
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
        INSERT INTO ${t.runs} (id, workflow, status, payload, runnable_at, parent_id, created_at, updated_at, epoch,
          lease_owner, lease_expires_at)
        SELECT x.id, x.workflow, CASE WHEN x.owner IS NULL THEN 'pending' ELSE 'running' END, x.payload, clock.now,
          x.parent_id, clock.now, clock.now, CASE WHEN x.owner IS NULL THEN 0 ELSE 1 END, x.owner,
          CASE WHEN x.owner IS NULL THEN NULL ELSE clock.now + x.lease_ms END
        FROM json_to_recordset($1::json) AS x(id text, workflow text, payload text, parent_id text, owner text,
          lease_ms bigint), clock
        ON CONFLICT (id) DO NOTHING
        RETURNING ${columns}
      )
      SELECT ins.*, CASE WHEN ins.lease_owner IS NULL THEN ${runnableChanged("ins.workflow")} END AS notified FROM ins`
    const createAll = (inputs: ReadonlyArray<NewRun>) => {
      const rows = inputs
        .map((input) => ({
          id: input.id,
          workflow: input.workflow,
          payload: input.payload,
          parent_id: input.parentId ?? null,
          owner: input.claim?.workerId ?? null,
          lease_ms: input.claim?.leaseMs ?? null
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
    const insertRuns = yield* Batcher.make<NewRun, ReadonlyArray<unknown>, never, SqlError>({
      key: (input) => input.id,
      maxInFlight: batchSlots,
      maxBatch,
      run: createAll,
      omit: [SqlClient.TransactionConnection]
    })
    const create = (input: NewRun) =>
      Effect.gen(function*() {
        // Inside the caller's transaction (e.g. a webhook recorded with the run it starts) the insert
        // runs alone on the transaction's connection (a batch runs on a connection of its own), and
        // never claims: the run does not exist for anyone else until the transaction commits, so no
        // worker could commit to it; the usual wake-up follows the commit.
        const inserted = (yield* inTransaction)
          ? yield* Effect.flatMap(createAll([{ ...input, claim: undefined }]), ([exit]) => exit)
          : yield* insertRuns(input)
        if (inserted.length > 0) return { run: yield* decodeRun("create")(inserted[0]), created: true }
        const existing = yield* selectRun(input.id)
        if (existing.length === 0) return yield* Effect.dieMessage(`run "${input.id}" neither inserted nor found`)
        return { run: yield* decodeRun("create")(existing[0]), created: false }
      }).pipe(mapSqlError("create"), Tracing.withSpan("SqlStore.create", { captureStackTrace: false }))

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
          Tracing.withSpan("SqlStore.claim", { captureStackTrace: false })
        )

    /**
     * The `held` CTE locks the worker's runs in ID order before the update touches them: the order
     * of the update's own row locks follows its plan (heap order on a small table), and a
     * transaction locking two of those runs in ID order (a child's commit that signals its parent)
     * would otherwise deadlock with it.
     */
    const heartbeatText = `WITH clock AS (SELECT ${nowMs} AS now),
      held AS (
        SELECT h.id FROM ${t.runs} h
        WHERE h.id = ANY($1::text[]) AND h.lease_owner = $2::text
        ORDER BY h.id
        FOR NO KEY UPDATE
      )
      UPDATE ${t.runs} r SET lease_expires_at = clock.now + $3::bigint
      FROM clock, held, unnest($1::text[], $4::bigint[]) AS x(id, epoch)
      WHERE r.id = ANY($1::text[]) AND r.id = held.id AND r.id = x.id AND r.epoch = x.epoch
        AND r.lease_owner = $2::text AND r.lease_expires_at > clock.now
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
        Tracing.withSpan("SqlStore.heartbeat", { captureStackTrace: false })
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
        Tracing.withSpan("SqlStore.release", { captureStackTrace: false })
      )

    const json = (columns: JsonColumns) => jsonObjectSql("json_build_object", columns)
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
    const snapshotColumns = `(SELECT coalesce(json_agg(${entriesJson} ORDER BY j.seq, j.key), '[]'::json)
        FROM ${t.journal} j WHERE j.run_id = r.id) AS entries,
      (SELECT coalesce(json_agg(${signalsJson} ORDER BY s.seq), '[]'::json)
        FROM ${t.signals} s WHERE s.run_id = r.id) AS signals`
    const executionLog = executionLogSql(t, {
      jsonObject: "json_build_object",
      aggregate: (value, order) => `coalesce(json_agg(${value} ORDER BY ${order}), '[]'::json)`
    })
    const attemptsColumn = `${executionLog.attempts} AS attempts`

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
    const archiveColumns =
      `(SELECT coalesce(json_agg(${archivedEntriesJson} ORDER BY j.generation, j.seq, j.key), '[]'::json)
        FROM ${t.journalArchive} j WHERE j.run_id = r.id) AS archived_entries,
      ${executionLog.archivedAttempts} AS archived_attempts,
      (SELECT coalesce(json_agg(${runJson("json_build_object", "c")} ORDER BY c.created_at, c.id), '[]'::json)
        FROM ${t.runs} c WHERE c.parent_id = r.id) AS children`

    const detailsRow = <E>(operation: string, runId: string, decode: (row: unknown) => Effect.Effect<RunDetails, E>) =>
      Effect.flatMap(
        mapSqlError(operation)(prepared(rows(operation), [runId])),
        (found): Effect.Effect<RunDetails, RunNotFound | E> =>
          found.length === 0 ? Effect.fail(new RunNotFound({ workflowId: runId })) : decode(found[0])
      )
    const loadText = `SELECT ${rColumns}, ${snapshotColumns} FROM ${t.runs} r WHERE r.id = $1::text`
    const inspectText = `SELECT ${rColumns}, ${snapshotColumns}, ${attemptsColumn}, ${archiveColumns}
      FROM ${t.runs} r WHERE r.id = $1::text`
    const rows = (operation: string) => operation === "inspect" ? inspectText : loadText

    const load: Store["load"] = (runId) =>
      detailsRow("load", runId, decodeSnapshot(runId)).pipe(
        Effect.map(({ entries, run, signals }) => ({ run, entries, signals })),
        Tracing.withSpan("SqlStore.load", { captureStackTrace: false })
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
    /**
     * The fenced commit of any number of runs, one statement with one fixed text (so it is prepared
     * once per connection). `input` holds one row per commit; the `fence` CTE updates each run only
     * if its epoch and a live lease still hold; the journal and attempt upserts read their rows from
     * `fence`, so a run that matched nothing writes nothing, and its output row says `ok = false`
     * (`LeaseLost`) without affecting the other runs of the batch.
     *
     * `runs` is how `fence` finds the runs by primary key, which the planner cannot see in `$1`:
     * for a batch, `$2` repeats the run IDs as an array. A commit of one run (every commit of an
     * idle store) has a text of its own where `$2` is that run's ID: the planner then estimates one
     * row whatever the value, so the prepared statement keeps one generic plan. With the array,
     * its estimate differs between the generic plan (ten rows) and a plan made for the values (one),
     * and Postgres may keep planning every execution anew, which doubles the cost of a commit
     * (~0.5 ms → ~1 ms measured on one connection).
     */
    const commitInput = `input AS (
        SELECT * FROM json_to_recordset($1::json) AS x(i integer, run_id text, epoch bigint, lease_ms bigint,
          reset boolean, tr boolean, release boolean, status text, runnable_at bigint, seen bigint,
          set_output boolean, output text, set_error boolean, error text, ended boolean, alert boolean, entries json,
          attempts json, workflow text, payload text, owner text)
      )`
    const updateFence = (runs: string) =>
      `fence AS (
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
        WHERE ${runs} AND r.id = x.run_id AND r.epoch = x.epoch
          AND r.lease_owner IS NOT NULL AND r.lease_expires_at > clock.now
        RETURNING x.i, r.id, r.workflow, r.runnable_at, r.cancel_requested, r.epoch, r.status, r.error, x.release,
          x.ended, x.alert, x.entries, x.attempts
      )`
    // A data-modifying CTE does not see the rows another one inserts, so a run created by the commit
    // is inserted with the commit's changes already applied (what the fenced update would set).
    const insertFence = `ins AS (
        INSERT INTO ${t.runs} (id, workflow, status, payload, output, error, epoch, lease_owner, lease_expires_at,
          runnable_at, created_at, updated_at, completed_at)
        SELECT x.run_id, x.workflow, CASE WHEN x.tr THEN x.status ELSE 'running' END, x.payload,
          CASE WHEN x.set_output THEN x.output END, CASE WHEN x.set_error THEN x.error END, x.epoch,
          CASE WHEN x.release THEN NULL ELSE x.owner END,
          CASE WHEN x.release THEN NULL ELSE clock.now + x.lease_ms END,
          CASE WHEN x.tr THEN x.runnable_at ELSE clock.now END, clock.now, clock.now,
          CASE WHEN x.ended THEN clock.now END
        FROM input x, clock
        WHERE x.epoch = 1
        ON CONFLICT (id) DO NOTHING
        RETURNING id, workflow, runnable_at, cancel_requested, epoch, status, error
      ),
      fence AS (
        SELECT x.i, r.id, r.workflow, r.runnable_at, r.cancel_requested, r.epoch, r.status, r.error, x.release,
          x.ended, x.alert, x.entries, x.attempts
        FROM ins r JOIN input x ON x.run_id = r.id
      )`
    const commitBody = `e AS (
        INSERT INTO ${t.journal} (run_id, key, seq, kind, status, output, error, attempts, meta, started_at, completed_at,
          implied_attempt)
        SELECT f.id, j.key, j.seq, j.kind, j.status, j.output, j.error, j.attempts, j.meta, j."startedAt", j."completedAt",
          j."impliedAttempt"
        FROM fence f, json_to_recordset(f.entries) AS j(key text, seq integer, kind text, status text, output text,
          error text, attempts integer, meta text, "startedAt" bigint, "completedAt" bigint, "impliedAttempt" boolean)
        ON CONFLICT (run_id, key) DO UPDATE SET seq = excluded.seq, kind = excluded.kind, status = excluded.status,
          output = excluded.output, error = excluded.error, attempts = excluded.attempts, meta = excluded.meta,
          started_at = excluded.started_at, completed_at = excluded.completed_at,
          implied_attempt = coalesce(excluded.implied_attempt, ${t.journal}.implied_attempt)
      ),
      a AS (
        INSERT INTO ${t.attempts} (run_id, key, attempt, outcome, error, started_at, ended_at)
        SELECT f.id, y.key, y.attempt, y.outcome, y.error, y."startedAt", y."endedAt"
        FROM fence f, json_to_recordset(f.attempts) AS y(key text, attempt integer, outcome text, error text,
          "startedAt" bigint, "endedAt" bigint)
        ON CONFLICT (run_id, key, attempt) DO UPDATE SET outcome = excluded.outcome, error = excluded.error,
          started_at = excluded.started_at, ended_at = excluded.ended_at
      ),
      al AS (
        INSERT INTO ${t.alerts} (id, run_id, workflow, status, error, created_at)
        SELECT f.id || '/' || f.epoch::text || '/' || f.status, f.id, f.workflow, f.status, f.error, clock.now
        FROM fence f, clock WHERE f.alert
        ON CONFLICT (id) DO NOTHING
      )
      SELECT x.i, f.i IS NOT NULL AS ok, f.cancel_requested,
        CASE WHEN f.ended THEN ${runFinished("f.id")} END AS finished,
        CASE WHEN f.release AND f.runnable_at IS NOT NULL THEN ${runnableChanged("f.workflow")} END AS runnable
      FROM input x LEFT JOIN fence f ON f.i = x.i`
    /**
     * The fenced commit: `fence` is the fenced update of the runs (for runs not stored yet, their
     * insert), returning the runs the commit applies to; journal rows, attempts and alerts follow.
     */
    const commitSql = (fence: string) =>
      `WITH clock AS (SELECT ${nowMs} AS now),
      ${commitInput},
      ${fence},
      ${commitBody}`
    const commitText = commitSql(updateFence("r.id = ANY($2::text[])"))
    const commitOneText = commitSql(updateFence("r.id = $2::text"))
    const createCommitText = commitSql(insertFence)

    /** Commits of runs that exist (`creating` false) or of runs they create, in one statement. */
    const commitStatement = (commits: ReadonlyArray<Commit>, creating: boolean) => {
      // In run ID order, so that batches (and heartbeats) lock the runs they share in one order.
      const input = commits.map(commitRow).sort((a, b) => (a.run_id < b.run_id ? -1 : a.run_id > b.run_id ? 1 : 0))
      const one = input.length === 1
      const outcomes = creating
        ? prepared<CommitOutcome>(createCommitText, [JSON.stringify(input)])
        : prepared<CommitOutcome>(one ? commitOneText : commitText, [
          JSON.stringify(input),
          one ? input[0].run_id : input.map((row) => row.run_id)
        ])
      return Effect.map(outcomes, (outcomes) => {
        const byIndex = new Map(outcomes.map((outcome) => [outcome.i, outcome]))
        return commits.map((c, i): Exit.Exit<CommitResult, LeaseLost> => {
          const outcome = byIndex.get(i)
          return outcome?.ok === true
            ? Exit.succeed({ cancelRequested: outcome.cancel_requested === true })
            : Exit.fail(new LeaseLost({ workflowId: c.runId, epoch: c.epoch }))
        })
      })
    }

    const commitPlain = (commits: ReadonlyArray<Commit>) => {
      const creating = commits.filter(isCreate)
      if (creating.length === 0) return commitStatement(commits, false)
      if (creating.length === commits.length) return commitStatement(commits, true)
      const existing = commits.filter((c) => !isCreate(c))
      return Effect.map(
        Effect.all([commitStatement(existing, false), commitStatement(creating, true)]),
        ([forExisting, forCreating]) => {
          let e = 0
          let c = 0
          return commits.map((commit) => isCreate(commit) ? forCreating[c++] : forExisting[e++])
        }
      )
    }

    const commitOne = (c: Commit): Effect.Effect<CommitResult, LeaseLost | SqlError> =>
      Effect.flatMap(commitPlain([c]), ([exit]) => exit)

    /**
     * A commit that also delivers a signal (a child run finishing tells its parent) changes two
     * runs, so it cannot share the batch statement (a run's row must be updated once per
     * statement). It runs in a transaction of its own: lock both runs in ID order (the order
     * heartbeats lock in, so no deadlock), the fenced commit, then the signal.
     */
    const lockRunsText = `SELECT id FROM ${t.runs} WHERE id = ANY($1::text[]) ORDER BY id FOR NO KEY UPDATE`
    const commitSignalled = (c: Commit): Effect.Effect<CommitResult, LeaseLost | SqlError> =>
      Effect.gen(function*() {
        const delivery = c.transition!.signal!
        yield* prepared(lockRunsText, [[c.runId, delivery.runId].sort()])
        const result = yield* commitOne(c)
        yield* prepared(signalText, [delivery.runId, delivery.name, delivery.signalId, delivery.payload])
        return result
      })

    const commitAll = (commits: ReadonlyArray<Commit>) =>
      Effect.gen(function*() {
        if (!commits.some(hasSignal)) return yield* commitPlain(commits)
        const plain = commits.filter((c) => !hasSignal(c))
        const plainExits = plain.length === 0 ? [] : yield* commitPlain(plain)
        let next = 0
        const exits: Array<Exit.Exit<CommitResult, LeaseLost | SqlError>> = []
        for (const c of commits) {
          exits.push(
            hasSignal(c)
              ? yield* Effect.exit(
                sql.withTransaction(commitSignalled(c)).pipe(
                  // `withTransaction` turns a failed COMMIT into a defect: it is a storage failure.
                  Effect.catchAllDefect((defect) => isSqlError(defect) ? Effect.fail(defect) : Effect.die(defect))
                )
              )
              : plainExits[next++]
          )
        }
        return exits
      })

    const submitCommit = yield* Batcher.make<Commit, CommitResult, LeaseLost, SqlError>({
      key: (c) => c.runId,
      maxInFlight: batchSlots,
      maxBatch,
      run: commitAll,
      omit: [SqlClient.TransactionConnection]
    })

    const commit = (c: Commit) =>
      submitCommit(c).pipe(mapSqlError("commit"), Tracing.withSpan("SqlStore.commit", { captureStackTrace: false }))

    const transaction = makeTransaction(
      sql,
      (c) => Effect.map(hasSignal(c) ? commitSignalled(c) : commitOne(c), (result) => [result, Effect.void] as const)
    )

    const signal: Store["signal"] = ({ name, payload, runId, signalId }) =>
      prepared<{ readonly found: number; readonly inserted: number }>(signalText, [runId, name, signalId, payload])
        .pipe(
          mapSqlError("signal"),
          Effect.flatMap(([row]) =>
            row === undefined || row.found === 0
              ? Effect.fail(new RunNotFound({ workflowId: runId }))
              : Effect.succeed({ duplicate: row.inserted === 0 })
          ),
          Tracing.withSpan("SqlStore.signal", { captureStackTrace: false })
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
          Tracing.withSpan("SqlStore.requestCancel")
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
            : Effect.flatMap(
              existing("resume", runId),
              (run) => Effect.fail(new InvalidRunState({ workflowId: runId, status: run.status, operation: "resume" }))
            )
        ),
        Tracing.withSpan("SqlStore.resume")
      )

    /** `get`s of concurrent callers (e.g. many `result` waiters woken at once) share one statement. */
    const selectRunsText = `SELECT ${columns} FROM ${t.runs} WHERE id = ANY($1::text[])`
    let getSeq = 0
    const getAll = (ids: ReadonlyArray<string>) =>
      Effect.map(prepared<{ readonly id: string }>(selectRunsText, [ids]), (rows) => {
        const byId = new Map(rows.map((row) => [row.id, row]))
        return ids.map((id) => {
          const row = byId.get(id)
          return Exit.succeed(row === undefined ? [] : [row])
        })
      })
    const getBatched = yield* Batcher.make<string, ReadonlyArray<unknown>, never, SqlError>({
      key: () => String(getSeq++),
      maxInFlight: batchSlots,
      maxBatch,
      run: getAll,
      omit: [SqlClient.TransactionConnection]
    })

    const get = (runId: string) =>
      Effect.flatMap(
        inTransaction,
        (yes) => yes ? Effect.flatMap(getAll([runId]), ([exit]) => exit) : getBatched(runId)
      ).pipe(
        mapSqlError("get"),
        Effect.flatMap((rows) =>
          rows.length === 0 ? Effect.succeed(Option.none()) : Effect.map(decodeRun("get")(rows[0]), Option.some)
        ),
        Tracing.withSpan("SqlStore.get")
      )

    const list = makeList(sql, t)

    const inspect: Store["inspect"] = (runId) =>
      detailsRow("inspect", runId, decodeDetails("inspect", runId)).pipe(
        Tracing.withSpan("SqlStore.inspect")
      )

    const retry: Store["retry"] = ({ archiveKeys, from, runId }) => {
      const keys = JSON.stringify(archiveKeys)
      const applied = from.length === 0 ? Effect.succeed([]) : sql`WITH clock AS (SELECT ${now} AS now),
        u AS (
          UPDATE ${runs} r SET status = 'pending', runnable_at = clock.now, output = NULL, error = NULL,
            completed_at = NULL, lease_owner = NULL, lease_expires_at = NULL, cancel_requested = false,
            recoveries = 0, updated_at = clock.now
          FROM clock
          WHERE r.id = ${runId}::text AND r.status IN ${sql.in(from)}
          RETURNING ${sql.literal(rColumns)}
        ),
        g AS (
          SELECT GREATEST(
            (SELECT max(generation) FROM ${journalArchive} WHERE run_id = ${runId}::text),
            (SELECT max(generation) FROM ${attemptsArchive} WHERE run_id = ${runId}::text),
            0
          ) + 1 AS generation
        ),
        je AS (
          DELETE FROM ${journal} j USING u
          WHERE j.run_id = u.id AND j.key IN (SELECT json_array_elements_text(${keys}::json))
          RETURNING j.*
        ),
        ja AS (
          INSERT INTO ${journalArchive} (run_id, generation, key, seq, kind, status, output, error, attempts, meta,
            started_at, completed_at, implied_attempt, archived_at)
          SELECT je.run_id, g.generation, je.key, je.seq, je.kind, je.status, je.output, je.error, je.attempts,
            je.meta, je.started_at, je.completed_at, je.implied_attempt, clock.now
          FROM je, g, clock
        ),
        ae AS (
          DELETE FROM ${attempts} a USING u
          WHERE a.run_id = u.id AND a.key IN (SELECT json_array_elements_text(${keys}::json))
          RETURNING a.*
        ),
        aa AS (
          INSERT INTO ${attemptsArchive} (run_id, generation, key, attempt, outcome, error, started_at, ended_at)
          SELECT ae.run_id, g.generation, ae.key, ae.attempt, ae.outcome, ae.error, ae.started_at, ae.ended_at
          FROM ae, g
        )
        SELECT u.*, ${sql.literal(runnableChanged("u.workflow"))} AS notified FROM u`
      return applied.pipe(
        mapSqlError("retry"),
        Effect.flatMap((rows): Effect.Effect<RunRecord, RunNotFound | InvalidRunState | StoreError> =>
          rows.length > 0
            ? decodeRun("retry")(rows[0])
            : Effect.flatMap(
              existing("retry", runId),
              (run) => Effect.fail(new InvalidRunState({ workflowId: runId, status: run.status, operation: "retry" }))
            )
        ),
        Tracing.withSpan("SqlStore.retry")
      )
    }

    /**
     * One statement: lock up to `limit` victims through `${runs}_finished` (finished runs only, by
     * status and completion time), skipping runs another transaction holds, and delete them; their
     * journal, attempts, archive, signals and alerts go with them (`ON DELETE CASCADE`).
     */
    const purge: Store["purge"] = ({ completedBefore, limit, statuses }) => {
      const deletable = purgeable(statuses)
      const max = Math.floor(limit)
      if (deletable.length === 0 || !(max >= 1)) return Effect.succeed(0)
      return sql<{ readonly deleted: number }>`WITH victims AS (
          SELECT id FROM ${runs}
          WHERE status IN ${sql.in(deletable)} AND completed_at < ${completedBefore}
          LIMIT ${max}
          FOR UPDATE SKIP LOCKED
        ),
        d AS (
          DELETE FROM ${runs} r USING victims v
          WHERE r.id = v.id AND r.status IN ${sql.in(deletable)} AND r.completed_at < ${completedBefore}
          RETURNING r.id
        )
        SELECT count(*)::int AS deleted FROM d`.pipe(
        Effect.map((rows) => Number(rows[0]?.deleted ?? 0)),
        mapSqlError("purge"),
        Tracing.withSpan("SqlStore.purge")
      )
    }

    const stats: Store["stats"] = sql`SELECT workflow, status, count(*)::int AS count FROM ${runs}
      GROUP BY workflow, status`.pipe(
      Effect.flatMap(decodeCounts),
      mapSqlError("stats"),
      Tracing.withSpan("SqlStore.stats")
    )

    const alertColumns = sql.literal(
      "a.id, a.run_id, a.workflow, a.status, a.error, a.created_at, a.attempts, a.delivered_at"
    )
    const decodeClaimedAlerts = decodeAlerts("claimAlerts")
    const claimAlerts: Store["claimAlerts"] = ({ leaseMs, limit }) =>
      Math.floor(limit) < 1 ? Effect.succeed([]) : sql`WITH clock AS (SELECT ${now} AS now),
        c AS (
          SELECT p.id FROM ${alerts} p, clock
          WHERE p.delivered_at IS NULL AND (p.lease_expires_at IS NULL OR p.lease_expires_at <= clock.now)
          ORDER BY p.created_at, p.id
          LIMIT ${Math.floor(limit)}
          FOR UPDATE OF p SKIP LOCKED
        )
        UPDATE ${alerts} a SET lease_expires_at = clock.now + ${leaseMs}::bigint, attempts = a.attempts + 1
        FROM c, clock
        WHERE a.id = c.id
        RETURNING ${alertColumns}`.pipe(
        Effect.flatMap(decodeClaimedAlerts),
        mapSqlError("claimAlerts"),
        Tracing.withSpan("SqlStore.claimAlerts")
      )

    const completeAlert: Store["completeAlert"] = (id) =>
      sql`UPDATE ${alerts} SET delivered_at = ${now}, lease_expires_at = NULL
        WHERE id = ${id}::text AND delivered_at IS NULL`.pipe(
        Effect.asVoid,
        mapSqlError("completeAlert"),
        Tracing.withSpan("SqlStore.completeAlert")
      )

    const decodeRunAlerts = decodeAlerts("alerts")
    const alertsOf: Store["alerts"] = (runId) =>
      sql`SELECT ${alertColumns} FROM ${alerts} a WHERE a.run_id = ${runId}::text ORDER BY a.created_at, a.id`.pipe(
        Effect.flatMap(decodeRunAlerts),
        mapSqlError("alerts"),
        Tracing.withSpan("SqlStore.alerts")
      )

    const scheduleCursor: Store["scheduleCursor"] = (name) =>
      sql<{ readonly last_tick: string | number }>`SELECT last_tick FROM ${schedules} WHERE name = ${name}::text`.pipe(
        Effect.map((rows) => rows.length === 0 ? Option.none() : Option.some(Number(rows[0].last_tick))),
        mapSqlError("scheduleCursor"),
        Tracing.withSpan("SqlStore.scheduleCursor")
      )

    const advanceSchedule: Store["advanceSchedule"] = (name, tick) =>
      sql`INSERT INTO ${schedules} AS s (name, last_tick, updated_at) VALUES (${name}::text, ${tick}::bigint, ${now})
        ON CONFLICT (name) DO UPDATE SET last_tick = GREATEST(s.last_tick, excluded.last_tick),
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
      events
    }
  })
