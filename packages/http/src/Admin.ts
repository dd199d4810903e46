/**
 * The admin HTTP API and the dashboard, as one `@effect/platform` router to mount under a prefix
 * (`/admin`): JSON endpoints over `WorkflowClient` (list, inspect, cancel, resume, retry, signal,
 * stats) and the dashboard pages (`Dashboard`), all behind one auth check.
 *
 * Without an auth check the router refuses to be built unless the `HttpServer` it is served by
 * listens on a loopback address (127.0.0.0/8, ::1) or a Unix socket: an unprotected admin API on a
 * public interface would let anyone cancel runs.
 *
 * @since 0.1.0
 */
import * as HttpIncomingMessage from "@effect/platform/HttpIncomingMessage"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import { WorkflowClient, WorkflowConfig, WorkflowStore } from "@memento/workflow"
import type { WorkflowError } from "@memento/workflow"
import * as Cause from "effect/Cause"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Redacted from "effect/Redacted"
import * as Schema from "effect/Schema"
import { createHash, timingSafeEqual } from "node:crypto"
import * as Dashboard from "./Dashboard.js"
import { detailsView, runView } from "./internal/adminViews.js"
import { scriptHashes } from "./internal/scripts.js"

export type { AttemptView, EntryView, RunDetailsView, RunView } from "./internal/adminViews.js"

/**
 * Decides whether a request may use the admin API and dashboard: `false` answers 401; `true` or a
 * principal name (written to the log with every action it takes) lets it through. A failure of the
 * check itself answers 500 and is logged.
 *
 * @since 0.1.0
 * @category models
 */
export type Auth<E = never, R = never> = (
  request: HttpServerRequest.HttpServerRequest
) => Effect.Effect<boolean | string, E, R>

/**
 * @since 0.1.0
 * @category models
 */
export interface Options<E = never, R = never> {
  /**
   * The auth check. Without one, building the router fails with `AdminAuthRequired` unless the
   * server listens on a loopback address or a Unix socket.
   */
  readonly auth?: Auth<E, R> | undefined
  /** Largest request body (a signal) in bytes. Default: `WorkflowConfig.maxValueBytes` plus 4 KiB. */
  readonly maxBodyBytes?: number | undefined
}

/**
 * The admin router was built without an auth check for a server that listens on a non-loopback
 * address.
 *
 * @since 0.1.0
 * @category errors
 */
export class AdminAuthRequired extends Schema.TaggedError<AdminAuthRequired>("@memento/http/AdminAuthRequired")(
  "AdminAuthRequired",
  { address: Schema.String }
) {
  override get message() {
    return `the Memento admin API and dashboard have no auth check and the server listens on ${this.address}, ` +
      `which is not a loopback address: pass { auth } (for example Admin.bearer(token)) or bind the server to ` +
      `127.0.0.1`
  }
}

/**
 * Whether a server address is reachable only from this machine: a Unix socket, `localhost`, an
 * IPv4 address in 127.0.0.0/8 (also IPv4-mapped, `::ffff:127.0.0.1`) or `::1`.
 *
 * @since 0.1.0
 * @category utils
 */
export const isLoopback = (address: HttpServer.Address): boolean => {
  if (address._tag === "UnixAddress") return true
  const host = address.hostname.toLowerCase().replace(/^\[|\]$/g, "")
  return host === "localhost" ||
    /^127(\.\d{1,3}){3}$/.test(host) ||
    /^::ffff:127(\.\d{1,3}){3}$/.test(host) ||
    host === "::1" ||
    /^(0{1,4}:){7}0{0,3}1$/.test(host)
}

const digest = (text: string) => createHash("sha256").update(text, "utf8").digest()

/**
 * An auth check comparing a bearer token, in constant time, with the request's
 * `Authorization: Bearer <token>` header or, for the dashboard in a browser, the
 * `memento_admin_token` cookie its sign-in form sets. Answers `principal` (default `"admin"`).
 *
 * @since 0.1.0
 * @category auth
 */
export const bearer = (
  token: string | Redacted.Redacted<string>,
  options?: { readonly principal?: string | undefined }
): Auth => {
  const expected = digest(Redacted.isRedacted(token) ? Redacted.value(token) : token)
  const principal = options?.principal ?? "admin"
  return (request) =>
    Effect.sync(() => {
      const header = request.headers["authorization"]
      const match = header === undefined ? null : /^Bearer[ \t]+(\S+)\s*$/i.exec(header)
      let presented = match?.[1]
      if (presented === undefined) {
        const cookie = request.cookies[Dashboard.tokenCookie]
        if (cookie !== undefined) {
          try {
            presented = decodeURIComponent(cookie)
          } catch {
            presented = cookie
          }
        }
      }
      if (presented === undefined || presented.length === 0) return false
      return timingSafeEqual(digest(presented), expected) ? principal : false
    })
}

