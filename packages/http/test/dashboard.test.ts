/**
 * The dashboard in a real browser: headless Chromium driven by playwright-core against a real
 * server with a MemoryStore and a Worker running the checkout saga. It filters and pages the runs
 * list, opens a compensated run, checks the SVG timeline (a bar per step and compensation, the
 * failed attempts in red with their error), saves a screenshot to test/screenshots/compensated-run.png
 * (git-ignored; the copy in the README is docs/dashboard-compensated-run.png), shows retried
 * generations greyed, cancels a run with the page's button, and checks that run data cannot inject
 * HTML.
 *
 * The browser is the Chromium build that the `@sparticuz/chromium` devDependency ships inside its
 * npm package (so `npm test` needs nothing installed), unpacked once into
 * node_modules/.cache/memento-chromium; `CHROMIUM_PATH` picks another Chromium instead (Debian's
 * `/usr/bin/chromium`, say).
 */
import { assert, describe, it } from "@effect/vitest"
import { Admin, Dashboard } from "@memento/http"
import type { WorkflowStore } from "@memento/workflow"
import { WorkflowClient } from "@memento/workflow"
import { Effect } from "effect"
import { existsSync, mkdirSync } from "node:fs"
import { createRequire } from "node:module"
import { join, sep } from "node:path"
import { fileURLToPath } from "node:url"
import type { Browser, Page } from "playwright-core"
import { chromium } from "playwright-core"
import { awaitStatus, baseUrl, Checkout, env, makeControl } from "./adminFixtures.js"

const screenshots = fileURLToPath(new URL("./screenshots/", import.meta.url))

/**
 * The bundled Chromium: `@sparticuz/chromium` unpacks it into the system's temporary folder as it
 * finds it when called (and reuses what is there); pointed at a cache folder of node_modules, it
 * leaves nothing in /tmp and is removed with node_modules.
 */
const bundledChromium = async (): Promise<string> => {
  const entry = createRequire(import.meta.url).resolve("@sparticuz/chromium")
  const nodeModules = entry.slice(0, entry.lastIndexOf(`${sep}@sparticuz${sep}`))
  const cache = join(nodeModules, ".cache", "memento-chromium")
  mkdirSync(cache, { recursive: true })
  const { default: Bundled } = await import("@sparticuz/chromium")
  const tmpdir = process.env.TMPDIR
  process.env.TMPDIR = cache
  try {
    return await Bundled.executablePath()
  } finally {
    if (tmpdir === undefined) delete process.env.TMPDIR
    else process.env.TMPDIR = tmpdir
  }
}

/** A headless Chromium for the test's scope; a clear failure (not a skip) when it cannot start. */
const browser = Effect.acquireRelease(
  Effect.tryPromise({
    try: async () => {
      const configured = process.env.CHROMIUM_PATH
      if (configured !== undefined && configured !== "" && !existsSync(configured)) {
        throw new Error(`CHROMIUM_PATH is ${configured}, which does not exist`)
      }
      const executablePath = configured !== undefined && configured !== "" ? configured : await bundledChromium()
      return await chromium.launch({
        executablePath,
        // no sandbox (tests may run as root); nothing that reaches for Google's hosts, which a
        // closed network refuses
        args: [
          "--no-sandbox",
          "--disable-gpu",
          "--no-first-run",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync"
        ],
        headless: true
      })
    },
    catch: (error) =>
      new Error(
        `the dashboard test could not start Chromium (the @sparticuz/chromium build, unpacked into ` +
          `node_modules/.cache/memento-chromium: delete that folder to unpack it again; or CHROMIUM_PATH): ` +
          `${error instanceof Error ? error.message : String(error)}`
      )
  }).pipe(Effect.orDie),
  (browser: Browser) => Effect.promise(() => browser.close())
)

const withPage = <A>(browser: Browser, f: (page: Page) => Promise<A>) =>
  Effect.promise(async () => {
    const page = await browser.newPage({ viewport: { width: 1280, height: 900 } })
    try {
      return await f(page)
    } finally {
      await page.close()
    }
  })

