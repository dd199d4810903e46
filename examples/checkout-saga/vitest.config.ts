import { fileURLToPath } from "node:url"
import { defineConfig } from "vitest/config"

const src = (pkg: string, file: string) => fileURLToPath(new URL(`../../packages/${pkg}/src/${file}`, import.meta.url))

export default defineConfig({
  resolve: {
    alias: [
      { find: /^@memento\/workflow$/, replacement: src("workflow", "index.ts") },
      { find: /^@memento\/workflow\/(.*)$/, replacement: src("workflow", "$1.ts") },
      { find: /^@memento\/sql$/, replacement: src("sql", "index.ts") },
      { find: /^@memento\/sql\/(.*)$/, replacement: src("sql", "$1.ts") },
      { find: /^@memento\/http$/, replacement: src("http", "index.ts") },
      { find: /^@memento\/http\/(.*)$/, replacement: src("http", "$1.ts") }
    ]
  },
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000
  }
})
