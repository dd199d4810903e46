/**
 * @since 0.1.0
 */

/**
 * The SQL `WorkflowStore` on Postgres and SQLite: migrations, fenced journal writes, claiming,
 * leases and wake-ups.
 *
 * @since 0.1.0
 */
export * as SqlStore from "./SqlStore.js"
