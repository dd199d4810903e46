/**
 * @since 0.1.0
 */
export * as IdempotencyKey from "./IdempotencyKey.js"
/**
 * @since 0.1.0
 */
export * as Webhook from "./Webhook.js"
/**
 * @since 0.1.0
 */
export * as Admin from "./Admin.js"
/**
 * @since 0.1.0
 */
export * as Dashboard from "./Dashboard.js"