/** An RFC 9457 problem details response. */
const problem = (
  status: number,
  title: string,
  detail: string,
  extensions: Record<string, unknown> = {},
  headers: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.unsafeJson({ type: "about:blank", title, status, detail, ...extensions }, {
    status,
    contentType: "application/problem+json",
    headers
  })

const html = (body: string, status = 200) =>
  HttpServerResponse.text(body, {
    status,
    contentType: "text/html; charset=utf-8",
    headers: {
      "cache-control": "no-store",
      // inline CSS and the dashboard's own two scripts (by hash) only; nothing from elsewhere, no framing
      "content-security-policy":
        `default-src 'none'; style-src 'unsafe-inline'; script-src ${scriptHashes}; img-src data:; ` +
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
      "x-content-type-options": "nosniff",
      "referrer-policy": "same-origin"
    }
  })

const pathOf = (url: string) => {
  const query = url.indexOf("?")
  return query === -1 ? url : url.slice(0, query)
}

/** The path the router is mounted at (`/admin`), from the original URL and the mount-relative one. */
const basePath = (request: HttpServerRequest.HttpServerRequest): string => {
  const original = pathOf(request.originalUrl)
  const relative = pathOf(request.url)
  let base = ""
  if (relative === "/" && !original.endsWith("/")) base = original
  else if (original.endsWith(relative)) base = original.slice(0, original.length - relative.length)
  return base.replace(/\/+$/, "")
}

const listStatuses = new Set<string>(WorkflowStore.allStatuses)

/** Decoded `GET /api/runs` query: status (comma-separated or repeated), workflow, limit, cursor. */
interface ListQuery {
  readonly status: ReadonlyArray<WorkflowStore.RunStatus>
  readonly workflow: string | undefined
  readonly limit: number
  readonly cursor: string | undefined
}

/** Bad input, answered with `status` (400 unless said otherwise). */
class BadRequest extends Schema.TaggedError<BadRequest>()("BadRequest", {
  status: Schema.optional(Schema.Number),
  title: Schema.String,
  detail: Schema.String,
  errors: Schema.optional(Schema.Array(Schema.Struct({ path: Schema.String, message: Schema.String })))
}) {}

const defaultLimit = 50
const maxLimit = 500

const single = (
  params: Readonly<Record<string, string | ReadonlyArray<string>>>,
  name: string
): Effect.Effect<string | undefined, BadRequest> => {
  const value = params[name]
  if (value === undefined || typeof value === "string") return Effect.succeed(value === "" ? undefined : value)
  return Effect.fail(new BadRequest({ title: "Invalid query", detail: `"${name}" may be given once` }))
}

const listQuery: Effect.Effect<ListQuery, BadRequest, HttpServerRequest.ParsedSearchParams> = Effect.gen(function*() {
  const params = yield* HttpServerRequest.ParsedSearchParams
  const raw = params["status"]
  const statuses = (raw === undefined ? [] : typeof raw === "string" ? [raw] : raw)
    .flatMap((value) => value.split(","))
    .map((value) => value.trim())
    .filter((value) => value.length > 0)
  const unknown = statuses.filter((status) => !listStatuses.has(status))
  if (unknown.length > 0) {
    return yield* new BadRequest({
      title: "Invalid query",
      detail: `unknown status ${unknown.map((s) => JSON.stringify(s)).join(", ")}; statuses are ` +
        WorkflowStore.allStatuses.join(", ")
    })
  }
  const limitText = yield* single(params, "limit")
  let limit = defaultLimit
  if (limitText !== undefined) {
    limit = Number(limitText)
    if (!/^\d+$/.test(limitText) || limit < 1 || limit > maxLimit) {
      return yield* new BadRequest({
        title: "Invalid query",
        detail: `"limit" must be an integer from 1 to ${maxLimit}, got ${JSON.stringify(limitText)}`
      })
    }
  }
  return {
    status: [...new Set(statuses)] as Array<WorkflowStore.RunStatus>,
    workflow: yield* single(params, "workflow"),
    limit,
    cursor: yield* single(params, "cursor")
  }
})

const listFilter = (query: ListQuery): WorkflowStore.ListFilter => ({
  limit: query.limit,
  ...(query.status.length === 0 ? {} : { status: query.status }),
  ...(query.workflow === undefined ? {} : { workflow: query.workflow }),
  ...(query.cursor === undefined ? {} : { cursor: query.cursor })
})

const runId = Effect.map(HttpRouter.params, (params) => params["id"] ?? "")

const RetryBody = Schema.Struct({ fromStep: Schema.optional(Schema.String.pipe(Schema.minLength(1))) })

const SignalBody = Schema.Struct({
  name: Schema.String.pipe(Schema.minLength(1)),
  payload: Schema.Unknown,
  signalId: Schema.optional(Schema.String.pipe(Schema.minLength(1)))
})

type ClientError =
  | WorkflowError.RunNotFound
  | WorkflowError.InvalidRunState
  | WorkflowError.UnknownStep
  | WorkflowError.JournalDecodeError
  | WorkflowError.InvalidPayload
  | WorkflowError.PayloadTooLarge
  | WorkflowError.StoreError
  | BadRequest

const apiErrors = <A, R>(
  effect: Effect.Effect<A, ClientError, R>
): Effect.Effect<A | HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.catchTags(effect, {
    BadRequest: (error) =>
      Effect.succeed(
        problem(
          error.status ?? 400,
          error.title,
          error.detail,
          error.errors === undefined ? {} : { errors: error.errors }
        )
      ),
    RunNotFound: (error) => Effect.succeed(problem(404, "Run not found", error.message, { runId: error.workflowId })),
    InvalidRunState: (error) =>
      Effect.succeed(
        problem(409, "Invalid run state", error.message, { runId: error.workflowId, runStatus: error.status })
      ),
    UnknownStep: (error) =>
      Effect.succeed(problem(400, "Unknown step", error.message, { runId: error.workflowId, steps: error.steps })),
    // the run's stored journal is damaged (retry cannot plan from it): a state of the run, not of the request
    JournalDecodeError: (error) =>
      Effect.succeed(
        problem(409, "Journal does not decode", error.message, { runId: error.workflowId, stepKey: error.stepKey })
      ),
    InvalidPayload: (error) => Effect.succeed(problem(400, "Invalid payload", error.message)),
    PayloadTooLarge: (error) => Effect.succeed(problem(413, "Payload too large", error.message)),
    StoreError: (error) => Effect.succeed(problem(503, "Storage unavailable", error.message))
  })

/**
 * Reads a JSON body with `schema`. Requires `Content-Type: application/json`: a cross-site HTML
 * form cannot send that type without a CORS preflight, which this router never grants, so browser
 * credentials (the token cookie) cannot be used for cross-site requests.
 */
const jsonBody = <A, I>(schema: Schema.Schema<A, I>, maxBytes: number, emptyAs?: unknown) =>
  Effect.gen(function*() {
    const request = yield* HttpServerRequest.HttpServerRequest
    const type = (request.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase()
    if (type !== "application/json") {
      return yield* new BadRequest({
        status: 415,
        title: "Unsupported content type",
        detail: `admin actions need "Content-Type: application/json", got ${JSON.stringify(type || "none")}`
      })
    }
    const length = Number(request.headers["content-length"] ?? 0)
    if (length > maxBytes) {
      return yield* new BadRequest({
        status: 413,
        title: "Body too large",
        detail: `the body has ${length} bytes, over the limit of ${maxBytes}`
      })
    }
    const text = yield* request.text.pipe(
      HttpIncomingMessage.withMaxBodySize(Option.some(maxBytes)),
      Effect.mapError((error) =>
        new BadRequest({ title: "Unreadable body", detail: `the body could not be read: ${error.message}` })
      )
    )
    let json: unknown = emptyAs
    if (text.trim().length > 0 || emptyAs === undefined) {
      try {
        json = JSON.parse(text)
      } catch (error) {
        return yield* new BadRequest({ title: "Invalid JSON", detail: `the body is not JSON: ${String(error)}` })
      }
    }
    return yield* Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(json).pipe(
      Effect.mapError((error) => {
        const errors = ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
          path: issue.path.join("."),
          message: issue.message
        }))
        const first = errors[0]
        return new BadRequest({
          title: "Invalid body",
          detail: first === undefined ? "the body is invalid" : `${first.path || "body"}: ${first.message}`,
          errors
        })
      })
    )
  })

