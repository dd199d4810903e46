import * as HttpServerResponse from "@effect/platform/HttpServerResponse"

/** @internal */
export interface Problem {
  readonly type: string
  readonly title: string
  readonly status: number
  readonly detail: string
}

/**
 * An RFC 9457 problem details response (`application/problem+json`), never stored or cached.
 *
 * @internal
 */
export const response = (
  problem: Problem,
  headers: Record<string, string> = {}
): HttpServerResponse.HttpServerResponse =>
  HttpServerResponse.text(JSON.stringify(problem), {
    status: problem.status,
    contentType: "application/problem+json",
    headers: { "cache-control": "no-store", ...headers }
  })
