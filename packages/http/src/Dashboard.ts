/**
 * The dashboard's pages, rendered on the server as plain HTML with inline CSS, inline SVG and a
 * little inline script: no build step, nothing loaded from another origin. `Admin.router` serves
 * them behind its auth check (`GET /` lists runs, `GET /runs/:id` shows one); the functions here
 * only render, so they can be reused or tested on their own. Every value that comes from a run
 * (IDs, payloads, errors, step names) is HTML-escaped.
 *
 * @since 0.1.0
 */
import { WorkflowStore } from "@memento/workflow"
import { describeRunError, describeValue, parseJson } from "./internal/adminViews.js"
import { badge, escape, formatDuration, formatTime, page, statusColors } from "./internal/html.js"
import { runScript, signInScript, tokenCookie as tokenCookie_ } from "./internal/scripts.js"
import * as Timeline from "./internal/timeline.js"

/**
 * The cookie `Admin.bearer` also accepts the token from; the dashboard's sign-in form sets it.
 *
 * @since 0.1.0
 * @category constants
 */
export const tokenCookie: string = tokenCookie_

/**
 * Renders a run's timeline as an SVG Gantt chart: one row per journal entry (steps, compensations,
 * sleeps, signal waits, child runs), a pale bar from the entry's start to its completion, and each
 * attempt as a solid segment — green for a step that succeeded, purple for a compensation, red for
 * a failed attempt (its error in the segment's tooltip), blue while running. Entries archived by
 * `retry` are drawn greyed above the current ones, labelled with their generation. Bars of
 * unfinished entries end at `now`.
 *
 * @since 0.1.0
 * @category rendering
 */
export const timeline: (details: WorkflowStore.RunDetails, options: Timeline.TimelineOptions) => string =
  Timeline.render

/**
 * @since 0.1.0
 * @category models
 */
export interface RunsPageOptions {
  /** The path the admin router is mounted at, without a trailing slash (`""` at the root). */
  readonly base: string
  readonly runs: ReadonlyArray<WorkflowStore.RunRecord>
  readonly nextCursor: string | null
  /** The filter the page shows; kept in the filter and pagination links. */
  readonly status: ReadonlyArray<WorkflowStore.RunStatus>
  readonly workflow: string | undefined
  readonly limit: number
  /** Whether this is a later page (a "first page" link is shown). */
  readonly paged: boolean
  /** Run counts by workflow and status, for the filter links. */
  readonly stats: ReadonlyArray<WorkflowStore.RunCount>
  readonly now: number
}

const query = (params: Record<string, string | undefined>): string => {
  const search = new URLSearchParams()
  for (const [name, value] of Object.entries(params)) {
    if (value !== undefined && value !== "") search.set(name, value)
  }
  const text = search.toString()
  return text === "" ? "" : `?${text}`
}

const runLink = (base: string, id: string) => `${base}/runs/${encodeURIComponent(id)}`

const truncate = (text: string, max: number) => text.length > max ? `${text.slice(0, max - 1)}…` : text

const allStatuses = WorkflowStore.allStatuses

/**
 * The runs list: filter links by status (with counts), a workflow filter, one row per run
 * (newest first) and keyset pagination.
 *
 * @since 0.1.0
 * @category rendering
 */
export const runsPage = (options: RunsPageOptions): string => {
  const { base } = options
  const workflow = options.workflow
  const statusParam = options.status.join(",")
  const countOf = (status: WorkflowStore.RunStatus | undefined) =>
    options.stats
      .filter((count) =>
        (status === undefined || count.status === status) &&
        (workflow === undefined || count.workflow === workflow)
      )
      .reduce((sum, count) => sum + count.count, 0)
  const limit = options.limit === 50 ? undefined : String(options.limit)
  const filterLink = (status: WorkflowStore.RunStatus | undefined) => {
    const on = status === undefined
      ? options.status.length === 0
      : options.status.length === 1 && options.status[0] === status
    const href = `${base}/${query({ status, workflow, limit })}`
    return `<a class="${on ? "on" : ""}" data-status="${status ?? "all"}" href="${escape(href)}">` +
      `${status === undefined ? "all" : escape(status)} <span class="muted">${countOf(status)}</span></a>`
  }
  const workflows = [...new Set(options.stats.map((count) => count.workflow))].sort()
  const workflowSelect = `<form method="get" action="${escape(base)}/">` +
    (statusParam === "" ? "" : `<input type="hidden" name="status" value="${escape(statusParam)}">`) +
    `<select name="workflow" aria-label="workflow"><option value="">all workflows</option>` +
    workflows.map((name) =>
      `<option value="${escape(name)}"${name === workflow ? " selected" : ""}>${escape(name)}</option>`
    ).join("") +
    `</select><button type="submit">Filter</button></form>`
  const rows = options.runs.map((run) => {
    const ended = run.completedAt ?? (allStatuses.indexOf(run.status) < 5 ? options.now : run.updatedAt)
    const error = describeRunError(run.error)
    return `<tr class="run" data-id="${escape(run.id)}" data-status="${run.status}">` +
      `<td><a href="${escape(runLink(base, run.id))}">${escape(truncate(run.id, 60))}</a></td>` +
      `<td class="nowrap">${escape(run.workflow)}</td><td>${badge(run.status)}</td>` +
      `<td class="nowrap">${escape(formatTime(run.createdAt))}</td>` +
      `<td class="num">${escape(formatDuration(Math.max(0, ended - run.createdAt)))}</td>` +
      `<td class="error">${error === null ? "" : escape(truncate(error, 120))}</td></tr>`
  }).join("")
  const next = options.nextCursor === null
    ? ""
    : `<a rel="next" href="${
      escape(`${base}/${query({ status: statusParam, workflow, limit, cursor: options.nextCursor })}`)
    }">Next page →</a>`
  const first = options.paged
    ? `<a href="${escape(`${base}/${query({ status: statusParam, workflow, limit })}`)}">← First page</a>`
    : ""
  const body = `<h1>Runs${options.status.length === 0 ? "" : ` · ${escape(options.status.join(", "))}`}` +
    `${workflow === undefined ? "" : ` · ${escape(workflow)}`}</h1>` +
    `<nav class="filters">${filterLink(undefined)}${allStatuses.map(filterLink).join("")}${workflowSelect}</nav>` +
    (options.runs.length === 0
      ? `<p class="muted">No runs match this filter.</p>`
      : `<table class="runs"><thead><tr><th>Run ID</th><th>Workflow</th><th>Status</th><th>Created</th>` +
        `<th>Duration</th><th>Error</th></tr></thead><tbody>${rows}</tbody></table>`) +
    `<div class="pager">${first}${next}</div>`
  return page({ title: "Runs", base, body })
}

