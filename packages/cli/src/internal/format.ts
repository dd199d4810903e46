/**
 * Human output of the CLI: tables, the run timeline, stats.
 */
import { describeEncoded, describeRunError } from "@memento/workflow/WorkflowError"
import type {
  ArchivedAttempt,
  ArchivedEntry,
  AttemptRecord,
  JournalEntry,
  RunCount,
  RunDetails,
  RunPage,
  RunRecord
} from "@memento/workflow/WorkflowStore"
import { allStatuses } from "@memento/workflow/WorkflowStore"

const compensateSuffix = "#compensate"

/** An epoch-millisecond time in UTC, `2026-11-28 12:40:01.123Z`. */
export const time = (ms: number): string => new Date(ms).toISOString().replace("T", " ")

/** A time without milliseconds, for tables. */
export const shortTime = (ms: number): string => time(ms).replace(/\.\d{3}Z$/, "Z")

/** A duration in the largest units that keep it readable: `12 ms`, `1.25 s`, `2 min 03 s`, `1 h 05 min`, `3 d 4 h`. */
export const duration = (ms: number): string => {
  const value = Math.max(0, Math.round(ms))
  if (value < 1_000) return `${value} ms`
  if (value < 60_000) return `${(value / 1_000).toFixed(value < 10_000 ? 2 : 1)} s`
  const pad = (n: number) => String(n).padStart(2, "0")
  if (value < 3_600_000) return `${Math.floor(value / 60_000)} min ${pad(Math.floor((value % 60_000) / 1_000))} s`
  if (value < 86_400_000) {
    return `${Math.floor(value / 3_600_000)} h ${pad(Math.floor((value % 3_600_000) / 60_000))} min`
  }
  return `${Math.floor(value / 86_400_000)} d ${Math.floor((value % 86_400_000) / 3_600_000)} h`
}

/** Parses stored JSON text; text that is not JSON is returned as it is. */
export const parseJson = (text: string | null): unknown => {
  if (text === null) return null
  try {
    return JSON.parse(text)
  } catch {
    return text
  }
}

const truncate = (text: string, max: number): string => text.length <= max ? text : `${text.slice(0, max - 1)}…`

