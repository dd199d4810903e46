/**
 * The engine end to end on SQLite (a temporary file): see `utils/engineSuite.ts`.
 */
import { SqlStore } from "@memento/sql"
import { tempSqliteFile } from "./utils/database.js"
import { engineSuite } from "./utils/engineSuite.js"

engineSuite("engine on SQLite", SqlStore.layerSqlite({ filename: tempSqliteFile() }))
