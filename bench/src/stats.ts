/** Nearest-rank percentile of `values` (p in 0..100). */
export const percentile = (values: ReadonlyArray<number>, p: number): number => {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]
}

export const median = (values: ReadonlyArray<number>): number => percentile(values, 50)

export const fmt = (value: number, digits = 2): string => Number.isFinite(value) ? value.toFixed(digits) : "–"

/** A Markdown table (also readable as plain text). */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    "| " + cells.map((cell, i) => i === 0 ? cell.padEnd(widths[i]) : cell.padStart(widths[i])).join(" | ") + " |"
  const rule = "|" + widths.map((w, i) => i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":").join("|") + "|"
  return [line(header), rule, ...rows.map(line)].join("\n")
}
