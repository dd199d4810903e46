/**
 * The admin HTTP API against a real server (NodeHttpServer on 127.0.0.1, port 0), a MemoryStore and
 * a Worker running a small checkout saga: list, inspect, cancel, resume, retry, signal, stats, the
 * problem+json errors, the auth check, and the refusal to serve without auth on a public address.
 */
import type * as HttpServer from "@effect/platform/HttpServer"
import * as SqliteClient from "@effect/sql-sqlite-node/SqliteClient"
import * as SqlClient from "@effect/sql/SqlClient"
import { assert, describe, it } from "@effect/vitest"
import { Admin } from "@memento/http"
import { SqlStore } from "@memento/sql"
import { WorkflowClient } from "@memento/workflow"
import { Effect, Exit, Layer, Redacted } from "effect"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import type { Control } from "./adminFixtures.js"
import { awaitStatus, call, Checkout, env, makeControl, memento, server } from "./adminFixtures.js"

const withEnv = (control: Control, options: Admin.Options = {}) =>
<A, E>(
  body: Effect.Effect<A, E, WorkflowClient.WorkflowClient | HttpServer.HttpServer>
) => Effect.scoped(Effect.provide(body, env(control, options)))

const isProblem = (reply: { readonly headers: Headers; readonly json: any }, status: number) => {
  assert.strictEqual(reply.headers.get("content-type"), "application/problem+json")
  assert.strictEqual(reply.json.status, status)
  assert.isString(reply.json.title)
  assert.isString(reply.json.detail)
}

