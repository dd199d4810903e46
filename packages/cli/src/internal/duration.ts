import * as Duration from "effect/Duration"
import * as Either from "effect/Either"

const units: Record<string, number> = {
  ms: 1,
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000
}

/**
 * Parses an age such as `30d`, `12h`, `90m`, `45s`, `2w` or `500ms` (a positive number and a unit,
 * no space needed).
 */
export const parseAge = (text: string): Either.Either<Duration.Duration, string> => {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$/.exec(text)
  if (match === null) {
    return Either.left(
      `"${text}" is not a duration: write a number and a unit, e.g. 30d, 12h, 90m, 45s, 2w (ms, s, m, h, d, w)`
    )
  }
  const millis = Number(match[1]) * units[match[2]!]!
  return millis > 0 ? Either.right(Duration.millis(millis)) : Either.left(`"${text}" must be longer than zero`)
}
