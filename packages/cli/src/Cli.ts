/**
 * The `memento` command: inspect and operate workflow runs stored by `@memento/sql` on Postgres
 * (`DATABASE_URL`) or SQLite (`--sqlite FILE`). Human output by default, `--json` for scripts.
 *
 * Exit codes: 0 success, 1 the operation failed (a typed error such as `RunNotFound` or
 * `InvalidRunState`, or the database failed), 2 the command was called wrongly (unknown command or
 * option, missing or invalid argument, no database configured).
 *
 * @since 0.1.0
 */
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import * as Worker from "@memento/workflow/Worker"
import type * as Workflow from "@memento/workflow/Workflow"
import * as WorkflowClient from "@memento/workflow/WorkflowClient"
import type { RunStatus } from "@memento/workflow/WorkflowStore"
import { allStatuses, terminalStatuses } from "@memento/workflow/WorkflowStore"
import * as Console from "effect/Console"
import * as Data from "effect/Data"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import { isAbsolute, resolve } from "node:path"
import { pathToFileURL } from "node:url"
import type { Connection } from "./internal/connection.js"
import { prefixPattern, storeLayer, UsageError } from "./internal/connection.js"
import { parseAge } from "./internal/duration.js"
import * as Format from "./internal/format.js"
import * as Json from "./internal/json.js"

/**
 * The process exit codes of `memento`.
 *
 * @since 0.1.0
 * @category models
 */
export const ExitCode = {
  /** The command did what it was asked. */
  Success: 0,
  /** The operation failed: a typed error (`RunNotFound`, `InvalidRunState`, ...) or the database. */
  Failure: 1,
  /** The command was called wrongly: unknown command or option, missing or invalid argument. */
  Usage: 2
} as const

/**
 * @since 0.1.0
 * @category models
 */
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode]

/**
 * The version `memento --version` prints.
 *
 * @since 0.1.0
 * @category models
 */
export const version = "0.1.0"

/** A failure that was already printed; carries the exit code. */
class Reported extends Data.TaggedError("Reported")<{ readonly exitCode: ExitCode }> {}

const invalid = (message: string) => ValidationError.invalidValue(HelpDoc.p(message))

// -----------------------------------------------------------------------------
// shared options
// -----------------------------------------------------------------------------

const sqliteOption = (exists: "yes" | "either") =>
  Options.file("sqlite", { exists }).pipe(
    Options.withDescription(
      "Use the SQLite database in this file instead of Postgres" +
        (exists === "yes" ? " (it must exist)." : " (created if missing).")
    ),
    Options.optional
  )

const prefixOption = Options.text("prefix").pipe(
  Options.withDescription("Table prefix of the store (default memento_): lower-case letters, digits and _."),
  Options.mapEffect((prefix) =>
    prefixPattern.test(prefix)
      ? Effect.succeed(prefix)
      : Effect.fail(invalid(`invalid --prefix "${prefix}": use lower-case letters, digits and _`))
  ),
  Options.optional
)

const jsonOption = Options.boolean("json").pipe(
  Options.withDescription("Print machine-readable JSON on stdout (errors as JSON on stderr).")
)

const common = (exists: "yes" | "either" = "yes") => ({
  sqlite: sqliteOption(exists),
  prefix: prefixOption,
  json: jsonOption
})

interface Common extends Connection {
  readonly json: boolean
}

const idArg = Args.text({ name: "id" }).pipe(Args.withDescription("The workflow run ID."))

// -----------------------------------------------------------------------------
// errors and output
// -----------------------------------------------------------------------------

const errorFields = (error: unknown): Record<string, unknown> => {
  if (typeof error !== "object" || error === null) return { message: String(error) }
  const fields: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(error)) {
    if (typeof value !== "function" && key !== "cause") fields[key] = value
  }
  return fields
}

const errorMessage = (error: unknown): string => {
  if (typeof error === "object" && error !== null) {
    const message = "message" in error && typeof error.message === "string" ? error.message : ""
    const cause = "cause" in error && typeof error.cause === "object" && error.cause !== null &&
        "message" in error.cause && typeof error.cause.message === "string"
      ? error.cause.message
      : ""
    const text = [message, cause].filter((part) => part !== "" && part !== undefined).join(": ")
    if (text !== "") {
      const missingTable = /does not exist|no such table/i.test(text)
      return missingTable ? `${text} (has the database been migrated? run: memento migrate)` : text
    }
  }
  return String(error)
}

