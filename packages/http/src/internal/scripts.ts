/**
 * The dashboard's two inline scripts, kept static (run data reaches them only through escaped
 * `data-` attributes) so that the Content-Security-Policy can allow exactly these by hash.
 */
import { createHash } from "node:crypto"

export const tokenCookie = "memento_admin_token"

/** The run page: posts the admin actions (cancel, resume, retry, signal) as JSON and reloads. */
export const runScript = `(function () {
  var root = document.querySelector("[data-run-id]")
  if (!root) return
  var id = root.getAttribute("data-run-id")
  var base = root.getAttribute("data-base")
  var notice = document.getElementById("notice")
  function show(text, bad) {
    notice.textContent = text
    notice.className = bad ? "error" : "muted"
  }
  function post(action, body) {
    return fetch(base + "/api/runs/" + encodeURIComponent(id) + "/" + action, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().catch(function () { return {} }).then(function (json) {
        if (!response.ok) throw new Error(json.detail || json.title || ("HTTP " + response.status))
        return json
      })
    })
  }
  document.querySelectorAll("button[data-action]").forEach(function (button) {
    button.addEventListener("click", function () {
      var action = button.getAttribute("data-action")
      var body = {}
      if (action === "retry") {
        var from = document.getElementById("from-step")
        if (from && from.value) body.fromStep = from.value
      }
      if (action === "signal") {
        var name = document.getElementById("signal-name").value
        var text = document.getElementById("signal-payload").value
        var signalId = document.getElementById("signal-id").value
        if (!name) return show("a signal needs a name", true)
        try {
          body = { name: name, payload: text === "" ? null : JSON.parse(text) }
        } catch (error) {
          return show("the payload is not JSON: " + error.message, true)
        }
        if (signalId) body.signalId = signalId
      }
      if (action !== "signal" && !window.confirm(action + " this run?")) return
      show(action + "…", false)
      post(action, body).then(function () {
        show(action + ": done", false)
        setTimeout(function () { location.reload() }, 500)
      }, function (error) {
        show(action + " failed: " + error.message, true)
      })
    })
  })
})()`

/** The sign-in page: stores the token in a SameSite=Strict cookie scoped to the dashboard's path. */
export const signInScript = `(function () {
  var form = document.getElementById("sign-in")
  form.addEventListener("submit", function (event) {
    event.preventDefault()
    var token = document.getElementById("token").value
    var path = form.getAttribute("data-path") || "/"
    document.cookie = "${tokenCookie}=" + encodeURIComponent(token) + "; path=" + path + "; SameSite=Strict"
    location.reload()
  })
})()`

const hash = (script: string) => `'sha256-${createHash("sha256").update(script, "utf8").digest("base64")}'`

/** CSP source expressions allowing exactly the scripts above. */
export const scriptHashes: string = [runScript, signInScript].map(hash).join(" ")