describe("Admin API", () => {
  it.live("lists runs filtered by status and workflow, paginated with a cursor", () => {
    const control = makeControl()
    control.decline.add("o-2")
    control.decline.add("o-3")
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      for (const orderId of ["o-1", "o-2", "o-3"]) yield* client.start(Checkout, { orderId, confirm: false })
      yield* awaitStatus("o-1", "succeeded")
      yield* awaitStatus("o-2", "compensated")
      yield* awaitStatus("o-3", "compensated")

      const all = yield* call("GET", "/admin/api/runs")
      assert.strictEqual(all.status, 200)
      assert.deepStrictEqual(all.json.runs.map((r: any) => r.id).sort(), ["o-1", "o-2", "o-3"])
      assert.isNull(all.json.nextCursor)

      const compensated = yield* call("GET", "/admin/api/runs?status=compensated")
      assert.deepStrictEqual(compensated.json.runs.map((r: any) => r.id).sort(), ["o-2", "o-3"])
      const first = compensated.json.runs[0]
      assert.strictEqual(first.workflow, "admin-checkout")
      assert.strictEqual(first.status, "compensated")
      assert.deepStrictEqual(first.payload, { orderId: first.id, confirm: false })
      assert.include(first.errorMessage, "CardDeclined")
      assert.include(first.errorMessage, `card of ${first.id} declined`)
      assert.match(first.createdAt, /^\d{4}-\d\d-\d\dT/)

      const several = yield* call("GET", "/admin/api/runs?status=succeeded,compensated&workflow=admin-checkout")
      assert.strictEqual(several.json.runs.length, 3)
      const otherWorkflow = yield* call("GET", "/admin/api/runs?workflow=nope")
      assert.deepStrictEqual(otherWorkflow.json.runs, [])

      // keyset pagination: two pages of one and two, no run twice
      const page1 = yield* call("GET", "/admin/api/runs?limit=2")
      assert.strictEqual(page1.json.runs.length, 2)
      assert.isString(page1.json.nextCursor)
      const page2 = yield* call("GET", `/admin/api/runs?limit=2&cursor=${encodeURIComponent(page1.json.nextCursor)}`)
      assert.strictEqual(page2.json.runs.length, 1)
      const seen = [...page1.json.runs, ...page2.json.runs].map((r: any) => r.id).sort()
      assert.deepStrictEqual(seen, ["o-1", "o-2", "o-3"])

      const stats = yield* call("GET", "/admin/api/stats")
      assert.strictEqual(stats.status, 200)
      const count = (status: string) =>
        stats.json.counts.find((c: any) => c.workflow === "admin-checkout" && c.status === status)?.count
      assert.strictEqual(count("succeeded"), 1)
      assert.strictEqual(count("compensated"), 2)
    }).pipe(withEnv(control))
  })

  it.live("inspects a compensated run: journal, failed attempts with their error, compensations", () => {
    const control = makeControl()
    control.decline.add("o-1")
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: false })
      yield* awaitStatus("o-1", "compensated")

      const reply = yield* call("GET", "/admin/api/runs/o-1")
      assert.strictEqual(reply.status, 200)
      const details = reply.json
      assert.strictEqual(details.run.status, "compensated")
      assert.deepStrictEqual(
        details.entries.map((e: any) => [e.key, e.kind, e.status]),
        [
          ["reserve-inventory", "step", "succeeded"],
          ["charge-card", "step", "failed"],
          ["reserve-inventory#compensate", "compensation", "succeeded"]
        ]
      )
      const charge = details.entries[1]
      assert.deepStrictEqual(charge.error, {
        _tag: "CardDeclined",
        reason: "card of o-1 declined by the <issuer> & bank"
      })
      assert.include(charge.errorMessage, "declined by the <issuer> & bank")
      const attempts = details.attempts.filter((a: any) => a.key === "charge-card")
      assert.deepStrictEqual(attempts.map((a: any) => [a.attempt, a.outcome]), [[1, "retrying"], [2, "failed"]])
      for (const attempt of attempts) assert.include(attempt.error, "declined by the <issuer> & bank")
      assert.deepStrictEqual(details.archivedEntries, [])
      assert.deepStrictEqual(details.signals, [])
      assert.deepStrictEqual(details.children, [])

      // IDs with slashes, spaces and non-ASCII letters are path-encoded
      const odd = "tenant/42 über?#"
      yield* client.start(Checkout, { orderId: odd, confirm: false })
      yield* awaitStatus(odd, "succeeded")
      const oddReply = yield* call("GET", `/admin/api/runs/${encodeURIComponent(odd)}`)
      assert.strictEqual(oddReply.status, 200)
      assert.strictEqual(oddReply.json.run.id, odd)
      const oddPage = yield* call("GET", `/admin/runs/${encodeURIComponent(odd)}`)
      assert.strictEqual(oddPage.status, 200)
      assert.include(oddPage.text, "tenant/42 über?#")

      const missing = yield* call("GET", "/admin/api/runs/no-such-run")
      assert.strictEqual(missing.status, 404)
      isProblem(missing, 404)
      assert.include(missing.json.detail, "no-such-run")
    }).pipe(withEnv(control))
  })

  it.live("signals a waiting run (a repeated signal ID is a duplicate) and it completes", () => {
    const control = makeControl()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: true })
      yield* awaitStatus("o-1", "waiting")

      const sent = yield* call("POST", "/admin/api/runs/o-1/signal", {
        body: { name: "payment-confirmed", payload: { ok: true }, signalId: "evt-1" }
      })
      assert.strictEqual(sent.status, 200)
      assert.deepStrictEqual(sent.json, { runId: "o-1", name: "payment-confirmed", duplicate: false })
      const again = yield* call("POST", "/admin/api/runs/o-1/signal", {
        body: { name: "payment-confirmed", payload: { ok: false }, signalId: "evt-1" }
      })
      assert.strictEqual(again.json.duplicate, true)

      const receipt = yield* client.result(Checkout, "o-1")
      assert.deepStrictEqual(receipt, { shipment: "sh-ch-res-o-1" })
      const details = yield* call("GET", "/admin/api/runs/o-1")
      assert.deepStrictEqual(details.json.signals.map((s: any) => [s.name, s.signalId, s.payload]), [
        ["payment-confirmed", "evt-1", { ok: true }]
      ])

      const unknownRun = yield* call("POST", "/admin/api/runs/nope/signal", { body: { name: "x", payload: 1 } })
      isProblem(unknownRun, 404)
    }).pipe(withEnv(control))
  })

  it.live("cancels a waiting run, which compensates; cancelling it again is 409", () => {
    const control = makeControl()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: true })
      yield* awaitStatus("o-1", "waiting")

      const cancelled = yield* call("POST", "/admin/api/runs/o-1/cancel")
      assert.strictEqual(cancelled.status, 200)
      assert.strictEqual(cancelled.json.id, "o-1")
      assert.isTrue(cancelled.json.cancelRequested)
      const finished = yield* awaitStatus("o-1", "cancelled")
      assert.strictEqual(finished.status, "cancelled")
      const { entries } = yield* client.inspect("o-1")
      assert.deepStrictEqual(
        entries.filter((e) => e.kind === "compensation").map((e) => [e.key, e.status]).sort(),
        [["charge-card#compensate", "succeeded"], ["reserve-inventory#compensate", "succeeded"]]
      )

      const twice = yield* call("POST", "/admin/api/runs/o-1/cancel", { body: {} })
      assert.strictEqual(twice.status, 409)
      isProblem(twice, 409)
      assert.strictEqual(twice.json.runStatus, "cancelled")
      const missing = yield* call("POST", "/admin/api/runs/nope/cancel")
      isProblem(missing, 404)
    }).pipe(withEnv(control))
  })

  it.live("resumes a parked run after the bug is fixed; resuming a finished run is 409", () => {
    const control = makeControl()
    control.crash.add("o-1")
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: false })
      yield* awaitStatus("o-1", "needs_attention")
      const parked = yield* call("GET", "/admin/api/runs/o-1")
      assert.include(parked.json.run.errorMessage, "StepDefect")
      assert.include(parked.json.run.errorMessage, "shipping label printer on fire")

      control.crash.delete("o-1")
      const resumed = yield* call("POST", "/admin/api/runs/o-1/resume")
      assert.strictEqual(resumed.status, 200)
      assert.strictEqual(resumed.json.status, "pending")
      assert.deepStrictEqual(yield* client.result(Checkout, "o-1"), { shipment: "sh-ch-res-o-1" })

      const again = yield* call("POST", "/admin/api/runs/o-1/resume")
      isProblem(again, 409)
      assert.strictEqual(again.json.runStatus, "succeeded")
    }).pipe(withEnv(control))
  })

  it.live("retries a compensated run from the failed step; an unknown step is 400 naming the steps", () => {
    const control = makeControl()
    control.decline.add("o-1")
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: false })
      yield* awaitStatus("o-1", "compensated")

      const unknown = yield* call("POST", "/admin/api/runs/o-1/retry", { body: { fromStep: "ship-it" } })
      assert.strictEqual(unknown.status, 400)
      isProblem(unknown, 400)
      assert.deepStrictEqual(unknown.json.steps, ["reserve-inventory", "charge-card"])
      assert.strictEqual((yield* client.get("o-1")).status, "compensated")

      control.decline.delete("o-1")
      const retried = yield* call("POST", "/admin/api/runs/o-1/retry", { body: { fromStep: "charge-card" } })
      assert.strictEqual(retried.status, 200)
      assert.strictEqual(retried.json.status, "pending")
      assert.deepStrictEqual(yield* client.result(Checkout, "o-1"), { shipment: "sh-ch-res-o-1" })

      const details = (yield* call("GET", "/admin/api/runs/o-1")).json
      assert.strictEqual(details.run.status, "succeeded")
      assert.isTrue(details.archivedEntries.length > 0)
      assert.isTrue(details.archivedEntries.every((e: any) => e.generation === 1))
      assert.includeMembers(details.archivedEntries.map((e: any) => e.key), ["charge-card"])
      assert.isTrue(
        details.archivedAttempts.some((a: any) =>
          a.key === "charge-card" && a.outcome === "failed" && a.generation === 1
        )
      )

      const finished = yield* call("POST", "/admin/api/runs/o-1/retry")
      isProblem(finished, 409)
    }).pipe(withEnv(control))
  })

  it.live("bad input is 400 problem+json; actions without a JSON content type are 415", () => {
    const control = makeControl()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: true })
      yield* awaitStatus("o-1", "waiting")

      for (
        const path of [
          "/admin/api/runs?status=bogus",
          "/admin/api/runs?limit=0",
          "/admin/api/runs?limit=ten",
          "/admin/api/runs?limit=100000",
          "/admin/api/runs?workflow=a&workflow=b"
        ]
      ) {
        const reply = yield* call("GET", path)
        assert.strictEqual(reply.status, 400, path)
        isProblem(reply, 400)
      }
      const bogus = yield* call("GET", "/admin/api/runs?status=bogus")
      assert.include(bogus.json.detail, "\"bogus\"")

      const noName = yield* call("POST", "/admin/api/runs/o-1/signal", { body: { payload: 1 } })
      isProblem(noName, 400)
      assert.strictEqual(noName.json.errors[0].path, "name")
      const extra = yield* call("POST", "/admin/api/runs/o-1/signal", { body: { name: "x", payload: 1, admin: true } })
      isProblem(extra, 400)
      const notJson = yield* call("POST", "/admin/api/runs/o-1/signal", { raw: "{name: x" })
      isProblem(notJson, 400)
      assert.strictEqual(notJson.json.title, "Invalid JSON")
      const badRetry = yield* call("POST", "/admin/api/runs/o-1/retry", { body: { fromStep: 42 } })
      isProblem(badRetry, 400)

      // a cross-site form could post text/plain without a preflight: refused, nothing happens
      const form = yield* call("POST", "/admin/api/runs/o-1/cancel", {
        raw: "x=1",
        headers: { "content-type": "text/plain" }
      })
      assert.strictEqual(form.status, 415)
      isProblem(form, 415)
      const run = yield* client.get("o-1")
      assert.strictEqual(run.status, "waiting")
      assert.isFalse(run.cancelRequested)
    }).pipe(withEnv(control))
  })
})