const compact = (value: unknown): string => {
  if (typeof value === "string") return value
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * One line for an encoded error value: `Tag: message`, `Tag {"field":…}` or its JSON. Used for
 * workflow and step errors, which the CLI cannot decode with the workflow's own Schemas.
 */
export const describeError: (value: unknown) => string = describeEncoded

/** The run's `error` column (the engine's RunError JSON) as one readable line. */
export const runError = (text: string | null): string | undefined => describeRunError(text) ?? undefined

/** Columns padded to their widest cell. */
export const table = (headers: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = headers.map((header, i) => Math.max(header.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((cell, i) => i === cells.length - 1 ? cell : cell.padEnd(widths[i]!)).join("  ").trimEnd()
  return [line(headers), ...rows.map(line)].join("\n")
}

/** `list`: one row per run, then the cursor of the next page. */
export const runPage = (page: RunPage): string => {
  const body = page.runs.length === 0
    ? "no runs"
    : table(
      ["ID", "WORKFLOW", "STATUS", "CREATED", "UPDATED"],
      page.runs.map((run) => [run.id, run.workflow, run.status, shortTime(run.createdAt), shortTime(run.updatedAt)])
    )
  return page.nextCursor === null ? body : `${body}\n\nnext page: --cursor ${page.nextCursor}`
}

/** `stats`: counts by workflow and status, with totals. */
export const stats = (counts: ReadonlyArray<RunCount>): string => {
  if (counts.length === 0) return "no runs"
  const statuses = allStatuses.filter((status) => counts.some((count) => count.status === status))
  const workflows = [...new Set(counts.map((count) => count.workflow))].sort()
  const cell = (workflow: string | undefined, status: string | undefined) => {
    const n = counts
      .filter((count) =>
        (workflow === undefined || count.workflow === workflow) && (status === undefined || count.status === status)
      )
      .reduce((sum, count) => sum + count.count, 0)
    return String(n)
  }
  return table(
    ["WORKFLOW", ...statuses.map((status) => status.toUpperCase()), "TOTAL"],
    [
      ...workflows.map((workflow) => [
        workflow,
        ...statuses.map((status) => cell(workflow, status)),
        cell(workflow, undefined)
      ]),
      ["(all)", ...statuses.map((status) => cell(undefined, status)), cell(undefined, undefined)]
    ]
  )
}

const field = (label: string, value: string) => `${label.padEnd(10)} ${value}`

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`

const metaOf = (entry: JournalEntry): Record<string, unknown> => {
  const meta = parseJson(entry.meta)
  return typeof meta === "object" && meta !== null ? meta as Record<string, unknown> : {}
}

/** What an entry's kind and meta say, beyond its status. */
const entryNotes = (entry: JournalEntry): ReadonlyArray<string> => {
  const meta = metaOf(entry)
  const notes: Array<string> = []
  switch (entry.kind) {
    case "compensation":
      if (entry.key.endsWith(compensateSuffix)) {
        notes.push(`compensation of "${entry.key.slice(0, -compensateSuffix.length)}"`)
      }
      break
    case "sleep":
      if (typeof meta.wakeAt === "number") {
        notes.push(`${entry.status === "started" ? "sleeping until" : "woke at"} ${time(meta.wakeAt)}`)
      }
      break
    case "signal": {
      const name = typeof meta.signal === "string" ? `"${meta.signal}"` : "a signal"
      const deadline = typeof meta.deadline === "number" ? ` (deadline ${time(meta.deadline)})` : ""
      if (entry.status === "started") notes.push(`waiting for ${name}${deadline}`)
      else if (typeof meta.signalId === "string") notes.push(`received ${name}, signal ID ${meta.signalId}`)
      else notes.push(`waited for ${name}${deadline}`)
      break
    }
    case "child": {
      if (typeof meta.childId === "string") {
        const workflow = typeof meta.workflow === "string" ? ` (${meta.workflow})` : ""
        notes.push(`child run ${meta.childId}${workflow}`)
      }
      break
    }
    default: {
      const known = Object.keys(meta)
      if (known.length > 0) notes.push(compact(meta))
    }
  }
  return notes
}

const entryStatus = (entry: JournalEntry): string =>
  entry.status === "started"
    ? entry.kind === "sleep" ? "sleeping" : entry.kind === "signal" ? "waiting" : "started"
    : entry.status

const attemptLine = (attempt: AttemptRecord): string => {
  const took = attempt.endedAt === null
    ? attempt.outcome === "running" ? "no end recorded (still running, or its worker died)" : "-"
    : duration(attempt.endedAt - attempt.startedAt)
  const error = attempt.error === null ? "" : `  ${truncate(attempt.error.split("\n")[0]!, 200)}`
  return `attempt ${attempt.attempt}  ${attempt.outcome.padEnd(11)} ${time(attempt.startedAt)}  ${took}${error}`
}

/** The lines of one journal entry and its attempts. */
const entryLines = (
  entry: JournalEntry,
  attempts: ReadonlyArray<AttemptRecord>,
  compensations: ReadonlyMap<string, JournalEntry>,
  widths: { readonly seq: number; readonly key: number }
): ReadonlyArray<string> => {
  const isCompensation = entry.kind === "compensation"
  const kind = isCompensation ? "COMPENSATION" : entry.kind
  const took = entry.completedAt === null ? "" : duration(entry.completedAt - entry.startedAt)
  const header = [
    String(entry.seq).padStart(widths.seq),
    (isCompensation ? `↩ ${entry.key}` : entry.key).padEnd(widths.key),
    kind.padEnd(12),
    entryStatus(entry).padEnd(9),
    took.padEnd(9),
    plural(entry.attempts, "attempt")
  ].join("  ")
  const indent = " ".repeat(widths.seq + 4)
  const lines = [`  ${header}`]
  const compensation = compensations.get(entry.key)
  const notes = [...entryNotes(entry)]
  if (compensation !== undefined) {
    notes.push(
      compensation.status === "succeeded"
        ? `undone by "${compensation.key}"`
        : `compensation "${compensation.key}" did not succeed (${entryStatus(compensation)})`
    )
  }
  for (const note of notes) lines.push(`${indent}${note}`)
  lines.push(`${indent}started ${time(entry.startedAt)}`)
  for (const attempt of [...attempts].sort((a, b) => a.attempt - b.attempt)) {
    lines.push(`${indent}${attemptLine(attempt)}`)
  }
  if (entry.status === "failed" && entry.error !== null) {
    lines.push(`${indent}error: ${truncate(describeError(parseJson(entry.error)), 300)}`)
  }
  if (entry.status === "succeeded" && entry.output !== null && entry.output !== "null" && !isCompensation) {
    lines.push(`${indent}output: ${truncate(entry.output, 120)}`)
  }
  return lines
}

const journalLines = (
  entries: ReadonlyArray<JournalEntry>,
  attempts: ReadonlyArray<AttemptRecord>
): ReadonlyArray<string> => {
  const sorted = [...entries].sort((a, b) => a.seq - b.seq || a.key.localeCompare(b.key))
  const compensations = new Map(
    sorted
      .filter((entry) => entry.kind === "compensation" && entry.key.endsWith(compensateSuffix))
      .map((entry) => [entry.key.slice(0, -compensateSuffix.length), entry] as const)
  )
  const widths = {
    seq: Math.max(...sorted.map((entry) => String(entry.seq).length)),
    key: Math.max(...sorted.map((entry) => entry.key.length + (entry.kind === "compensation" ? 2 : 0)))
  }
  return sorted.flatMap((entry) =>
    entryLines(entry, attempts.filter((attempt) => attempt.key === entry.key), compensations, widths)
  )
}

const runHeader = (run: RunRecord): ReadonlyArray<string> => {
  const lines = [field("run", run.id), field("workflow", run.workflow), field("status", run.status)]
  const error = runError(run.error)
  if (error !== undefined) {
    const [first, ...rest] = error.trim().split("\n")
    lines.push(field("error", truncate(first!, 500) + (rest.length > 0 ? " …" : "")))
  }
  lines.push(field("created", time(run.createdAt)))
  lines.push(field("updated", time(run.updatedAt)))
  if (run.completedAt !== null) {
    lines.push(field("completed", `${time(run.completedAt)} (after ${duration(run.completedAt - run.createdAt)})`))
  }
  if (run.runnableAt !== null) lines.push(field("runnable", time(run.runnableAt)))
  if (run.leaseOwner !== null) {
    lines.push(
      field("lease", `${run.leaseOwner}${run.leaseExpiresAt === null ? "" : ` until ${time(run.leaseExpiresAt)}`}`)
    )
  }
  const flags = [String(run.epoch), `recoveries ${run.recoveries}`]
  if (run.cancelRequested) flags.push("cancel requested")
  lines.push(field("epoch", flags.join(" · ")))
  if (run.parentId !== null) lines.push(field("parent", run.parentId))
  lines.push(field("payload", truncate(run.payload, 300)))
  if (run.output !== null) lines.push(field("output", truncate(run.output, 300)))
  return lines
}

/** `show`: the run, its journal with every attempt, archived generations, signals and children. */
export const timeline = (details: RunDetails): string => {
  const sections: Array<string> = [runHeader(details.run).join("\n")]
  sections.push(
    details.entries.length === 0
      ? "steps: none journaled"
      : ["steps (seq, key, kind, status, duration, attempts):", ...journalLines(details.entries, details.attempts)]
        .join("\n")
  )
  const generations = [...new Set(details.archivedEntries.map((entry) => entry.generation))].sort((a, b) => a - b)
  for (const generation of generations) {
    const entries: ReadonlyArray<ArchivedEntry> = details.archivedEntries.filter((entry) =>
      entry.generation === generation
    )
    const attempts: ReadonlyArray<ArchivedAttempt> = details.archivedAttempts.filter((attempt) =>
      attempt.generation === generation
    )
    const archivedAt = Math.min(...entries.map((entry) => entry.archivedAt))
    sections.push(
      [
        `archived by retry ${generation} at ${time(archivedAt)} (no longer replayed):`,
        ...journalLines(entries, attempts)
      ].join("\n")
    )
  }
  if (details.signals.length > 0) {
    sections.push(
      [
        "signals:",
        ...[...details.signals].sort((a, b) => a.seq - b.seq).map((signal) =>
          `  ${time(signal.receivedAt)}  "${signal.name}"  ID ${signal.signalId}  ${truncate(signal.payload, 120)}`
        )
      ].join("\n")
    )
  }
  if (details.children.length > 0) {
    sections.push(
      [
        "children:",
        ...table(
          ["ID", "WORKFLOW", "STATUS", "CREATED"],
          details.children.map((child) => [child.id, child.workflow, child.status, shortTime(child.createdAt)])
        ).split("\n").map((line) => `  ${line}`)
      ].join("\n")
    )
  }
  return sections.join("\n\n")
}

/** One line for a run after an operation: `order-1 (checkout): pending`. */
export const runLine = (run: RunRecord): string => `${run.id} (${run.workflow}): ${run.status}`
