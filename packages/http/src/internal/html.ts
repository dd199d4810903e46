/**
 * HTML building blocks of the dashboard: escaping, formatting and the page layout (inline CSS and
 * script; the dashboard loads nothing from elsewhere).
 */

const escapes: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;", "'": "&#39;" }

/** Escapes text for HTML and SVG content and quoted attribute values. */
export const escape = (value: unknown): string => String(value).replace(/[&<>"']/g, (char) => escapes[char]!)

/** A duration in words: `850 ms`, `1.25 s`, `4 min 10 s`, `2 h 5 min`, `3 d 4 h`. */
export const formatDuration = (ms: number): string => {
  if (ms < 1000) return `${Math.round(ms)} ms`
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`
  const seconds = Math.round(ms / 1000)
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${seconds % 60} s`
  const minutes = Math.round(seconds / 60)
  if (minutes < 24 * 60) return `${Math.floor(minutes / 60)} h ${minutes % 60} min`
  const hours = Math.round(minutes / 60)
  return `${Math.floor(hours / 24)} d ${hours % 24} h`
}

/** A time as `2026-01-31 14:05:09.123 UTC`. */
export const formatTime = (ms: number | null): string =>
  ms === null ? "—" : new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC")

/** Badge colours per run status. */
export const statusColors: Record<string, string> = {
  pending: "#868e96",
  running: "#1c7ed6",
  sleeping: "#4dabf7",
  waiting: "#f59f00",
  compensating: "#7048e8",
  succeeded: "#2f9e44",
  failed: "#e03131",
  compensated: "#9c36b5",
  cancelled: "#495057",
  needs_attention: "#e8590c",
  dead: "#c92a2a"
}

export const badge = (status: string): string =>
  `<span class="badge" style="background:${statusColors[status] ?? "#868e96"}">${escape(status)}</span>`

const css = `
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
  color:#212529;background:#f8f9fa}
header{background:#212529;color:#f8f9fa;padding:10px 24px;display:flex;gap:16px;align-items:baseline}
header a{color:#f8f9fa;text-decoration:none;font-weight:600;font-size:16px}
header span{color:#adb5bd}
main{padding:16px 24px;max-width:1240px}
h1{font-size:20px;margin:8px 0 12px;word-break:break-all}
h2{font-size:16px;margin:24px 0 8px}
a{color:#1971c2}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #dee2e6}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e9ecef;vertical-align:top}
th{background:#f1f3f5;font-weight:600;font-size:13px}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.nowrap{white-space:nowrap}
.badge{display:inline-block;color:#fff;border-radius:10px;padding:1px 9px;font-size:12px;font-weight:600;
  white-space:nowrap}
.filters{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0 14px;align-items:center}
.filters a{padding:3px 10px;border:1px solid #ced4da;border-radius:14px;background:#fff;text-decoration:none;
  color:#343a40;font-size:13px}
.filters a.on{background:#343a40;color:#fff;border-color:#343a40}
.filters form{margin-left:auto;display:flex;gap:6px}
.pager{display:flex;gap:16px;margin:12px 0}
.muted{color:#868e96}
.error{color:#c92a2a}
.errbox{background:#fff5f5;border:1px solid #ffc9c9;color:#c92a2a;padding:8px 12px;border-radius:4px;
  white-space:pre-wrap;word-break:break-word}
pre{background:#fff;border:1px solid #dee2e6;padding:8px;overflow:auto;max-height:320px;margin:0;
  white-space:pre-wrap;word-break:break-word}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:4px 16px;margin:0 0 12px}
dl.facts dt{color:#868e96}
dl.facts dd{margin:0}
.chart{background:#fff;border:1px solid #dee2e6;overflow-x:auto}
.actions{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:8px 0}
.actions button{padding:4px 12px;border:1px solid #adb5bd;border-radius:4px;background:#fff;cursor:pointer}
.actions button:hover{background:#f1f3f5}
.actions input,.actions select{padding:3px 6px;border:1px solid #ced4da;border-radius:4px}
#notice{margin:6px 0;min-height:1.4em}
ul.failures{margin:0;padding-left:20px}
ul.failures li{margin:4px 0}
`

/** A whole page: `<head>` with inline CSS, the header bar linking to `base`, then `body`. */
export const page = (options: {
  readonly title: string
  readonly base: string
  readonly body: string
  readonly script?: string | undefined
}): string =>
  `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${escape(options.title)} · Memento</title><style>${css}</style></head>
<body><header><a href="${escape(options.base)}/">Memento</a><span>workflow runs</span></header>
<main>${options.body}</main>${options.script === undefined ? "" : `<script>${options.script}</script>`}</body></html>`