const pre = (value: unknown) => `<pre>${escape(JSON.stringify(value, null, 2) ?? "null")}</pre>`

/**
 * @since 0.1.0
 * @category models
 */
export interface RunPageOptions {
  /** The path the admin router is mounted at, without a trailing slash (`""` at the root). */
  readonly base: string
  /** The current time (epoch ms): where bars of unfinished entries end. */
  readonly now: number
}

/**
 * One run: its status and error, the timeline picture, the failed attempts with their errors, the
 * journal, signals, child runs, payload and output, and buttons for the admin actions that apply
 * to its status (cancel, resume, retry from a step, signal).
 *
 * @since 0.1.0
 * @category rendering
 */
export const runPage = (details: WorkflowStore.RunDetails, options: RunPageOptions): string => {
  const { base, now } = options
  const run = details.run
  const error = describeRunError(run.error)
  const finished = run.completedAt !== null
  const duration = formatDuration(Math.max(0, (run.completedAt ?? now) - run.createdAt))
  const entries = [...details.entries].sort((a, b) => a.seq - b.seq)
  const failedAttempts = [
    ...details.archivedAttempts.map((attempt) => ({ ...attempt, generation: attempt.generation as number | null })),
    ...details.attempts.map((attempt) => ({ ...attempt, generation: null as number | null }))
  ].filter((attempt) => attempt.outcome === "failed" || attempt.outcome === "retrying")
    .sort((a, b) => a.startedAt - b.startedAt)

  const facts = `<dl class="facts">` +
    `<dt>Workflow</dt><dd>${escape(run.workflow)}</dd>` +
    `<dt>Status</dt><dd>${badge(run.status)}${run.cancelRequested && !finished ? " (cancel requested)" : ""}</dd>` +
    `<dt>Created</dt><dd>${escape(formatTime(run.createdAt))}</dd>` +
    `<dt>${finished ? "Completed" : "Updated"}</dt><dd>${escape(formatTime(run.completedAt ?? run.updatedAt))}</dd>` +
    `<dt>Duration</dt><dd>${escape(duration)}${finished ? "" : " so far"}</dd>` +
    (run.parentId === null
      ? ""
      : `<dt>Parent</dt><dd><a href="${escape(runLink(base, run.parentId))}">${escape(run.parentId)}</a></dd>`) +
    (run.recoveries === 0 ? "" : `<dt>Recoveries</dt><dd>${run.recoveries}</dd>`) +
    (run.leaseOwner === null ? "" : `<dt>Worker</dt><dd>${escape(run.leaseOwner)}</dd>`) +
    `</dl>`

  const retryable = run.status === "failed" || run.status === "compensated" || run.status === "cancelled"
  const cancellable = ["pending", "running", "sleeping", "waiting"].includes(run.status)
  const parked = run.status === "needs_attention" || run.status === "dead"
  const stepKeys = entries.filter((entry) => entry.kind !== "compensation" && entry.kind !== "patch")
    .map((entry) => entry.key)
  const actions = `<div class="actions">` +
    (cancellable ? `<button data-action="cancel">Cancel</button>` : "") +
    (parked ? `<button data-action="resume">Resume</button>` : "") +
    (retryable
      ? `<button data-action="retry">Retry</button><label>from <select id="from-step">` +
        `<option value="">the failed step</option>` +
        stepKeys.map((key) => `<option value="${escape(key)}">${escape(key)}</option>`).join("") +
        `</select></label>`
      : "") +
    (finished
      ? ""
      : `<input id="signal-name" placeholder="signal name" aria-label="signal name">` +
        `<input id="signal-payload" placeholder="payload (JSON)" aria-label="signal payload">` +
        `<input id="signal-id" placeholder="signal ID (optional)" aria-label="signal ID">` +
        `<button data-action="signal">Send signal</button>`) +
    `</div><div id="notice"></div>`

  const failures = failedAttempts.length === 0
    ? ""
    : `<h2>Failed attempts</h2><ul class="failures">` +
      failedAttempts.map((attempt) =>
        `<li class="failure" data-key="${escape(attempt.key)}" data-attempt="${attempt.attempt}">` +
        `<strong>${escape(attempt.key)}</strong> attempt ${attempt.attempt}` +
        `${attempt.generation === null ? "" : ` <span class="muted">(generation ${attempt.generation})</span>`}` +
        ` <span class="muted">at ${escape(formatTime(attempt.startedAt))}</span>` +
        `<div class="errbox">${escape(attempt.error ?? "(no error recorded)")}</div></li>`
      ).join("") + `</ul>`

  const attemptsOf = (key: string) => details.attempts.filter((attempt) => attempt.key === key)
  const journal = entries.length === 0
    ? `<p class="muted">Nothing journaled yet.</p>`
    : `<table class="journal"><thead><tr><th>#</th><th>Step</th><th>Kind</th><th>Status</th><th>Attempts</th>` +
      `<th>Started</th><th>Duration</th><th>Result</th></tr></thead><tbody>` +
      entries.map((entry) => {
        const result = entry.error !== null
          ? `<span class="error">${escape(truncate(describeValue(parseJson(entry.error)), 200))}</span>`
          : entry.output !== null
          ? `<code>${escape(truncate(entry.output, 200))}</code>`
          : ""
        const tries = Math.max(entry.attempts, attemptsOf(entry.key).length)
        return `<tr data-key="${escape(entry.key)}"><td class="num">${entry.seq}</td><td>${escape(entry.key)}</td>` +
          `<td>${entry.kind}</td><td>${escape(entry.status)}</td><td class="num">${tries}</td>` +
          `<td>${escape(formatTime(entry.startedAt))}</td>` +
          `<td class="num">${
            entry.completedAt === null ? "—" : escape(formatDuration(entry.completedAt - entry.startedAt))
          }</td><td>${result}</td></tr>`
      }).join("") + `</tbody></table>`

  const signals = details.signals.length === 0
    ? ""
    : `<h2>Signals</h2><table class="signals"><thead><tr><th>Name</th><th>Signal ID</th><th>Received</th>` +
      `<th>Payload</th></tr></thead><tbody>` +
      [...details.signals].sort((a, b) => a.seq - b.seq).map((signal) =>
        `<tr><td>${escape(signal.name)}</td><td>${escape(signal.signalId)}</td>` +
        `<td>${escape(formatTime(signal.receivedAt))}</td>` +
        `<td><code>${escape(truncate(signal.payload, 200))}</code></td></tr>`
      ).join("") + `</tbody></table>`

  const children = details.children.length === 0
    ? ""
    : `<h2>Child runs</h2><table><tbody>` +
      details.children.map((child) =>
        `<tr><td><a href="${escape(runLink(base, child.id))}">${escape(child.id)}</a></td>` +
        `<td>${escape(child.workflow)}</td><td>${badge(child.status)}</td></tr>`
      ).join("") + `</tbody></table>`

  const body = `<div data-run-id="${escape(run.id)}" data-base="${escape(base)}" data-status="${run.status}">` +
    `<p><a href="${escape(base)}/">← all runs</a></p>` +
    `<h1>Run ${escape(run.id)}</h1>${facts}` +
    (error === null
      ? ""
      : `<div class="errbox run-error" style="border-left:4px solid ${statusColors[run.status] ?? "#c92a2a"}">` +
        `${escape(error)}</div>`) +
    actions +
    `<h2>Timeline</h2><div class="chart">${timeline(details, { now })}</div>` +
    failures +
    `<h2>Journal</h2>${journal}${signals}${children}` +
    `<h2>Payload</h2>${pre(parseJson(run.payload))}` +
    (run.output === null ? "" : `<h2>Output</h2>${pre(parseJson(run.output))}`) +
    `</div>`
  return page({ title: `Run ${run.id}`, base, body, script: runScript })
}

/**
 * The page a dashboard request without valid credentials gets (status 401): a form that stores a
 * bearer token in the `memento_admin_token` cookie (SameSite=Strict, scoped to the dashboard's
 * path) and reloads.
 *
 * @since 0.1.0
 * @category rendering
 */
export const signInPage = (options: { readonly base: string }): string =>
  page({
    title: "Sign in",
    base: options.base,
    body: `<h1>Sign in</h1><p>The Memento dashboard needs the admin token.</p>` +
      `<form id="sign-in" data-path="${escape(options.base === "" ? "/" : options.base)}">` +
      `<input id="token" type="password" autocomplete="current-password" placeholder="admin token" ` +
      `aria-label="admin token" size="40"> <button type="submit">Sign in</button></form>`,
    script: signInScript
  })
