/**
 * Typed errors of Memento. Every error here is a `Schema.TaggedError`: it can be journaled,
 * returned to callers and sent over HTTP, and it decodes back to the same class.
 *
 * @since 0.1.0
 */
import * as Duration from "effect/Duration"
import * as Schema from "effect/Schema"

/**
 * A start used an existing workflow ID with a different payload or workflow name. Nothing ran.
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkflowIdConflict extends Schema.TaggedError<WorkflowIdConflict>("@memento/WorkflowIdConflict")(
  "WorkflowIdConflict",
  { workflowId: Schema.String, workflow: Schema.String, existingWorkflow: Schema.String, reason: Schema.String }
) {
  override get message() {
    return `workflow ID "${this.workflowId}" already exists (${this.existingWorkflow}) with ${this.reason}`
  }
}

/**
 * No run exists with this workflow ID.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunNotFound extends Schema.TaggedError<RunNotFound>("@memento/RunNotFound")("RunNotFound", {
  workflowId: Schema.String
}) {
  override get message() {
    return `no workflow run with ID "${this.workflowId}"`
  }
}

/**
 * The worker no longer holds the run's lease (its epoch was superseded or the lease expired by the
 * database clock). The write was not applied and no further step starts.
 *
 * @since 0.1.0
 * @category errors
 */
export class LeaseLost extends Schema.TaggedError<LeaseLost>("@memento/LeaseLost")("LeaseLost", {
  workflowId: Schema.String,
  epoch: Schema.Number
}) {
  override get message() {
    return `lease of run "${this.workflowId}" at epoch ${this.epoch} was lost; nothing was written`
  }
}

/**
 * The storage backend failed (connection lost, constraint violated unexpectedly, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class StoreError extends Schema.TaggedError<StoreError>("@memento/StoreError")("StoreError", {
  operation: Schema.String,
  message: Schema.String
}) {}

/**
 * A replay disagrees with the journal: the code asks for a step sequence the journal contradicts
 * (a journaled step renamed, removed or reordered). The run is parked as `needs_attention`.
 *
 * @since 0.1.0
 * @category errors
 */
export class JournalMismatch extends Schema.TaggedError<JournalMismatch>("@memento/JournalMismatch")(
  "JournalMismatch",
  {
    workflowId: Schema.String,
    stepKey: Schema.String,
    requested: Schema.NullOr(Schema.String),
    reason: Schema.String
  }
) {
  override get message() {
    return `run "${this.workflowId}": journaled step "${this.stepKey}" ${this.reason}` +
      (this.requested === null ? "" : ` (the code asked for "${this.requested}")`)
  }
}

/**
 * A journaled value (payload, step output or error, signal) no longer decodes with the current
 * Schema, or a value could not be encoded. The run is parked as `needs_attention`.
 *
 * @since 0.1.0
 * @category errors
 */
export class JournalDecodeError extends Schema.TaggedError<JournalDecodeError>("@memento/JournalDecodeError")(
  "JournalDecodeError",
  { workflowId: Schema.String, stepKey: Schema.String, message: Schema.String }
) {}

/**
 * A payload, step output or error exceeds the configured size limit. Raised before any write.
 *
 * @since 0.1.0
 * @category errors
 */
export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>("@memento/PayloadTooLarge")(
  "PayloadTooLarge",
  { workflowId: Schema.String, what: Schema.String, bytes: Schema.Number, limit: Schema.Number }
) {
  override get message() {
    return `${this.what} of run "${this.workflowId}" is ${this.bytes} bytes, over the limit of ${this.limit}`
  }
}

/**
 * A step died with a defect (a thrown exception or `Effect.die`). Defects are bugs, not domain
 * failures: they are not journaled as results; the run is parked as `needs_attention`.
 *
 * @since 0.1.0
 * @category errors
 */
export class StepDefect extends Schema.TaggedError<StepDefect>("@memento/StepDefect")("StepDefect", {
  workflowId: Schema.String,
  stepKey: Schema.String,
  message: Schema.String
}) {}

/**
 * `Workflow.awaitSignal` reached its timeout without a signal. Journaled: a replay times out again.
 *
 * @since 0.1.0
 * @category errors
 */