/**
 * Builds the admin router: the JSON API under `/api` and the dashboard at `/` and `/runs/:id`,
 * relative to where it is mounted (`HttpRouter.mount("/admin", adminRouter)`).
 *
 * - `GET /api/runs?status=&workflow=&limit=&cursor=` — runs newest first (`status` may list several,
 *   comma-separated); `{ runs, nextCursor }`.
 * - `GET /api/runs/:id` — the run with its journal, attempts, archived generations, signals and
 *   child runs.
 * - `POST /api/runs/:id/cancel`, `/resume`, `/retry` (body `{ fromStep? }`), `/signal` (body
 *   `{ name, payload, signalId? }`) — the run after the action (`{ duplicate }` for a signal).
 * - `GET /api/stats` — run counts by workflow and status.
 *
 * Errors are `application/problem+json`: 400 bad input (also an unknown `fromStep`, with the run's
 * steps), 401 without valid credentials, 404 unknown run, 409 an action the run's status does not
 * allow, 413 too large, 415 an action without `Content-Type: application/json`, 503 storage down.
 *
 * Fails with `AdminAuthRequired` when `options.auth` is absent and the server in context does not
 * listen on a loopback address.
 *
 * @since 0.1.0
 * @category constructors
 */
export const router = <E = never, R = never>(
  options: Options<E, R> = {}
): Effect.Effect<
  HttpRouter.HttpRouter<never, WorkflowClient.WorkflowClient | R>,
  AdminAuthRequired,
  HttpServer.HttpServer
