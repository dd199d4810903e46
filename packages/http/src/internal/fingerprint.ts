import { createHash } from "node:crypto"

/** The most characters an `Idempotency-Key` may have. @internal */
export const maxKeyLength = 255

/** A bare (unquoted) key: token characters of RFC 9110 plus `:`, `/` and `=`. */
const bareKey = /^[A-Za-z0-9!#$%&'*+\-.^_`|~:/=]+$/

/**
 * Parses an `Idempotency-Key` header value: a Structured Field string (`"…"`, printable ASCII,
 * `\"` and `\\` escapes) or a bare token (`[A-Za-z0-9!#$%&'*+-.^_`|~:/=]`). The key must have 1 to
 * 255 characters. Returns the key, or why it is invalid.
 *
 * @internal
 */
export const parseKey = (header: string): { readonly key: string } | { readonly invalid: string } => {
  const value = header.trim()
  let key: string
  if (value.startsWith("\"")) {
    let out = ""
    let i = 1
    let closed = false
    while (i < value.length) {
      const c = value[i]
      const code = value.charCodeAt(i)
      if (c === "\\") {
        const next = value[i + 1]
        if (next !== "\"" && next !== "\\") return { invalid: "a quoted key may only escape \" and \\" }
        out += next
        i += 2
        continue
      }
      if (c === "\"") {
        closed = true
        i++
        break
      }
      if (code < 0x20 || code > 0x7e) return { invalid: "a key may hold only printable ASCII characters" }
      out += c
      i++
    }
    if (!closed) return { invalid: "the quoted key has no closing quote" }
    if (i !== value.length) {
      return { invalid: "the header must hold exactly one key (no parameters, no list)" }
    }
    key = out
  } else {
    if (!bareKey.test(value)) {
      return {
        invalid: "an unquoted key may hold only letters, digits and !#$%&'*+-.^_`|~:/= (quote other keys as a " +
          "Structured Field string)"
      }
    }
    key = value
  }
  if (key.length === 0) return { invalid: "the key is empty" }
  if (key.length > maxKeyLength) return { invalid: `the key has ${key.length} characters, at most ${maxKeyLength}` }
  return { key }
}

/** Whether a content type is JSON (`application/json` or any `+json`). @internal */
export const isJson = (contentType: string | undefined): boolean => {
  if (contentType === undefined) return false
  const type = contentType.split(";")[0]!.trim().toLowerCase()
  return type === "application/json" || type.endsWith("+json")
}

const canonicalize = (value: unknown): unknown => {
  if (Array.isArray(value)) return value.map(canonicalize)
  if (typeof value === "object" && value !== null) {
    const out: Record<string, unknown> = {}
    for (const key of Object.keys(value).sort()) out[key] = canonicalize((value as Record<string, unknown>)[key])
    return out
  }
  return value
}

/**
 * The canonical form of a request body: a JSON body (by content type) that parses is re-serialised
 * with sorted keys and no whitespace, so `{"a":1,"b":2}` and `{ "b": 2, "a": 1 }` are the same
 * request; any other body is its raw bytes.
 *
 * @internal
 */
export const canonicalBody = (body: Uint8Array, contentType: string | undefined): Uint8Array => {
  if (!isJson(contentType) || body.length === 0) return body
  try {
    const parsed: unknown = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(body))
    return new TextEncoder().encode(JSON.stringify(canonicalize(parsed)))
  } catch {
    return body
  }
}

/**
 * SHA-256 (hex) of method, path with query, principal and canonical body. The first three are
 * JSON-encoded as one array, so no value can run into the next.
 *
 * @internal
 */
export const fingerprint = (input: {
  readonly method: string
  readonly url: string
  readonly principal: string
  readonly body: Uint8Array
  readonly contentType: string | undefined
}): string =>
  createHash("sha256")
    .update(JSON.stringify([input.method.toUpperCase(), input.url, input.principal]))
    .update("\n")
    .update(canonicalBody(input.body, input.contentType))
    .digest("hex")