export class SignalTimeout extends Schema.TaggedError<SignalTimeout>("@memento/SignalTimeout")("SignalTimeout", {
  signal: Schema.String
}) {
  override get message() {
    return `no "${this.signal}" signal arrived before the timeout`
  }
}

/**
 * The run did not finish before its deadline: its creation time plus the `timeout` of
 * `Workflow.make`. It is part of the error type of every workflow that declares a timeout, so
 * `client.result` returns it typed; the run compensates and ends `compensated` (or `failed`).
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkflowTimeout extends Schema.TaggedError<WorkflowTimeout>("@memento/WorkflowTimeout")(
  "WorkflowTimeout",
  { workflowId: Schema.String, timeoutMs: Schema.Number }
) {
  override get message() {
    return `run "${this.workflowId}" did not finish within its timeout of ${Duration.format(this.timeoutMs)}`
  }
}

/**
 * An attempt of a step with a `timeout` ran longer than that. It is retried like a declared error;
 * once retries are exhausted the step fails with it (journaled: a replay fails the same way).
 *
 * @since 0.1.0
 * @category errors
 */
export class StepTimeout extends Schema.TaggedError<StepTimeout>("@memento/StepTimeout")("StepTimeout", {
  workflowId: Schema.String,
  stepKey: Schema.String,
  timeoutMs: Schema.Number
}) {
  override get message() {
    return `an attempt of step "${this.stepKey}" of run "${this.workflowId}" took longer than ` +
      Duration.format(this.timeoutMs)
  }
}

/**
 * A child workflow started with `Workflow.child` ended without a result or a declared error: it
 * was cancelled, or it was parked (`needs_attention`, `dead`) and needs an operator. `reason` says
 * why. A child that fails with its declared error fails the parent's child step with that error.
 *
 * @since 0.1.0
 * @category errors
 */
export class ChildWorkflowFailed extends Schema.TaggedError<ChildWorkflowFailed>("@memento/ChildWorkflowFailed")(
  "ChildWorkflowFailed",
  {
    workflowId: Schema.String,
    workflow: Schema.String,
    status: Schema.Literal("cancelled", "needs_attention", "dead"),
    reason: Schema.String
  }
) {
  override get message() {
    return `child run "${this.workflowId}" (${this.workflow}) ended ${this.status}: ${this.reason}`
  }
}

/**
 * The run was cancelled (its compensations ran).
 *
 * @since 0.1.0
 * @category errors
 */
export class WorkflowCancelled extends Schema.TaggedError<WorkflowCancelled>("@memento/WorkflowCancelled")(
  "WorkflowCancelled",
  { workflowId: Schema.String }
) {
  override get message() {
    return `run "${this.workflowId}" was cancelled`
  }
}

/**
 * The run is parked (`needs_attention` or `dead`) and needs an operator: fix the code or data,
 * then `resume` it. `reason` names what went wrong.
 *
 * @since 0.1.0
 * @category errors
 */
export class RunParked extends Schema.TaggedError<RunParked>("@memento/RunParked")("RunParked", {
  workflowId: Schema.String,
  status: Schema.Literal("needs_attention", "dead"),
  reason: Schema.String
}) {
  override get message() {
    return `run "${this.workflowId}" is ${this.status}: ${this.reason}`
  }
}

/**
 * A compensation exhausted its retries. The run ends `needs_attention`; `resume` retries it.
 *
 * @since 0.1.0
 * @category errors
 */
export class CompensationFailed extends Schema.TaggedError<CompensationFailed>("@memento/CompensationFailed")(
  "CompensationFailed",
  { workflowId: Schema.String, stepKeys: Schema.Array(Schema.String), message: Schema.String }
) {}

/**
 * The operation does not apply to a run in its current status (for example resuming a run that
 * succeeded).
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidRunState extends Schema.TaggedError<InvalidRunState>("@memento/InvalidRunState")(
  "InvalidRunState",
  { workflowId: Schema.String, status: Schema.String, operation: Schema.String }
) {
  override get message() {
    return `cannot ${this.operation} run "${this.workflowId}" in status ${this.status}`
  }
}

/**
 * `retry({ fromStep })` named a step the run's journal does not hold. `steps` lists the keys it
 * holds, in journal order (a name used again in one run has the keys `name#2`, `name#3`, ...).
 *
 * @since 0.1.0
 * @category errors
 */
