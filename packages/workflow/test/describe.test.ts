/**
 * `WorkflowError.describeRunError` and `describeEncoded`: the one wording of stored errors that the
 * CLI, the admin API, the dashboard and alerts share.
 */
import { assert, describe, it } from "@effect/vitest"
import { WorkflowError } from "@memento/workflow"
import { Schema } from "effect"

const encodeReason = Schema.encodeSync(WorkflowError.ParkReason)

describe("describing stored errors", () => {
  it("a workflow failure: Tag: message, or the fields when the error has no message", () => {
    assert.strictEqual(
      WorkflowError.describeRunError(
        JSON.stringify({ _tag: "Failure", error: { _tag: "Declined", message: "no funds" } })
      ),
      "Declined: no funds"
    )
    assert.strictEqual(
      WorkflowError.describeRunError(JSON.stringify({ _tag: "Failure", error: { _tag: "Declined", step: "charge" } })),
      "Declined {\"step\":\"charge\"}"
    )
    assert.strictEqual(WorkflowError.describeEncoded("plain text"), "plain text")
    assert.strictEqual(WorkflowError.describeEncoded([1, 2]), "[1,2]")
  })

  it("a cancel, and a parked run with its reason and the failure it had before", () => {
    assert.strictEqual(
      WorkflowError.describeRunError(JSON.stringify({ _tag: "Cancelled" })),
      "cancelled by an operator"
    )
    const reason = encodeReason(
      new WorkflowError.StepDefect({ workflowId: "r", stepKey: "ship", message: "printer on fire" })
    )
    assert.strictEqual(
      WorkflowError.describeRunError(JSON.stringify({ _tag: "Parked", reason })),
      "StepDefect: printer on fire"
    )
    assert.strictEqual(
      WorkflowError.describeRunError(
        JSON.stringify({ _tag: "Parked", reason, failure: { _tag: "Declined", message: "no funds" } })
      ),
      "StepDefect: printer on fire (after the workflow failed with Declined: no funds)"
    )
  })

  it("no error is null; a corrupt row is shown as it is", () => {
    assert.strictEqual(WorkflowError.describeRunError(null), null)
    assert.strictEqual(WorkflowError.describeRunError("{not json"), "{not json")
    assert.strictEqual(WorkflowError.describeRunError("[1]"), "[1]")
    assert.strictEqual(WorkflowError.describeRunError(JSON.stringify({ _tag: "Other" })), "{\"_tag\":\"Other\"}")
  })
})
