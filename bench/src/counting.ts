/**
 * A `pg` pool that counts every statement its connections send (BEGIN and COMMIT included), by
 * kind: the round trips of each store operation, counted at the driver.
 */
import pg from "pg"

export type Kind =
  | "create"
  | "claim"
  | "load"
  | "commit"
  | "get"
  | "heartbeat"
  | "release"
  | "signal"
  | "inspect"
  | "raw insert"
  | "begin/commit"
  | "other"

const classify = (text: string): Kind => {
  if (text.includes("bench_raw")) return "raw insert"
  if (/^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)/i.test(text)) return "begin/commit"
  if (text.includes("fence AS")) return "commit"
  if (text.includes("SKIP LOCKED")) return "claim"
  if (text.includes("ON CONFLICT (id) DO NOTHING")) return "create"
  if (text.includes("AS attempts")) return "inspect"
  if (text.includes("json_agg")) return "load"
  if (/UPDATE \S*runs r SET lease_expires_at = /.test(text)) return "heartbeat"
  if (text.includes("lease_owner = NULL, lease_expires_at = NULL")) return "release"
  if (/INSERT INTO \S*signals/.test(text)) return "signal"
  if (/^\s*SELECT [^(]* FROM \S*runs WHERE id = (\$1|ANY\(\$1)/.test(text)) return "get"
  return "other"
}

export interface Counter {
  readonly pool: pg.Pool
  /** Statements by kind since the last `reset`. */
  readonly snapshot: () => Record<string, number>
  readonly total: () => number
  readonly reset: () => void
  /** Statement texts classified as `other` (to check the classifier). */
  readonly others: () => ReadonlyArray<string>
  /** Starts (true) or stops (false) recording statement timings; returns what was recorded. */
  readonly trace: (on: boolean) => ReadonlyArray<TraceEntry>
  /** Starts (true) or stops (false) recording the commits sent as named statements; returns them. */
  readonly capture: (on: boolean) => ReadonlyArray<CapturedStatement>
}

/** A named statement as the store sent it: text and values, to be sent again (`floor.ts`). */
export interface CapturedStatement {
  readonly name: string
  readonly text: string
  readonly values: ReadonlyArray<unknown>
}

export interface TraceEntry {
  readonly kind: Kind
  readonly start: number
  end: number
}

export const countingPool = (url: string, max: number): Counter => {
  let counts: Record<string, number> = {}
  let others: Array<string> = []
  let trace: Array<TraceEntry> | undefined
  let captured: Array<CapturedStatement> | undefined
  const pool = new pg.Pool({ connectionString: url, max })
  pool.on("error", () => {})
  pool.on("connect", (connection) => {
    const query = connection.query.bind(connection) as (...args: Array<unknown>) => unknown
    ;(connection as unknown as { query: (...args: Array<unknown>) => unknown }).query = (...args) => {
      const first = args[0]
      const text = typeof first === "string"
        ? first
        : typeof first === "object" && first !== null && "text" in first
        ? String(first.text)
        : "?"
      const kind = classify(text)
      counts[kind] = (counts[kind] ?? 0) + 1
      if (kind === "other" && others.length < 20) others.push(text.replace(/\s+/g, " ").slice(0, 160))
      if (captured !== undefined && kind === "commit" && typeof first === "object" && first !== null) {
        const config = first as { readonly name?: unknown; readonly values?: unknown }
        if (typeof config.name === "string" && Array.isArray(config.values)) {
          captured.push({ name: config.name, text, values: [...config.values] })
        }
      }
      if (trace !== undefined) {
        const entry = { kind, start: performance.now(), end: 0 }
        trace.push(entry)
        const last = args.length - 1
        if (typeof args[last] === "function") {
          const callback = args[last] as (...a: Array<unknown>) => unknown
          args[last] = (...a: Array<unknown>) => {
            entry.end = performance.now()
            return callback(...a)
          }
        }
      }
      return query(...args)
    }
  })
  return {
    pool,
    snapshot: () => ({ ...counts }),
    total: () => Object.values(counts).reduce((a, b) => a + b, 0),
    reset: () => {
      counts = {}
      others = []
    },
    others: () => others,
    trace: (on) => {
      const previous = trace ?? []
      trace = on ? [] : undefined
      return previous
    },
    capture: (on) => {
      const previous = captured ?? []
      captured = on ? [] : undefined
      return previous
    }
  }
}