const xssId = `<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">`

/** The switches `seed` needs: which orders are declined, which find no carrier. */
const seedControl = (stepMs: number) => {
  const control = makeControl()
  control.stepMs = stepMs
  for (const id of ["o-declined", xssId, "o-retried"]) control.decline.add(id)
  control.noCarrier.add("o-shipping")
  return control
}

/**
 * Runs of every interesting kind: succeeded, compensated after the charge was declined (three, one
 * with a hostile ID), compensated after the last step failed, retried, waiting.
 */
const seed = Effect.gen(function*() {
  const client = yield* WorkflowClient.WorkflowClient
  yield* client.start(Checkout, { orderId: "o-good", confirm: false })
  yield* awaitStatus("o-good", "succeeded")
  yield* client.start(Checkout, { orderId: "o-declined", confirm: false })
  yield* awaitStatus("o-declined", "compensated")
  yield* client.start(Checkout, { orderId: "o-shipping", confirm: false })
  yield* awaitStatus("o-shipping", "compensated")
  yield* client.start(Checkout, { orderId: xssId, confirm: false })
  yield* awaitStatus(xssId, "compensated")
  yield* client.start(Checkout, { orderId: "o-retried", confirm: false })
  yield* awaitStatus("o-retried", "compensated")
  yield* client.retry("o-retried", { fromStep: "charge-card" })
  yield* awaitStatus("o-retried", "compensated")
  yield* client.start(Checkout, { orderId: "o-waiting", confirm: true })
  yield* awaitStatus("o-waiting", "waiting")
})

