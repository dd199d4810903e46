/**
 * @since 0.1.0
 */
export * as Alerts from "./Alerts.js"
/**
 * @since 0.1.0
 */
export * as MemoryStore from "./MemoryStore.js"
/**
 * @since 0.1.0
 */
export * as Metrics from "./Metrics.js"
/**
 * @since 0.1.0
 */
export * as Step from "./Step.js"
/**
 * @since 0.1.0
 */
export * as Tracing from "./Tracing.js"
/**
 * @since 0.1.0
 */
export * as Worker from "./Worker.js"
/**
 * @since 0.1.0
 */
export * as Workflow from "./Workflow.js"
/**
 * @since 0.1.0
 */
export * as WorkflowClient from "./WorkflowClient.js"
/**
 * @since 0.1.0
 */
export * as WorkflowConfig from "./WorkflowConfig.js"
/**
 * @since 0.1.0
 */
export * as WorkflowError from "./WorkflowError.js"
/**
 * @since 0.1.0
 */
export * as WorkflowStore from "./WorkflowStore.js"