> =>
  Effect.gen(function*() {
    const server = yield* HttpServer.HttpServer
    const auth = options.auth
    if (auth === undefined && !isLoopback(server.address)) {
      return yield* new AdminAuthRequired({ address: HttpServer.formatAddress(server.address) })
    }
    const settings = yield* WorkflowConfig.WorkflowConfig
    const maxBodyBytes = options.maxBodyBytes ?? settings.maxValueBytes + 4096

    /** Runs `handler` for an authorized request; otherwise 401 (a sign-in page for the dashboard). */
    const guarded = <R2>(
      kind: "api" | "page",
      handler: (principal: string) => Effect.Effect<HttpServerResponse.HttpServerResponse, never, R2>
    ) =>
      Effect.gen(function*() {
        if (auth === undefined) return yield* handler("local")
        const request = yield* HttpServerRequest.HttpServerRequest
        const verdict = yield* Effect.exit(auth(request))
        if (Exit.isFailure(verdict)) {
          if (Cause.isInterruptedOnly(verdict.cause)) return yield* Effect.interrupt
          yield* Effect.logError("Memento admin: the auth check failed", verdict.cause)
          return kind === "api"
            ? problem(500, "Auth check failed", "the auth check failed; see the service log")
            : html(`<!doctype html><title>Error</title><p>The auth check failed; see the service log.</p>`, 500)
        }
        if (verdict.value === false) {
          return kind === "api"
            ? problem(401, "Unauthorized", "the admin API needs valid credentials", {}, {
              "www-authenticate": `Bearer realm="memento-admin"`
            })
            : html(Dashboard.signInPage({ base: basePath(request) }), 401)
        }
        return yield* handler(verdict.value === true ? "authenticated" : verdict.value)
      })

    const api = <R2>(
      handler: (principal: string) => Effect.Effect<HttpServerResponse.HttpServerResponse, ClientError, R2>
    ) => guarded("api", (principal) => apiErrors(handler(principal)))

    /** An action on one run, logged with the principal that took it. */
    const action = <A, R2>(
      name: string,
      run: (id: string) => Effect.Effect<A, ClientError, R2>,
      respond: (result: A) => unknown
    ) =>
      api((principal) =>
        Effect.gen(function*() {
          const id = yield* runId
          const result = yield* run(id)
          yield* Effect.logInfo(`Memento admin: ${name}`).pipe(
            Effect.annotateLogs({ "workflow.id": id, principal })
          )
          return HttpServerResponse.unsafeJson(respond(result))
        })
      )

    const list = api(() =>
      Effect.gen(function*() {
        const query = yield* listQuery
        const client = yield* WorkflowClient.WorkflowClient
        const page = yield* client.list(listFilter(query))
        return HttpServerResponse.unsafeJson({ runs: page.runs.map(runView), nextCursor: page.nextCursor })
      })
    )

    const inspect = api(() =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        return HttpServerResponse.unsafeJson(detailsView(yield* client.inspect(yield* runId)))
      })
    )

    const stats = api(() =>
      Effect.gen(function*() {
        const client = yield* WorkflowClient.WorkflowClient
        return HttpServerResponse.unsafeJson({ counts: yield* client.stats })
      })
    )

    const cancel = action("cancel", (id) =>
      Effect.gen(function*() {
        yield* jsonBody(Schema.Struct({}), maxBodyBytes, {})
        const client = yield* WorkflowClient.WorkflowClient
        return yield* client.cancel(id)
      }), runView)

    const resume = action("resume", (id) =>
      Effect.gen(function*() {
        yield* jsonBody(Schema.Struct({}), maxBodyBytes, {})
        const client = yield* WorkflowClient.WorkflowClient
        return yield* client.resume(id)
      }), runView)

    const retry = action("retry", (id) =>
      Effect.gen(function*() {
        const body = yield* jsonBody(RetryBody, maxBodyBytes, {})
        const client = yield* WorkflowClient.WorkflowClient
        return yield* client.retry(id, body.fromStep === undefined ? {} : { fromStep: body.fromStep })
      }), runView)

    const signal = action("signal", (id) =>
      Effect.gen(function*() {
        const body = yield* jsonBody(SignalBody, maxBodyBytes)
        const client = yield* WorkflowClient.WorkflowClient
        const sent = yield* client.signal(id, body.name, body.payload, { signalId: body.signalId })
        return { runId: id, name: body.name, duplicate: sent.duplicate }
      }), (result) => result)

    const runsPage = guarded("page", () =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const base = basePath(request)
        const query = yield* listQuery
        const client = yield* WorkflowClient.WorkflowClient
        const page = yield* client.list(listFilter(query))
        const counts = yield* client.stats
        const now = yield* Clock.currentTimeMillis
        return html(Dashboard.runsPage({
          base,
          runs: page.runs,
          nextCursor: page.nextCursor,
          status: query.status,
          workflow: query.workflow,
          limit: query.limit,
          paged: query.cursor !== undefined,
          stats: counts,
          now
        }))
      }).pipe(pageErrors))

    const runPage = guarded("page", () =>
      Effect.gen(function*() {
        const request = yield* HttpServerRequest.HttpServerRequest
        const client = yield* WorkflowClient.WorkflowClient
        const details = yield* client.inspect(yield* runId)
        const now = yield* Clock.currentTimeMillis
        return html(Dashboard.runPage(details, { base: basePath(request), now }))
      }).pipe(pageErrors))

    return HttpRouter.empty.pipe(
      HttpRouter.get("/", runsPage),
      HttpRouter.get("/runs/:id", runPage),
      HttpRouter.get("/api/runs", list),
      HttpRouter.get("/api/runs/:id", inspect),
      HttpRouter.post("/api/runs/:id/cancel", cancel),
      HttpRouter.post("/api/runs/:id/resume", resume),
      HttpRouter.post("/api/runs/:id/retry", retry),
      HttpRouter.post("/api/runs/:id/signal", signal),
      HttpRouter.get("/api/stats", stats)
    )
  })

