/**
 * Lint (`npm run lint`, also part of `npm test`): ESLint's and typescript-eslint's recommended rules,
 * dprint formatting through `@effect/eslint-plugin` (120 columns, no semicolons, double quotes), type
 * imports marked as such, and no imports from the `effect` / `@effect/*` barrels inside `src/`
 * (`import * as Effect from "effect/Effect"`), as in Effect's own packages.
 */
import effect from "@effect/eslint-plugin"
import js from "@eslint/js"
import globals from "globals"
import tseslint from "typescript-eslint"

export default tseslint.config(
  {
    ignores: ["**/dist/**", "**/node_modules/**", "**/.memento/**", "**/*.md"]
  },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    plugins: { "@effect": effect },
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      globals: { ...globals.node }
    },
    rules: {
      "@effect/dprint": ["error", {
        config: {
          indentWidth: 2,
          lineWidth: 120,
          semiColons: "asi",
          quoteStyle: "alwaysDouble",
          trailingCommas: "never",
          operatorPosition: "maintain",
          "arrowFunction.useParentheses": "force"
        }
      }],
      "@typescript-eslint/consistent-type-imports": "error",
      "@typescript-eslint/array-type": ["error", { default: "generic", readonly: "generic" }],
      "@typescript-eslint/no-explicit-any": "off",
      "@typescript-eslint/no-namespace": "off",
      "@typescript-eslint/no-empty-object-type": "off",
      "@typescript-eslint/no-unused-vars": ["error", {
        argsIgnorePattern: "^_",
        varsIgnorePattern: "^_",
        ignoreRestSiblings: true
      }],
      "object-shorthand": "error",
      "no-fallthrough": "off"
    }
  },
  {
    files: ["packages/*/src/**/*.ts"],
    rules: {
      "@effect/no-import-from-barrel-package": ["error", {
        packageNames: [
          "effect",
          "@effect/cli",
          "@effect/platform",
          "@effect/platform-node",
          "@effect/sql",
          "@effect/sql-pg",
          "@effect/sql-sqlite-node"
        ]
      }]
    }
  },
  {
    files: ["**/*.mjs", "**/*.js"],
    rules: {
      "@typescript-eslint/consistent-type-imports": "off"
    }
  }
)