export class UnknownStep extends Schema.TaggedError<UnknownStep>("@memento/UnknownStep")("UnknownStep", {
  workflowId: Schema.String,
  stepKey: Schema.String,
  steps: Schema.Array(Schema.String)
}) {
  override get message() {
    return `run "${this.workflowId}" has no step "${this.stepKey}"; its journal holds ` +
      (this.steps.length === 0 ? "no steps" : this.steps.map((step) => `"${step}"`).join(", "))
  }
}

/**
 * A payload or signal value does not match its Schema.
 *
 * @since 0.1.0
 * @category errors
 */
export class InvalidPayload extends Schema.TaggedError<InvalidPayload>("@memento/InvalidPayload")(
  "InvalidPayload",
  { workflow: Schema.String, message: Schema.String }
) {}

/**
 * The run took its worker down (its lease expired without a release) more times than allowed.
 * The run is parked as `dead`; `resume` replays it.
 *
 * @since 0.1.0
 * @category errors
 */
export class RecoveryLimitReached extends Schema.TaggedError<RecoveryLimitReached>("@memento/RecoveryLimitReached")(
  "RecoveryLimitReached",
  { workflowId: Schema.String, recoveries: Schema.Number }
) {
  override get message() {
    return `run "${this.workflowId}" was recovered ${this.recoveries} times after its worker died`
  }
}

/**
 * Why a run was parked (`needs_attention` or `dead`).
 *
 * @since 0.1.0
 * @category errors
 */
export const ParkReason = Schema.Union(
  JournalMismatch,
  JournalDecodeError,
  StepDefect,
  PayloadTooLarge,
  CompensationFailed,
  RecoveryLimitReached
)

/**
 * @since 0.1.0
 * @category errors
 */
export type ParkReason = typeof ParkReason.Type

const decodeParkReason = Schema.decodeUnknownOption(ParkReason)

const json = (value: unknown): string => {
  if (typeof value === "string") return value
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return String(value)
  }
}

/**
 * An encoded error (a journaled step error, a workflow's failure) in words, for people and for
 * tools that cannot decode it with the workflow's own Schemas: `Tag: message` when it has a
 * message, else `Tag {fields as JSON}`, else its JSON.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describeEncoded = (value: unknown): string => {
  if (typeof value === "object" && value !== null && !Array.isArray(value)) {
    const { _tag, message, ...rest } = value as Record<string, unknown>
    const tag = typeof _tag === "string" ? _tag : undefined
    const text = typeof message === "string" && message !== "" ? message : undefined
    if (tag !== undefined && text !== undefined) return `${tag}: ${text}`
    if (tag !== undefined) return Object.keys(rest).length === 0 ? tag : `${tag} ${json(rest)}`
    if (text !== undefined) return text
  }
  return json(value)
}

/**
 * A run's stored `error` (the engine's run error: the workflow's failure, a cancel, or why the run
 * was parked) in one line; `null` when the run has none. Text that is not a run error (a corrupt
 * row) is returned as it is. The CLI, the admin API, the dashboard and alerts all word errors with it.
 *
 * @since 0.1.0
 * @category formatting
 */
export const describeRunError = (text: string | null): string | null => {
  if (text === null) return null
  let error: unknown
  try {
    error = JSON.parse(text)
  } catch {
    return text
  }
  if (typeof error !== "object" || error === null || Array.isArray(error)) return text
  const record = error as Record<string, unknown>
  switch (record._tag) {
    case "Failure":
      return describeEncoded(record.error)
    case "Cancelled":
      return "cancelled by an operator"
    case "Parked": {
      const reason = decodeParkReason(record.reason)
      const words = reason._tag === "Some"
        ? `${reason.value._tag}: ${reason.value.message}`
        : describeEncoded(record.reason)
      return record.failure === undefined
        ? words
        : `${words} (after the workflow failed with ${describeEncoded(record.failure)})`
    }
    default:
      return text
  }
}