describe("Admin auth", () => {
  it.live("Admin.bearer: no or a wrong token is 401 (WWW-Authenticate); the right one (header, cookie) passes", () => {
    const control = makeControl()
    const auth = { auth: Admin.bearer(Redacted.make("s3cret-token")) }
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: true })
      yield* awaitStatus("o-1", "waiting")

      const none = yield* call("GET", "/admin/api/runs")
      assert.strictEqual(none.status, 401)
      isProblem(none, 401)
      assert.strictEqual(none.headers.get("www-authenticate"), `Bearer realm="memento-admin"`)
      const wrong = yield* call("GET", "/admin/api/runs", { headers: { authorization: "Bearer s3cret-tokem" } })
      assert.strictEqual(wrong.status, 401)
      const basic = yield* call("GET", "/admin/api/runs", { headers: { authorization: "Basic czNjcmV0LXRva2Vu" } })
      assert.strictEqual(basic.status, 401)
      // a rejected action does nothing
      const cancel = yield* call("POST", "/admin/api/runs/o-1/cancel", { headers: { authorization: "Bearer nope" } })
      assert.strictEqual(cancel.status, 401)
      assert.isFalse((yield* client.get("o-1")).cancelRequested)
      // the dashboard answers with a sign-in page
      const page = yield* call("GET", "/admin/")
      assert.strictEqual(page.status, 401)
      assert.include(page.headers.get("content-type") ?? "", "text/html")
      assert.include(page.text, "id=\"sign-in\"")
      assert.notInclude(page.text, "o-1")

      const ok = yield* call("GET", "/admin/api/runs", { headers: { authorization: "Bearer s3cret-token" } })
      assert.strictEqual(ok.status, 200, ok.text)
      assert.deepStrictEqual(ok.json.runs.map((r: any) => r.id), ["o-1"])
      const cookie = yield* call("GET", "/admin/", { headers: { cookie: "memento_admin_token=s3cret-token" } })
      assert.strictEqual(cookie.status, 200)
      assert.include(cookie.text, "o-1")
      const cancelled = yield* call("POST", "/admin/api/runs/o-1/cancel", {
        headers: { authorization: "bearer s3cret-token" }
      })
      assert.strictEqual(cancelled.status, 200)
      assert.isTrue((yield* client.get("o-1")).cancelRequested)
    }).pipe(withEnv(control, auth))
  })

  it.live("a custom auth check: its principal passes, false is 401, a failing check is 500", () => {
    const control = makeControl()
    const auth: Admin.Auth<string> = (request) => {
      const user = request.headers["x-user"]
      if (user === "boom") return Effect.fail("directory unavailable")
      return Effect.succeed(user === "ops" ? "ops" : false)
    }
    return Effect.gen(function*() {
      assert.strictEqual((yield* call("GET", "/admin/api/stats", { headers: { "x-user": "ops" } })).status, 200)
      assert.strictEqual((yield* call("GET", "/admin/api/stats", { headers: { "x-user": "eve" } })).status, 401)
      const failed = yield* call("GET", "/admin/api/stats", { headers: { "x-user": "boom" } })
      assert.strictEqual(failed.status, 500)
      isProblem(failed, 500)
      // routes outside the admin router are not affected
      assert.strictEqual((yield* call("GET", "/health")).status, 200)
    }).pipe(Effect.scoped, Effect.provide(env(control, { auth })))
  })

  it.live("without auth it refuses to start on a non-loopback address (0.0.0.0), with auth it starts", () =>
    Effect.gen(function*() {
      const control = makeControl()
      const open = Admin.router().pipe(Effect.provide(server("0.0.0.0")), Effect.scoped)
      const exit = yield* Effect.exit(open)
      assert.isTrue(Exit.isFailure(exit))
      if (Exit.isFailure(exit)) {
        const error = exit.cause._tag === "Fail" ? exit.cause.error : undefined
        assert.instanceOf(error, Admin.AdminAuthRequired)
        assert.match(error!.address, /^http:\/\/0\.0\.0\.0:\d+$/)
        assert.include(error!.message, "not a loopback address")
        assert.include(error!.message, "Admin.bearer")
      }

      // Admin.layer on a public address with auth: serves under its prefix
      const served = Admin.layer({ auth: Admin.bearer("t0ken"), prefix: "/ops" }).pipe(
        Layer.provideMerge(server("0.0.0.0")),
        Layer.provideMerge(memento(control))
      )
      yield* Effect.gen(function*() {
        const ok = yield* call("GET", "/ops/api/stats", { headers: { authorization: "Bearer t0ken" } })
        assert.strictEqual(ok.status, 200, ok.text)
        assert.deepStrictEqual(ok.json, { counts: [] })
        const notFound = yield* call("GET", "/elsewhere")
        isProblem(notFound, 404)
      }).pipe(Effect.provide(served), Effect.scoped)

      // and without auth on a public address the layer fails to build
      const unprotected = Admin.layer().pipe(Layer.provideMerge(server("0.0.0.0")), Layer.provide(memento(control)))
      const refused = yield* Effect.exit(Effect.scoped(Layer.build(unprotected)))
      assert.isTrue(Exit.isFailure(refused))
    }))

  it("isLoopback", () => {
    const tcp = (hostname: string): HttpServer.Address => ({ _tag: "TcpAddress", hostname, port: 1 })
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"]) {
      assert.isTrue(Admin.isLoopback(tcp(host)), host)
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "192.168.1.5", "example.com", "128.0.0.1", "::ffff:10.0.0.1"]) {
      assert.isFalse(Admin.isLoopback(tcp(host)), host)
    }
    assert.isTrue(Admin.isLoopback({ _tag: "UnixAddress", path: "/tmp/admin.sock" }))
  })
})

