/**
 * A run's timeline as an SVG Gantt chart: one row per journal entry, the entry's span as a pale
 * bar and each attempt as a solid segment coloured by outcome; compensations, sleeps, signal waits
 * and child runs in their own colours; entries archived by retries greyed out above the current
 * generation.
 */
import type { WorkflowStore } from "@memento/workflow"
import { describeValue, parseJson } from "./adminViews.js"
import { escape, formatDuration, formatTime } from "./html.js"

export const colors = {
  step: "#2f9e44",
  compensation: "#7048e8",
  failed: "#e03131",
  running: "#1c7ed6",
  interrupted: "#868e96",
  sleep: "#4dabf7",
  signal: "#f59f00",
  child: "#0ca678",
  patch: "#495057"
} as const

interface Row {
  readonly entry: WorkflowStore.JournalEntry
  readonly attempts: ReadonlyArray<WorkflowStore.AttemptRecord>
  readonly generation: number | null
}

const kindColor = (kind: WorkflowStore.EntryKind): string => {
  switch (kind) {
    case "step":
    case "transaction":
      return colors.step
    case "compensation":
      return colors.compensation
    case "sleep":
      return colors.sleep
    case "signal":
      return colors.signal
    case "child":
      return colors.child
    case "patch":
      return colors.patch
  }
}

const outcomeColor = (kind: WorkflowStore.EntryKind, outcome: WorkflowStore.AttemptOutcome): string => {
  switch (outcome) {
    case "succeeded":
      return kindColor(kind)
    case "failed":
    case "retrying":
      return colors.failed
    case "running":
      return colors.running
    case "interrupted":
      return colors.interrupted
  }
}

const glyph: Record<WorkflowStore.EntryKind, string> = {
  step: "▸",
  transaction: "▸",
  compensation: "↩",
  sleep: "◷",
  signal: "✉",
  child: "⑂",
  patch: "◆"
}

/** A tick step of 1, 2 or 5 times a power of ten milliseconds giving at most `max` intervals. */
const tickStep = (span: number, max: number): number => {
  for (let power = 1;; power *= 10) {
    for (const factor of [1, 2, 5]) {
      if (span / (factor * power) <= max) return factor * power
    }
  }
}

const rowsOf = (details: WorkflowStore.RunDetails): ReadonlyArray<Row> => {
  const archived = [...details.archivedEntries].sort((a, b) => a.generation - b.generation || a.seq - b.seq)
  const current = [...details.entries].sort((a, b) => a.seq - b.seq)
  const attemptsFor = (key: string, list: ReadonlyArray<WorkflowStore.AttemptRecord>) =>
    list.filter((attempt) => attempt.key === key).sort((a, b) => a.attempt - b.attempt)
  return [
    ...archived.map((entry): Row => ({
      entry,
      generation: entry.generation,
      attempts: attemptsFor(entry.key, details.archivedAttempts.filter((a) => a.generation === entry.generation))
    })),
    ...current.map((entry): Row => ({ entry, generation: null, attempts: attemptsFor(entry.key, details.attempts) }))
  ]
}

/** Where a bar without an end stops: the run's completion when it finished, else `now`. */
const openEnd = (run: WorkflowStore.RunRecord, now: number): number => run.completedAt ?? Math.max(now, run.updatedAt)

export interface TimelineOptions {
  /** The current time (epoch ms): where bars of unfinished steps end. */
  readonly now: number
  /** Width of the picture in pixels. Default 1100. */
  readonly width?: number | undefined
}

