#!/usr/bin/env node
/**
 * The `memento` executable.
 *
 * @since 0.1.0
 */
import * as NodeContext from "@effect/platform-node/NodeContext"
import * as NodeRuntime from "@effect/platform-node/NodeRuntime"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Cli from "./Cli.js"

Cli.run(process.argv).pipe(
  Effect.provide(NodeContext.layer),
  NodeRuntime.runMain({
    disableErrorReporting: false,
    teardown: (exit, onExit) => {
      // interrupted by SIGINT or SIGTERM (a worker shutting down gracefully): 0; otherwise the code `run` chose
      onExit(
        Exit.isSuccess(exit)
          ? Number(exit.value)
          : Exit.isInterrupted(exit)
          ? Cli.ExitCode.Success
          : Cli.ExitCode.Failure
      )
    }
  })
)