describe("dashboard in headless Chromium", () => {
  it.live("runs list: status filter, pagination, links to runs; run data is escaped", () => {
    const control = seedControl(5)
    return Effect.gen(function*() {
      yield* seed
      const base = yield* baseUrl
      const chrome = yield* browser
      yield* withPage(chrome, async (page) => {
        const response = await page.goto(`${base}/admin`)
        assert.strictEqual(response?.status(), 200)
        const ids = () => page.locator("tr.run").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-id")))
        assert.sameMembers(await ids(), ["o-good", "o-declined", "o-shipping", xssId, "o-retried", "o-waiting"])
        assert.strictEqual(await page.locator(`.filters a[data-status="compensated"] .muted`).textContent(), "4")

        // status filter
        await page.click(`.filters a[data-status="compensated"]`)
        await page.waitForURL(/status=compensated/)
        assert.sameMembers(await ids(), ["o-declined", "o-shipping", xssId, "o-retried"])
        const statuses = await page.locator("tr.run").evaluateAll((rows) =>
          rows.map((r) => r.getAttribute("data-status"))
        )
        assert.deepStrictEqual(new Set(statuses), new Set(["compensated"]))
        assert.strictEqual(await page.locator(`.filters a.on`).getAttribute("data-status"), "compensated")
        await page.click(`.filters a[data-status="waiting"]`)
        await page.waitForURL(/status=waiting/)
        assert.deepStrictEqual(await ids(), ["o-waiting"])

        mkdirSync(screenshots, { recursive: true })
        await page.goto(`${base}/admin/`)
        await page.screenshot({ path: `${screenshots}runs-list.png` })

        // pagination: 2 + 2 + 2, every run once
        await page.goto(`${base}/admin/?limit=2`)
        const seen: Array<string | null> = [...await ids()]
        assert.strictEqual(seen.length, 2)
        for (let pageNo = 2; pageNo <= 3; pageNo++) {
          await page.click(`a[rel="next"]`)
          await page.waitForURL(/cursor=/)
          seen.push(...await ids())
        }
        assert.strictEqual(await page.locator(`a[rel="next"]`).count(), 0)
        assert.sameMembers(seen, ["o-good", "o-declined", "o-shipping", xssId, "o-retried", "o-waiting"])

        // the hostile ID is shown as text, nothing ran
        await page.goto(`${base}/admin/`)
        assert.isUndefined(await page.evaluate(() => (globalThis as any).__xss))
        const link = page.locator(`tr.run[data-status="compensated"] a`).filter({ hasText: "<script>" })
        assert.strictEqual(await link.count(), 1)
        assert.include(await link.textContent(), "<script>window.__xss = 1</script>")
        assert.strictEqual(await page.locator("img[src=x]").count(), 0)
        await link.click()
        await page.waitForURL(/\/admin\/runs\//)
        assert.strictEqual(await page.locator("h1").textContent(), `Run ${xssId}`)
        assert.isUndefined(await page.evaluate(() => (globalThis as any).__xss))
        assert.strictEqual(await page.locator("img[src=x]").count(), 0)
        assert.strictEqual(await page.locator(`svg.timeline g.row`).count(), 3)
      })
      // signal names and payloads come from API callers: escaped as well
      const client = yield* WorkflowClient.WorkflowClient
      const hostilePayload = "</code></script><script>window.__xss = 4</script>"
      yield* client.signal("o-waiting", `<img src=x onerror="window.__xss = 3">`, hostilePayload)
      yield* withPage(chrome, async (page) => {
        await page.goto(`${base}/admin/runs/o-waiting`)
        assert.include(await page.locator("table.signals").textContent(), `<img src=x onerror="window.__xss = 3">`)
        assert.include(await page.locator("table.signals").textContent(), "<script>window.__xss = 4</script>")
        assert.isUndefined(await page.evaluate(() => (globalThis as any).__xss))
        assert.strictEqual(await page.locator("img").count(), 0)
      })
    }).pipe(Effect.scoped, Effect.provide(env(control)))
  })

  it.live("a compensated run's timeline: a bar per step and compensation, failed attempts red with the error", () => {
    const control = seedControl(40) // visible bars
    return Effect.gen(function*() {
      yield* seed
      const base = yield* baseUrl
      const chrome = yield* browser
      yield* withPage(chrome, async (page) => {
        // the saga whose last step (create-shipment) failed: the charge is refunded, the stock released
        await page.goto(`${base}/admin/?status=compensated`)
        await page.click(`tr.run[data-id="o-shipping"] a`)
        await page.waitForURL(/\/admin\/runs\/o-shipping$/)
        assert.strictEqual(await page.locator("[data-run-id]").getAttribute("data-status"), "compensated")
        assert.include(await page.locator(".run-error").textContent(), "no carrier <accepts> parcels for o-shipping")

        const svg = page.locator("svg.timeline")
        assert.strictEqual(await svg.count(), 1)
        const rows = await svg.locator("g.row").evaluateAll((groups) =>
          groups.map((g) => [g.getAttribute("data-key"), g.getAttribute("data-kind"), g.getAttribute("data-status")])
        )
        assert.deepStrictEqual(rows, [
          ["reserve-inventory", "step", "succeeded"],
          ["charge-card", "step", "succeeded"],
          ["create-shipment", "step", "failed"],
          ["charge-card#compensate", "compensation", "succeeded"],
          ["reserve-inventory#compensate", "compensation", "succeeded"]
        ])
        // each row has a visible bar; the bars follow one another in time
        const boxes = await svg.locator("g.row rect.span").evaluateAll((rects) =>
          rects.map((r) => ({ x: Number(r.getAttribute("x")), width: Number(r.getAttribute("width")) }))
        )
        assert.strictEqual(boxes.length, 5)
        for (const box of boxes) assert.isAtLeast(box.width, 2)
        for (let i = 1; i < boxes.length; i++) assert.isBelow(boxes[i - 1]!.x, boxes[i]!.x)

        // the shipment's two attempts, both failed, red, with the error in their tooltip
        const attempts = await svg.locator(`g.row[data-key="create-shipment"] rect.attempt`).evaluateAll((rects) =>
          rects.map((r) => ({
            outcome: r.getAttribute("data-outcome"),
            fill: r.getAttribute("fill"),
            title: r.querySelector("title")?.textContent ?? ""
          }))
        )
        assert.deepStrictEqual(attempts.map((a) => a.outcome), ["retrying", "failed"])
        for (const attempt of attempts) {
          assert.strictEqual(attempt.fill, "#e03131")
          assert.include(attempt.title, "no carrier <accepts> parcels for o-shipping today")
        }
        // steps that succeeded in green, compensations in their own colour
        const fills = (selector: string) =>
          svg.locator(`${selector} rect.attempt`).evaluateAll((rects) => rects.map((r) => r.getAttribute("fill")))
        assert.deepStrictEqual(await fills(`g.row[data-kind="step"][data-status="succeeded"]`), ["#2f9e44", "#2f9e44"])
        assert.deepStrictEqual(await fills(`g.row[data-kind="compensation"]`), ["#7048e8", "#7048e8"])
        // failed attempts listed beneath the picture with their error
        const failures = page.locator("li.failure")
        assert.strictEqual(await failures.count(), 2)
        assert.include(await failures.first().textContent(), "no carrier <accepts> parcels for o-shipping today")
        assert.isTrue(await page.getByText("Failed attempts").isVisible())

        mkdirSync(screenshots, { recursive: true })
        await page.screenshot({ path: `${screenshots}compensated-run.png`, fullPage: true })

        // a retried run: the first generation greyed above the current one
        await page.goto(`${base}/admin/runs/o-retried`)
        const archived = svg.locator(`g.row.archived`)
        assert.isAtLeast(await archived.count(), 2)
        assert.deepStrictEqual(
          new Set(await archived.evaluateAll((gs) => gs.map((g) => g.getAttribute("opacity")))),
          new Set(["0.45"])
        )
        assert.includeMembers(
          await archived.evaluateAll((gs) => gs.map((g) => g.getAttribute("data-key"))),
          ["charge-card", "reserve-inventory#compensate"]
        )
        assert.isAtLeast(await svg.locator(`g.row[data-generation="current"]`).count(), 2)
        await page.screenshot({ path: `${screenshots}retried-run.png`, fullPage: true })
      })
    }).pipe(Effect.scoped, Effect.provide(env(control)))
  })

  it.live("the run page's Cancel button cancels a waiting run through the admin API", () => {
    const control = makeControl()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-waiting", confirm: true })
      yield* awaitStatus("o-waiting", "waiting")
      const base = yield* baseUrl
      const chrome = yield* browser
      yield* withPage(chrome, async (page) => {
        await page.goto(`${base}/admin/runs/o-waiting`)
        assert.strictEqual(await page.locator(`button[data-action="retry"]`).count(), 0)
        page.once("dialog", (dialog) => void dialog.accept())
        await page.click(`button[data-action="cancel"]`)
        await page.locator("#notice").filter({ hasText: "cancel: done" }).waitFor()
      })
      const run = yield* awaitStatus("o-waiting", "cancelled")
      assert.isTrue(run.cancelRequested || run.status === "cancelled")
    }).pipe(Effect.scoped, Effect.provide(env(control)))
  })

  it.live("with Admin.bearer the dashboard shows a sign-in form; the token it stores opens the dashboard", () => {
    const control = makeControl()
    return Effect.gen(function*() {
      const client = yield* WorkflowClient.WorkflowClient
      yield* client.start(Checkout, { orderId: "o-1", confirm: false })
      yield* awaitStatus("o-1", "succeeded")
      const base = yield* baseUrl
      const chrome = yield* browser
      yield* withPage(chrome, async (page) => {
        const denied = await page.goto(`${base}/admin/`)
        assert.strictEqual(denied?.status(), 401)
        const csp = denied?.headers()["content-security-policy"] ?? ""
        assert.match(csp, /script-src 'sha256-[^']+' 'sha256-[^']+';/)
        assert.strictEqual(await page.locator("tr.run").count(), 0)
        await page.fill("#token", "wrong")
        await Promise.all([page.waitForEvent("load"), page.press("#token", "Enter")])
        assert.strictEqual(await page.locator("#sign-in").count(), 1)
        await page.fill("#token", "dash-token")
        await Promise.all([page.waitForEvent("load"), page.press("#token", "Enter")])
        await page.locator("tr.run").first().waitFor()
        const ids = await page.locator("tr.run").evaluateAll((rows) => rows.map((r) => r.getAttribute("data-id")))
        assert.deepStrictEqual(ids, ["o-1"])
        const cookie = (await page.context().cookies()).find((c) => c.name === "memento_admin_token")
        assert.strictEqual(cookie?.path, "/admin")
        assert.strictEqual(cookie?.sameSite, "Strict")
      })
    }).pipe(Effect.scoped, Effect.provide(env(control, { auth: Admin.bearer("dash-token") })))
  })
})

