// The console's only script: the WebAuthn ceremonies (the browser's
// navigator.credentials), and the calls that begin and finish them. It
// sends JSON to the console's own origin; nothing here is inline.
"use strict";

const b64u = {
  enc: (buf) => btoa(String.fromCharCode(...new Uint8Array(buf))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, ""),
  dec: (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4)), (c) => c.charCodeAt(0)),
};

function status(text) { document.getElementById("status").textContent = text; }

async function post(path, body) {
  const r = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body), credentials: "same-origin" });
  const out = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(out.error || r.statusText);
  return out;
}

// creation and assertion options arrive with base64url byte strings.
function creationOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64u.dec(pk.challenge);
  pk.user.id = b64u.dec(pk.user.id);
  (pk.excludeCredentials || []).forEach((c) => { c.id = b64u.dec(c.id); });
  return o;
}
function requestOptions(o) {
  const pk = o.publicKey;
  pk.challenge = b64u.dec(pk.challenge);
  (pk.allowCredentials || []).forEach((c) => { c.id = b64u.dec(c.id); });
  return o;
}
function attestation(c) {
  return { id: c.id, rawId: b64u.enc(c.rawId), type: c.type,
    response: { attestationObject: b64u.enc(c.response.attestationObject), clientDataJSON: b64u.enc(c.response.clientDataJSON) } };
}
function assertion(c) {
  return { id: c.id, rawId: b64u.enc(c.rawId), type: c.type,
    response: { authenticatorData: b64u.enc(c.response.authenticatorData), clientDataJSON: b64u.enc(c.response.clientDataJSON),
      signature: b64u.enc(c.response.signature), userHandle: c.response.userHandle ? b64u.enc(c.response.userHandle) : null } };
}

async function enroll() {
  const token = location.hash.slice(1);
  const begin = await post("/api/enroll/begin", { token });
  const cred = await navigator.credentials.create(creationOptions(begin.options));
  const done = await post("/api/enroll/finish", { token, handle: begin.handle, credential: attestation(cred) });
  status("Registered a passkey for " + done.identity + ". You can sign in now.");
}

async function login() {
  const begin = await post("/api/login/begin", {});
  const cred = await navigator.credentials.get(requestOptions(begin.options));
  await post("/api/login/finish", { handle: begin.handle, credential: assertion(cred) });
  location.assign("/approvals");
}

async function decide(button) {
  const body = { approval_id: button.dataset.id, decision: button.dataset.decision };
  const begin = await post("/api/approvals/begin", body);
  const cred = await navigator.credentials.get(requestOptions(begin.options));
  const done = await post("/api/approvals/finish", Object.assign(body, { handle: begin.handle, credential: assertion(cred) }));
  status(body.decision + "d: " + done.state);
  location.reload();
}

function on(id, fn) {
  const el = document.getElementById(id);
  if (el) el.addEventListener("click", () => fn().catch((e) => status("Refused: " + e.message)));
}

document.addEventListener("DOMContentLoaded", () => {
  on("enroll", enroll);
  on("login", login);
  on("logout", () => post("/api/logout", {}).then(() => location.assign("/login")));
  document.querySelectorAll("button.decide").forEach((b) =>
    b.addEventListener("click", () => decide(b).catch((e) => status("Refused: " + e.message))));
});