/** Prints a failure (text or JSON on stderr) and turns it into `Reported` with its exit code. */
const report = (json: boolean) => <A, R>(effect: Effect.Effect<A, unknown, R>): Effect.Effect<A, Reported, R> =>
  Effect.catchAll(effect, (error) => {
    const tag = typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
      ? error._tag
      : "Error"
    const message = errorMessage(error)
    const exitCode = error instanceof UsageError ? ExitCode.Usage : ExitCode.Failure
    const printed = json
      ? Console.error(JSON.stringify({ error: { ...errorFields(error), _tag: tag, message } }))
      : Console.error(`memento: ${tag === "Error" || tag === "UsageError" ? "" : `${tag}: `}${message}`)
    return Effect.zipRight(printed, Effect.fail(new Reported({ exitCode })))
  })

/** Runs `f` with a `WorkflowClient` on the configured store; failures are reported. */
const withClient = <A, E>(
  options: Common,
  f: (client: WorkflowClient.Service) => Effect.Effect<A, E>,
  settings: { readonly migrate?: boolean } = {}
): Effect.Effect<A, Reported> =>
  Effect.gen(function*() {
    const store = yield* storeLayer(options, { migrate: settings.migrate ?? false })
    return yield* Effect.flatMap(WorkflowClient.WorkflowClient, f).pipe(
      Effect.provide(WorkflowClient.layer.pipe(Layer.provide(store)))
    )
  }).pipe(report(options.json))

const print = (options: Common, human: () => string, json: () => unknown) =>
  Console.log(options.json ? JSON.stringify(json(), null, 2) : human())

// -----------------------------------------------------------------------------
// commands
// -----------------------------------------------------------------------------

const listCommand = Command.make(
  "list",
  {
    ...common(),
    status: Options.choice("status", allStatuses).pipe(
      Options.withDescription("Only runs in this status (repeat for several)."),
      Options.repeated
    ),
    workflow: Options.text("workflow").pipe(Options.withDescription("Only runs of this workflow."), Options.optional),
    createdAfter: Options.date("created-after").pipe(
      Options.withDescription("Only runs created at or after this time (ISO 8601)."),
      Options.optional
    ),
    createdBefore: Options.date("created-before").pipe(
      Options.withDescription("Only runs created before this time (ISO 8601)."),
      Options.optional
    ),
    limit: Options.integer("limit").pipe(
      Options.withDescription("Runs per page, 1 to 1000 (default 50)."),
      Options.mapEffect((limit) =>
        limit >= 1 && limit <= 1000 ? Effect.succeed(limit) : Effect.fail(invalid("--limit must be 1 to 1000"))
      ),
      Options.withDefault(50)
    ),
    cursor: Options.text("cursor").pipe(
      Options.withDescription("Continue after the previous page (its next cursor)."),
      Options.optional
    )
  },
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        client.list({
          status: options.status.length === 0 ? undefined : options.status,
          workflow: Option.getOrUndefined(options.workflow),
          createdAfter: Option.getOrUndefined(Option.map(options.createdAfter, (date) => date.getTime())),
          createdBefore: Option.getOrUndefined(Option.map(options.createdBefore, (date) => date.getTime())),
          limit: options.limit,
          cursor: Option.getOrUndefined(options.cursor)
        }),
        (page) => print(options, () => Format.runPage(page), () => Json.page(page))
      ))
).pipe(Command.withDescription("List runs, newest first, one page at a time."))

const showCommand = Command.make(
  "show",
  { ...common(), id: idArg },
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        client.inspect(options.id),
        (details) => print(options, () => Format.timeline(details), () => Json.details(details))
      ))
).pipe(
  Command.withDescription(
    "Show a run's timeline: every step and attempt with durations and errors, compensations, " +
      "generations archived by retries, signals and child runs."
  )
)

const operation = (
  name: "cancel" | "resume",
  description: string,
  f: (client: WorkflowClient.Service, id: string) => ReturnType<WorkflowClient.Service["cancel"]>
) =>
  Command.make(name, { ...common(), id: idArg }, (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        f(client, options.id),
        (run) => print(options, () => Format.runLine(run), () => Json.run(run))
      ))).pipe(Command.withDescription(description))