describe("Dashboard.timeline", () => {
  const entry = (
    key: string,
    seq: number,
    kind: WorkflowStore.EntryKind,
    status: WorkflowStore.EntryStatus,
    startedAt: number,
    completedAt: number | null
  ): WorkflowStore.JournalEntry => ({
    key,
    seq,
    kind,
    status,
    output: null,
    error: status === "failed" ? JSON.stringify({ _tag: "SignalTimeout", signal: "approval" }) : null,
    attempts: 1,
    meta: null,
    startedAt,
    completedAt
  })
  const details: WorkflowStore.RunDetails = {
    run: {
      id: "r-1",
      workflow: "w",
      status: "running",
      payload: "null",
      output: null,
      error: null,
      epoch: 2,
      leaseOwner: "worker-1",
      leaseExpiresAt: 50_000,
      runnableAt: null,
      cancelRequested: false,
      recoveries: 0,
      parentId: null,
      createdAt: 1_000,
      updatedAt: 9_000,
      completedAt: null
    },
    entries: [
      entry("cooling-off", 1, "sleep", "succeeded", 1_000, 4_000),
      entry("approval", 2, "signal", "failed", 4_000, 6_000),
      entry("invoice", 3, "child", "succeeded", 6_000, 7_000),
      entry(`<b>bold</b> & "quoted"`, 4, "step", "started", 7_000, null)
    ],
    attempts: [
      { key: `<b>bold</b> & "quoted"`, attempt: 1, outcome: "running", error: null, startedAt: 7_000, endedAt: null }
    ],
    archivedEntries: [],
    archivedAttempts: [],
    signals: [],
    children: []
  }

  it("draws sleeps, signal waits, child runs and running steps, ending open bars at now, escaping keys", () => {
    const svg = Dashboard.timeline(details, { now: 11_000 })
    const rows = [...svg.matchAll(/<g class="row" data-key="([^"]*)" data-kind="(\w+)" data-status="(\w+)"/g)]
      .map((m) => [m[1], m[2], m[3]])
    assert.deepStrictEqual(rows, [
      ["cooling-off", "sleep", "succeeded"],
      ["approval", "signal", "failed"],
      ["invoice", "child", "succeeded"],
      ["&lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot;", "step", "started"]
    ])
    assert.notInclude(svg, "<b>")
    const bar = (outcome: string) => new RegExp(`class="attempt" data-outcome="${outcome}"[^>]*fill="(#[0-9a-f]+)"`)
    assert.strictEqual(svg.match(bar("running"))?.[1], "#1c7ed6")
    assert.include(svg, `data-outcome="failed" x=`) // the signal wait that timed out
    assert.match(svg, /data-outcome="failed"[^>]*fill="#e03131"><title>[^<]*SignalTimeout/)
    // the running step's bar reaches now: 10 s of an axis from 1 s to 11 s ends at the plot's right edge
    const running = svg.match(/data-outcome="running" data-attempt="1" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"/)
    assert.isNotNull(running)
    const right = Number(running![1]) + Number(running![2])
    assert.closeTo(right, 1100 - 90 - 10, 0.5)
    assert.include(svg, ">running</text>")
  })
})
