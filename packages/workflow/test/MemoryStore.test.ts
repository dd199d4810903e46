import * as MemoryStore from "@memento/workflow/MemoryStore"
import { storeSuite } from "./storeSuite.js"

storeSuite("MemoryStore", MemoryStore.layer)
