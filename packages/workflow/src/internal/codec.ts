import type { ParseResult } from "effect"
import * as Effect from "effect/Effect"
import * as Schema from "effect/Schema"

/**
 * JSON text of a value encoded with its Schema. `undefined` (a `Schema.Void` result) is stored as
 * SQL NULL, so every journaled value round-trips.
 */
export const encode = <A, I>(
  schema: Schema.Schema<A, I>,
  value: A
): Effect.Effect<string | null, ParseResult.ParseError> =>
  Effect.map(Schema.encode(schema)(value), (encoded) => encoded === undefined ? null : JSON.stringify(encoded))

/** Decodes journaled JSON text; the error is a readable message. */
export const decode = <A, I>(schema: Schema.Schema<A, I>, text: string | null): Effect.Effect<A, string> =>
  Effect.suspend(() => {
    let json: unknown
    if (text !== null) {
      try {
        json = JSON.parse(text)
      } catch (error) {
        return Effect.fail(`not JSON (${(error as SyntaxError).message})`)
      }
    }
    return Effect.mapError(Schema.decodeUnknown(schema)(json), (error) => error.message)
  })

export const byteLength = (text: string | null): number => text === null ? 0 : Buffer.byteLength(text, "utf8")

/** A field of an entry's `meta` JSON, or undefined when absent or unreadable. */
export const metaField = (meta: string | null, field: string): unknown => {
  if (meta === null) return undefined
  try {
    const parsed: unknown = JSON.parse(meta)
    return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>)[field] : undefined
  } catch {
    return undefined
  }
}

/** A short, human message for an error value (for the execution log). */
export const errorMessage = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const tag = "_tag" in error && typeof error._tag === "string" ? error._tag : undefined
    // a Schema.TaggedError without fields has the message "{  }": nothing to say beyond its tag
    const message = "message" in error && typeof error.message === "string" && !/^\s*(\{\s*\})?\s*$/.test(error.message)
      ? error.message
      : undefined
    if (tag !== undefined && message !== undefined) return `${tag}: ${message}`
    if (message !== undefined) return message
    if (tag !== undefined) {
      if (Object.keys(error).every((key) => key === "_tag")) return tag
      try {
        return `${tag}: ${JSON.stringify(error)}`
      } catch {
        return tag
      }
    }
  }
  try {
    return typeof error === "string" ? error : JSON.stringify(error) ?? String(error)
  } catch {
    return String(error)
  }
}