/** Dashboard errors as small HTML pages with the problem's status. */
const pageErrors = <R>(
  effect: Effect.Effect<HttpServerResponse.HttpServerResponse, ClientError, R>
): Effect.Effect<HttpServerResponse.HttpServerResponse, never, R> =>
  Effect.flatMap(apiErrors(effect), (response) => {
    if (response.status < 400) return Effect.succeed(response)
    const body = response.body
    let detail = `HTTP ${response.status}`
    if (body._tag === "Uint8Array") {
      try {
        const parsed = JSON.parse(new TextDecoder().decode(body.body)) as { readonly detail?: unknown }
        if (typeof parsed.detail === "string") detail = parsed.detail
      } catch {
        // keep the status line
      }
    }
    return Effect.succeed(html(
      `<!doctype html><meta charset="utf-8"><title>${response.status}</title>` +
        `<p style="font-family:system-ui,sans-serif">${detail.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)}</p>`,
      response.status
    ))
  })

/**
 * Serves the admin router alone, mounted at `prefix` (default `/admin`), on the `HttpServer` in
 * context, with problem+json 404s for unknown paths — for an admin server on its own port. To add
 * the admin router to an existing app, use `router` and `HttpRouter.mount`.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <E = never, R = never>(
  options: Options<E, R> & { readonly prefix?: `/${string}` | undefined } = {}
): Layer.Layer<never, AdminAuthRequired, HttpServer.HttpServer | WorkflowClient.WorkflowClient | R> =>
  Layer.unwrapEffect(Effect.map(router(options), (admin) => {
    const prefix = options.prefix ?? "/admin"
    const app = (prefix === "/" ? admin : HttpRouter.empty.pipe(HttpRouter.mount(prefix, admin))).pipe(
      Effect.catchTag(
        "RouteNotFound",
        (error) =>
          Effect.succeed(problem(404, "Not found", `no route for ${error.request.method} ${pathOf(error.request.url)}`))
      )
    )
    return HttpServer.serve(app)
  }))