const cancelCommand = operation(
  "cancel",
  "Cancel a run: it stops at its next step boundary, runs its compensations and ends cancelled.",
  (client, id) => client.cancel(id)
)

const resumeCommand = operation(
  "resume",
  "Resume a needs_attention or dead run (after fixing the code or data): it is replayed.",
  (client, id) => client.resume(id)
)

const retryCommand = Command.make(
  "retry",
  {
    ...common(),
    id: idArg,
    from: Options.text("from").pipe(
      Options.withDescription(
        "The step to re-run from (its name, or a journal key such as charge#2). Default: the failed step."
      ),
      Options.optional
    )
  },
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        client.retry(options.id, { fromStep: Option.getOrUndefined(options.from) }),
        (run) => print(options, () => Format.runLine(run), () => Json.run(run))
      ))
).pipe(
  Command.withDescription(
    "Re-run a failed, compensated or cancelled run from a step; later journal entries are archived, not deleted."
  )
)

const signalCommand = Command.make(
  "signal",
  {
    ...common(),
    id: idArg,
    name: Args.text({ name: "name" }).pipe(Args.withDescription("The signal name the workflow awaits.")),
    value: Args.text({ name: "json" }).pipe(
      Args.withDescription("The signal's value as JSON, e.g. '{\"approved\":true}' or 'true'."),
      Args.mapEffect((text) =>
        Effect.try({
          try: () => JSON.parse(text) as unknown,
          catch: (error) =>
            HelpDoc.p(
              `the signal value is not valid JSON (${error instanceof Error ? error.message : String(error)}): ${text}`
            )
        })
      )
    ),
    signalId: Options.text("id").pipe(
      Options.withDescription("The signal's ID: a repeated ID is ignored (default: a random UUID)."),
      Options.optional
    )
  },
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        client.signal(options.id, options.name, options.value, { signalId: Option.getOrUndefined(options.signalId) }),
        ({ duplicate }) =>
          print(
            options,
            () =>
              duplicate
                ? `signal "${options.name}" to ${options.id} ignored: its signal ID was received before`
                : `signal "${options.name}" sent to ${options.id}`,
            () => ({ id: options.id, name: options.name, duplicate })
          )
      ))
).pipe(Command.withDescription("Send a signal (a JSON value) to a run."))

const purgeCommand = Command.make(
  "purge",
  {
    ...common(),
    olderThan: Options.text("older-than").pipe(
      Options.withDescription("Delete runs that finished longer ago than this: 30d, 12h, 90m, 45s, 2w."),
      Options.mapEffect((text) =>
        Either.match(parseAge(text), { onLeft: (message) => Effect.fail(invalid(message)), onRight: Effect.succeed })
      )
    ),
    status: Options.choice("status", terminalStatuses).pipe(
      Options.withDescription("Only runs in this finished status (repeat for several; default: all four)."),
      Options.repeated
    ),
    batchSize: Options.integer("batch-size").pipe(
      Options.withDescription("Runs deleted per transaction (default 1000)."),
      Options.mapEffect((size) =>
        size >= 1 && size <= 100_000 ? Effect.succeed(size) : Effect.fail(invalid("--batch-size must be 1 to 100000"))
      ),
      Options.optional
    )
  },
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(
        client.purge({
          olderThan: options.olderThan,
          statuses: options.status.length === 0 ? undefined : options.status as ReadonlyArray<RunStatus>,
          batchSize: Option.getOrUndefined(options.batchSize)
        }),
        (deleted) =>
          print(
            options,
            () =>
              `deleted ${deleted} run${deleted === 1 ? "" : "s"} ` +
              `finished more than ${Duration.format(options.olderThan)} ago`,
            () => ({ deleted })
          )
      ))
).pipe(
  Command.withDescription(
    "Delete finished runs (with their journal, execution log and signals) in batches; " +
      "unfinished runs are never touched."
  )
)

const migrateCommand = Command.make("migrate", common("either"), (options) =>
  withClient(options, () =>
    print(
      options,
      () => "the store's tables are up to date",
      () => ({ migrated: true })
    ), { migrate: true })).pipe(
    Command.withDescription("Create or upgrade the store's tables (idempotent).")
  )

const statsCommand = Command.make(
  "stats",
  common(),
  (options) =>
    withClient(options, (client) =>
      Effect.flatMap(client.stats, (counts) =>
        print(
          options,
          () => Format.stats(counts),
          () => ({ counts })
        )))
).pipe(Command.withDescription("Count runs by workflow and status."))