describe("Admin API over SQLite", () => {
  it.live("inspects a compensated run, retries it and lists runs on a SQLite file", () => {
    const control = makeControl()
    control.noCarrier.add("o-1")
    const dir = mkdtempSync(join(tmpdir(), "memento-admin-"))
    const store = SqlStore.layerSqlite({ filename: join(dir, "memento.db") })
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: false })
      yield* awaitStatus("o-1", "compensated")

      const details = (yield* call("GET", "/admin/api/runs/o-1")).json
      assert.deepStrictEqual(details.entries.map((e: any) => [e.key, e.status]), [
        ["reserve-inventory", "succeeded"],
        ["charge-card", "succeeded"],
        ["create-shipment", "failed"],
        ["charge-card#compensate", "succeeded"],
        ["reserve-inventory#compensate", "succeeded"]
      ])
      assert.include(details.run.errorMessage, "NoCarrier: no carrier <accepts> parcels for o-1 today")
      const failed = details.attempts.filter((a: any) => a.key === "create-shipment").map((a: any) => a.outcome)
      assert.deepStrictEqual(failed, ["retrying", "failed"])

      control.noCarrier.delete("o-1")
      const retried = yield* call("POST", "/admin/api/runs/o-1/retry", { body: {} })
      assert.strictEqual(retried.status, 200)
      assert.deepStrictEqual(yield* client.result(Checkout, "o-1"), { shipment: "sh-ch-res-o-1" })
      const after = (yield* call("GET", "/admin/api/runs/o-1")).json
      assert.strictEqual(after.run.status, "succeeded")
      assert.includeMembers(after.archivedEntries.map((e: any) => e.key), ["create-shipment", "charge-card#compensate"])

      const listed = yield* call("GET", "/admin/api/runs?status=succeeded")
      assert.deepStrictEqual(listed.json.runs.map((r: any) => r.id), ["o-1"])
      const page = yield* call("GET", "/admin/runs/o-1")
      assert.strictEqual(page.status, 200)
      assert.include(page.text, "<svg")
    }).pipe(
      Effect.scoped,
      Effect.provide(env(control, {}, store)),
      Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    )
  })

  it.live("retrying a run whose stored journal no longer decodes is 409 problem+json naming the step", () => {
    const control = makeControl()
    control.noCarrier.add("o-2")
    const dir = mkdtempSync(join(tmpdir(), "memento-admin-"))
    const filename = join(dir, "memento.db")
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-2", confirm: false })
      yield* awaitStatus("o-2", "compensated")
      // damage one journal row behind the store's back (a second connection to the same file)
      yield* Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`UPDATE memento_journal SET kind = 'bogus' WHERE run_id = 'o-2' AND key = 'charge-card'`
      }).pipe(Effect.provide(SqliteClient.layer({ filename })), Effect.orDie)

      const retried = yield* call("POST", "/admin/api/runs/o-2/retry", { body: {} })
      isProblem(retried, 409)
      assert.strictEqual(retried.json.title, "Journal does not decode")
      assert.deepStrictEqual([retried.json.runId, retried.json.stepKey], ["o-2", "charge-card"])
      assert.strictEqual((yield* client.get("o-2")).status, "compensated", "nothing was changed")
    }).pipe(
      Effect.scoped,
      Effect.provide(env(control, {}, SqlStore.layerSqlite({ filename }))),
      Effect.ensuring(Effect.sync(() => rmSync(dir, { recursive: true, force: true })))
    )
  })
})