export const render = (details: WorkflowStore.RunDetails, options: TimelineOptions): string => {
  const run = details.run
  const rows = rowsOf(details)
  const width = options.width ?? 1100
  const labelWidth = 260
  const durationWidth = 90
  const plotWidth = width - labelWidth - durationWidth - 10
  const rowHeight = 26
  const top = 34
  const legendHeight = 34
  const height = top + Math.max(rows.length, 1) * rowHeight + 12 + legendHeight
  const fallbackEnd = openEnd(run, options.now)
  const start = Math.min(run.createdAt, ...rows.map((row) => row.entry.startedAt))
  const ends = rows.flatMap((row) => [
    row.entry.completedAt ?? fallbackEnd,
    ...row.attempts.map((attempt) => attempt.endedAt ?? fallbackEnd)
  ])
  const end = Math.max(start + 1, run.completedAt ?? 0, ...ends)
  const span = end - start
  const x = (time: number) => labelWidth + ((time - start) / span) * plotWidth
  const bar = (from: number, to: number) => {
    const left = x(from)
    return { left, width: Math.max(2, x(to) - left) }
  }

  const parts: Array<string> = []
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="timeline" width="${width}" height="${height}" ` +
      `viewBox="0 0 ${width} ${height}" role="img" aria-label="Timeline of run ${escape(run.id)}" ` +
      `font-family="system-ui,-apple-system,Segoe UI,Roboto,Helvetica,Arial,sans-serif" font-size="12">`
  )

  // Time axis: gridlines with offsets from the run's creation.
  const step = tickStep(span, 8)
  for (let offset = 0; offset <= span; offset += step) {
    const tx = x(start + offset).toFixed(1)
    parts.push(
      `<line x1="${tx}" y1="${top - 6}" x2="${tx}" y2="${top + rows.length * rowHeight}" stroke="#e9ecef"/>`,
      `<text x="${tx}" y="${top - 12}" text-anchor="middle" fill="#868e96">+${escape(formatDuration(offset))}</text>`
    )
  }
  parts.push(
    `<text x="8" y="${top - 12}" fill="#495057" font-weight="600">step</text>`,
    `<text x="${width - 8}" y="${top - 12}" text-anchor="end" fill="#495057" font-weight="600">duration</text>`
  )

  rows.forEach((row, index) => {
    const { entry } = row
    const y = top + index * rowHeight
    const archived = row.generation !== null
    const color = kindColor(entry.kind)
    const entryEnd = entry.completedAt ?? fallbackEnd
    const extent = bar(entry.startedAt, entryEnd)
    const failed = entry.status === "failed"
    const label = `${archived ? `gen ${row.generation} · ` : ""}${glyph[entry.kind]} ${entry.key}`
    const duration = entry.completedAt === null
      ? (run.completedAt === null ? "running" : "unfinished")
      : formatDuration(entry.completedAt - entry.startedAt)
    const entryError = entry.error === null ? "" : ` — ${describeValue(parseJson(entry.error))}`
    const entryTitle = `${entry.key} (${entry.kind}) ${entry.status}, ${entry.attempts} attempt` +
      `${entry.attempts === 1 ? "" : "s"}, started ${formatTime(entry.startedAt)}, ${duration}${entryError}` +
      (archived ? ` — archived by retry, generation ${row.generation}` : "")
    parts.push(
      `<g class="row${archived ? " archived" : ""}" data-key="${escape(entry.key)}" data-kind="${entry.kind}" ` +
        `data-status="${entry.status}" data-generation="${row.generation ?? "current"}"` +
        `${archived ? ` opacity="0.45"` : ""}>`,
      index % 2 === 0 ? `<rect x="0" y="${y}" width="${width}" height="${rowHeight}" fill="#f8f9fa"/>` : "",
      `<text x="8" y="${y + 17}" fill="${archived ? "#868e96" : entry.kind === "compensation" ? color : "#212529"}">` +
        `${escape(label.length > 38 ? `${label.slice(0, 37)}…` : label)}<title>${escape(entryTitle)}</title></text>`,
      `<rect class="span" x="${extent.left.toFixed(1)}" y="${y + 5}" width="${extent.width.toFixed(1)}" height="16" ` +
        `rx="3" fill="${color}" fill-opacity="0.18" stroke="${failed ? colors.failed : color}" stroke-opacity="0.6"` +
        `${entry.kind === "sleep" || entry.kind === "signal" ? ` stroke-dasharray="4 2"` : ""}>` +
        `<title>${escape(entryTitle)}</title></rect>`
    )
    if (row.attempts.length === 0 && entry.status !== "started") {
      // sleeps, signal waits, child runs and patches have no attempts: the entry is the bar
      parts.push(
        `<rect class="attempt" data-outcome="${entry.status}" x="${extent.left.toFixed(1)}" y="${y + 7}" ` +
          `width="${extent.width.toFixed(1)}" height="12" rx="2" fill="${failed ? colors.failed : color}">` +
          `<title>${escape(entryTitle)}</title></rect>`
      )
    }
    for (const attempt of row.attempts) {
      const segment = bar(attempt.startedAt, attempt.endedAt ?? fallbackEnd)
      const took = attempt.endedAt === null ? "no end recorded" : formatDuration(attempt.endedAt - attempt.startedAt)
      const title = `${entry.key} attempt ${attempt.attempt}: ${attempt.outcome}, ${took}` +
        (attempt.error === null ? "" : ` — ${attempt.error}`)
      parts.push(
        `<rect class="attempt" data-outcome="${attempt.outcome}" data-attempt="${attempt.attempt}" ` +
          `x="${segment.left.toFixed(1)}" y="${y + 7}" width="${segment.width.toFixed(1)}" height="12" rx="2" ` +
          `fill="${outcomeColor(entry.kind, attempt.outcome)}" stroke="#fff" stroke-width="0.5">` +
          `<title>${escape(title)}</title></rect>`
      )
    }
    parts.push(
      `<text x="${width - 8}" y="${y + 17}" text-anchor="end" fill="${failed ? colors.failed : "#495057"}">` +
        `${escape(duration)}</text>`,
      `</g>`
    )
  })
  if (rows.length === 0) {
    parts.push(`<text x="${labelWidth}" y="${top + 17}" fill="#868e96">no steps journaled yet</text>`)
  }

  // The run's end, if it has one.
  if (run.completedAt !== null) {
    const ex = x(run.completedAt).toFixed(1)
    parts.push(
      `<line x1="${ex}" y1="${top - 4}" x2="${ex}" y2="${top + rows.length * rowHeight}" stroke="#495057" ` +
        `stroke-dasharray="3 3"><title>run ended ${escape(run.status)} at ${escape(formatTime(run.completedAt))}` +
        `</title></line>`
    )
  }

  // Legend.
  const legend: ReadonlyArray<readonly [string, string, string?]> = [
    ["step attempt", colors.step],
    ["failed attempt", colors.failed],
    ["compensation", colors.compensation],
    ["running", colors.running],
    ["sleep", colors.sleep],
    ["signal wait", colors.signal],
    ["child run", colors.child],
    ["archived (retried)", "#adb5bd", "0.45"]
  ]
  let lx = 8
  const ly = height - legendHeight + 12
  for (const [name, fill, opacity] of legend) {
    parts.push(
      `<rect x="${lx}" y="${ly}" width="14" height="10" rx="2" fill="${fill}"${
        opacity === undefined ? "" : ` opacity="${opacity}"`
      }/>`,
      `<text x="${lx + 19}" y="${ly + 9}" fill="#495057">${escape(name)}</text>`
    )
    lx += 30 + name.length * 6.6
  }
  parts.push(`</svg>`)
  return parts.join("")
}
