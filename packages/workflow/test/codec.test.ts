/**
 * The messages the execution log records for a step's errors (`AttemptRecord.error`).
 */
import { assert, describe, it } from "@effect/vitest"
import { Data, Schema } from "effect"
import { errorMessage } from "../src/internal/codec.js"

class Declined extends Schema.TaggedError<Declined>()("Declined", { reason: Schema.String }) {}
class Flaky extends Schema.TaggedError<Flaky>()("Flaky", {}) {}
class Busy extends Data.TaggedError("Busy") {}
class Limited extends Data.TaggedError("Limited")<{ readonly retryAfter: number }> {}
class WithMessage extends Schema.TaggedError<WithMessage>()("WithMessage", { message: Schema.String }) {}

describe("errorMessage", () => {
  it("a tagged error without fields is named by its tag alone", () => {
    assert.strictEqual(errorMessage(new Flaky()), "Flaky")
    assert.strictEqual(errorMessage(new Busy()), "Busy")
    assert.strictEqual(errorMessage({ _tag: "Plain" }), "Plain")
  })

  it("a tagged error with fields shows them after its tag", () => {
    assert.strictEqual(errorMessage(new Declined({ reason: "card" })), "Declined: { \"reason\": \"card\" }")
    assert.strictEqual(errorMessage(new Limited({ retryAfter: 2 })), "Limited: {\"retryAfter\":2,\"_tag\":\"Limited\"}")
    assert.strictEqual(errorMessage(new WithMessage({ message: "no funds" })), "WithMessage: no funds")
  })

  it("other values: an Error's message, a string as it is, anything else as JSON", () => {
    assert.strictEqual(errorMessage(new Error("boom")), "boom")
    assert.strictEqual(errorMessage("plain"), "plain")
    assert.strictEqual(errorMessage({ code: 7 }), "{\"code\":7}")
    assert.strictEqual(errorMessage(undefined), "undefined")
  })
})
