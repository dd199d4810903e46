/**
 * vitest `globalSetup`: one Postgres server for the whole run, its URL provided to tests as
 * `inject("databaseUrl")`. Each test file creates its own database on it (see `database.ts`).
 */
import type { TestProject } from "vitest/node"
import { startPostgres } from "./postgres.js"

declare module "vitest" {
  export interface ProvidedContext {
    readonly databaseUrl: string
    /** Whether the server was started for this run (and is deleted afterwards). */
    readonly databaseEmbedded: boolean
  }
}

export default async function setup(project: TestProject) {
  const postgres = await startPostgres()
  project.provide("databaseUrl", postgres.url)
  project.provide("databaseEmbedded", postgres.embedded)
  return async () => {
    await postgres.stop()
  }
}
