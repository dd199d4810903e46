/**
 * The dashboard's two inline scripts, kept static (run data reaches them only through escaped
 * `data-` attributes) so that the Content-Security-Policy can allow exactly these by hash.
 */
import { createHash } from "node:crypto"

export const tokenCookie = "memento_admin_token"

/** The run page: posts the admin actions (cancel, resume, retry, signal) as JSON and reloads. */
export const runScript = `(function(){
var root=document.querySelector("[data-run-id]");if(!root)return;
var id=root.getAttribute("data-run-id"),base=root.getAttribute("data-base"),notice=document.getElementById("notice");
function show(text,bad){notice.textContent=text;notice.className=bad?"error":"muted";}
function post(action,body){return fetch(base+"/api/runs/"+encodeURIComponent(id)+"/"+action,{method:"POST",
headers:{"content-type":"application/json"},body:JSON.stringify(body),credentials:"same-origin"}).then(function(r){
return r.json().catch(function(){return {};}).then(function(j){if(!r.ok)throw new Error(j.detail||j.title||("HTTP "+r.status));return j;});});}
document.querySelectorAll("button[data-action]").forEach(function(button){button.addEventListener("click",function(){
var action=button.getAttribute("data-action"),body={};
if(action==="retry"){var from=document.getElementById("from-step");if(from&&from.value)body.fromStep=from.value;}
if(action==="signal"){var name=document.getElementById("signal-name").value,text=document.getElementById("signal-payload").value,
sid=document.getElementById("signal-id").value;if(!name){show("a signal needs a name",true);return;}
try{body={name:name,payload:text===""?null:JSON.parse(text)};}catch(e){show("the payload is not JSON: "+e.message,true);return;}
if(sid)body.signalId=sid;}
if(action!=="signal"&&!window.confirm(action+" this run?"))return;
show(action+"…",false);post(action,body).then(function(){show(action+": done",false);setTimeout(function(){location.reload();},500);},
function(e){show(action+" failed: "+e.message,true);});});});})();`

/** The sign-in page: stores the token in a SameSite=Strict cookie scoped to the dashboard's path. */
export const signInScript = `(function(){var form=document.getElementById("sign-in");form.addEventListener("submit",function(e){
e.preventDefault();var token=document.getElementById("token").value;
document.cookie="${tokenCookie}="+encodeURIComponent(token)+"; path="+(form.getAttribute("data-path")||"/")+"; SameSite=Strict";
location.reload();});})();`

const hash = (script: string) => `'sha256-${createHash("sha256").update(script, "utf8").digest("base64")}'`

/** CSP source expressions allowing exactly the scripts above. */
export const scriptHashes: string = [runScript, signInScript].map(hash).join(" ")
