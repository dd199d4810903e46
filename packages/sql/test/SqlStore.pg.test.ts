import { SqlStore } from "@memento/sql"
import { Layer } from "effect"
import { storeSuite } from "../../workflow/test/storeSuite.js"
import { freshDatabase, pgClient } from "./utils/database.js"

const url = await freshDatabase()

storeSuite("SqlStore (Postgres)", SqlStore.layer().pipe(Layer.provide(pgClient(url))), { live: true })
