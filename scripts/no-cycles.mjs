/**
 * Fails when modules import each other in a circle (STYLE.md: no circular imports between modules).
 * Follows the relative imports and re-exports of every `src/` file of the packages and examples that
 * remain at run time; `import type` and imports of types only are erased by the compiler and do not
 * count. Run by `npm run lint`.
 */
import { readdirSync, readFileSync } from "node:fs"
import { dirname, join, normalize, relative } from "node:path"
import { fileURLToPath } from "node:url"
import ts from "typescript"

const root = join(dirname(fileURLToPath(import.meta.url)), "..")
/** Every `.ts` file under `dir`. */
const tsFiles = (dir) =>
  readdirSync(dir, { withFileTypes: true }).flatMap((entry) =>
    entry.isDirectory()
      ? tsFiles(join(dir, entry.name))
      : entry.name.endsWith(".ts")
      ? [join(dir, entry.name)]
      : []
  )
const files = ["packages", "examples"].flatMap((group) =>
  readdirSync(join(root, group), { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .flatMap((entry) => {
      const src = join(root, group, entry.name, "src")
      try {
        return tsFiles(src)
      } catch {
        return []
      }
    })
)

/** The files `file` imports or re-exports at run time (relative specifiers only). */
const runtimeImports = (file) => {
  const source = ts.createSourceFile(file, readFileSync(file, "utf8"), ts.ScriptTarget.Latest)
  const imports = []
  for (const statement of source.statements) {
    let specifier
    if (ts.isImportDeclaration(statement)) {
      const clause = statement.importClause
      const typeOnly = clause !== undefined && (clause.isTypeOnly || (
        clause.name === undefined && clause.namedBindings !== undefined &&
        ts.isNamedImports(clause.namedBindings) && clause.namedBindings.elements.length > 0 &&
        clause.namedBindings.elements.every((element) => element.isTypeOnly)
      ))
      if (!typeOnly) specifier = statement.moduleSpecifier
    } else if (ts.isExportDeclaration(statement) && statement.moduleSpecifier !== undefined) {
      const typeOnly = statement.isTypeOnly || (
        statement.exportClause !== undefined && ts.isNamedExports(statement.exportClause) &&
        statement.exportClause.elements.length > 0 && statement.exportClause.elements.every((e) => e.isTypeOnly)
      )
      if (!typeOnly) specifier = statement.moduleSpecifier
    }
    if (specifier !== undefined && ts.isStringLiteral(specifier) && specifier.text.startsWith(".")) {
      imports.push(normalize(join(dirname(file), specifier.text)).replace(/\.js$/, ".ts"))
    }
  }
  return imports
}

const graph = new Map(files.map((file) => [file, runtimeImports(file)]))
const cycles = []
const done = new Set()
const visit = (file, path) => {
  const at = path.indexOf(file)
  if (at >= 0) {
    cycles.push([...path.slice(at), file].map((f) => relative(root, f)).join(" -> "))
    return
  }
  if (done.has(file)) return
  for (const next of graph.get(file) ?? []) visit(next, [...path, file])
  done.add(file)
}
for (const file of files) visit(file, [])

if (cycles.length > 0) {
  console.error(`circular imports (${cycles.length}):\n${cycles.join("\n")}`)
  process.exit(1)
}
console.log(`no circular imports among ${files.length} modules`)
