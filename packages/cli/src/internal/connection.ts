/**
 * The store the CLI talks to: Postgres from `DATABASE_URL`, or a SQLite file from `--sqlite`.
 */
import type * as SqlClient from "@effect/sql/SqlClient"
import * as SqlStore from "@memento/sql/SqlStore"
import type { WorkflowStore } from "@memento/workflow/WorkflowStore"
import type { Layer } from "effect"
import * as Config from "effect/Config"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"

/** Options shared by every command that opens the database. */
export interface Connection {
  readonly sqlite: Option.Option<string>
  readonly prefix: Option.Option<string>
}

/** A problem with how the CLI was called that the argument parser cannot see (exit code 2). */
export class UsageError extends Data.TaggedError("UsageError")<{ readonly message: string }> {}

/** Valid table prefixes, as `SqlStore` accepts them. */
export const prefixPattern = /^[a-z0-9_]+$/

/**
 * The store layer for `connection`. `migrate` applies the store's migrations when the layer is
 * built; commands that only read or operate runs pass `false` and leave the schema alone.
 */
export const storeLayer = (
  connection: Connection,
  options: { readonly migrate: boolean }
): Effect.Effect<Layer.Layer<WorkflowStore | SqlClient.SqlClient, unknown>, UsageError> =>
  Effect.gen(function*() {
    const tablePrefix = Option.getOrUndefined(connection.prefix)
    if (Option.isSome(connection.sqlite)) {
      return SqlStore.layerSqlite({ filename: connection.sqlite.value, tablePrefix, migrate: options.migrate })
    }
    const url = yield* Config.option(Config.redacted("DATABASE_URL")).pipe(Effect.orElseSucceed(() => Option.none()))
    if (Option.isNone(url)) {
      return yield* new UsageError({
        message: "no database: set DATABASE_URL to a postgres:// URL, or pass --sqlite FILE"
      })
    }
    return SqlStore.layerPg({ url: url.value, tablePrefix, migrate: options.migrate, maxConnections: 2 })
  })