/** What a `--module` for `memento worker` must export. */
interface WorkerModule {
  readonly workflows: ReadonlyArray<Workflow.Any>
  readonly layer: Layer.Layer<never, unknown, unknown>
}

const loadWorkerModule = (path: string): Effect.Effect<WorkerModule, UsageError> =>
  Effect.gen(function*() {
    const url = pathToFileURL(isAbsolute(path) ? path : resolve(process.cwd(), path)).href
    const module = yield* Effect.tryPromise({
      try: () => import(url) as Promise<Record<string, unknown>>,
      catch: (error) => new UsageError({ message: `cannot load --module ${path}: ${errorMessage(error)}` })
    })
    const workflows = module.workflows
    if (!Array.isArray(workflows) || workflows.length === 0) {
      return yield* new UsageError({
        message: `--module ${path} must export "workflows", a non-empty array of Workflow.make(...) declarations`
      })
    }
    if (!Layer.isLayer(module.layer)) {
      return yield* new UsageError({
        message: `--module ${path} must export "layer", a Layer with the implementations of its workflows`
      })
    }
    return { workflows: workflows as ReadonlyArray<Workflow.Any>, layer: module.layer as WorkerModule["layer"] }
  })

const workerCommand = Command.make(
  "worker",
  {
    ...common("either"),
    module: Options.file("module", { exists: "yes" }).pipe(
      Options.withDescription(
        "A JavaScript module exporting `workflows` (an array of workflows) and `layer` (their implementations)."
      )
    ),
    concurrency: Options.integer("concurrency").pipe(
      Options.withDescription("Runs executed at once (default 10)."),
      Options.optional
    )
  },
  (options) =>
    Effect.gen(function*() {
      const loaded = yield* loadWorkerModule(options.module)
      const store = yield* storeLayer(options, { migrate: true })
      const worker = Worker.layer({
        workflows: loaded.workflows,
        concurrency: Option.getOrUndefined(options.concurrency)
      }) as Layer.Layer<never, never, unknown>
      yield* Console.error(
        `memento worker: executing ${loaded.workflows.map((w) => w.name).join(", ")} until SIGINT or SIGTERM`
      )
      return yield* Layer.launch(
        worker.pipe(Layer.provide(loaded.layer), Layer.provide(store)) as Layer.Layer<never, unknown, never>
      )
    }).pipe(report(options.json))
).pipe(
  Command.withDescription(
    "Run a worker for the workflows of a module until SIGINT or SIGTERM (then it shuts down gracefully)."
  )
)

const rootCommand = Command.make("memento", {}, () =>
  Effect.zipRight(
    Console.error("memento: missing command. Run memento --help for the list of commands."),
    Effect.fail(new Reported({ exitCode: ExitCode.Usage }))
  )).pipe(
    Command.withDescription(
      "Inspect and operate Memento workflow runs on Postgres (DATABASE_URL) or SQLite (--sqlite)."
    ),
    Command.withSubcommands([
      listCommand,
      showCommand,
      cancelCommand,
      resumeCommand,
      retryCommand,
      signalCommand,
      purgeCommand,
      migrateCommand,
      statsCommand,
      workerCommand
    ])
  )

/**
 * The `memento` command tree, for embedding in another `@effect/cli` application.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = rootCommand

/**
 * Runs `memento` on a full argument vector (`process.argv`: runtime, script, then arguments) and
 * returns its exit code; it never fails. Errors are printed on stderr: argument errors by
 * `@effect/cli` with the usage (exit code 2), operation errors as one line (exit code 1).
 *
 * @since 0.1.0
 * @category running
 */
export const run = (argv: ReadonlyArray<string>): Effect.Effect<ExitCode, never, CliApp.CliApp.Environment> =>
  Command.run(rootCommand, { name: "memento", version })(argv).pipe(
    Effect.as(ExitCode.Success),
    Effect.catchAll((error): Effect.Effect<ExitCode> => {
      if (error instanceof Reported) return Effect.succeed(error.exitCode)
      if (ValidationError.isValidationError(error)) return Effect.succeed(ExitCode.Usage)
      return Effect.as(Console.error(`memento: ${errorMessage(error)}`), ExitCode.Failure)
    })
  )
