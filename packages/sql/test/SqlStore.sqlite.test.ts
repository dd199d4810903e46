import { SqlStore } from "@memento/sql"
import { storeSuite } from "../../workflow/test/storeSuite.js"
import { tempSqliteFile } from "./utils/database.js"

storeSuite("SqlStore (SQLite)", SqlStore.layerSqlite({ filename: tempSqliteFile() }), { live: true })
