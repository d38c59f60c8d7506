"use strict";
// The audit-log viewer: plain DOM, no build step. Every value is set as text, never as HTML.

const $ = (selector) => document.querySelector(selector);
const KEY = "auditcore.api_key";
const state = { key: sessionStorage.getItem(KEY), cursor: null, live: null, seen: new Set(),
                selected: null, models: [], me: null };
// The embeddable viewer: /embed/TOKEN_ID#avl_… — the one-time link lives in the fragment (never
// sent to a server, nor in Referer) and is swapped for a session at once.
const EMBEDDED = location.pathname.startsWith("/embed/");

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, headers: { ...(options.headers || {}), Authorization: `Bearer ${state.key}` },
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function element(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

// Signing in and out.

async function signIn(key) {
  state.key = key;
  try {
    state.models = await api("/v1/models");
  } catch (error) {
    state.key = null;
    sessionStorage.removeItem(KEY);
    $("#login-error").textContent = error.status === 401
      ? "That API key is not valid or has been revoked." : error.message;
    return;
  }
  sessionStorage.setItem(KEY, key);
  $("#login").hidden = true;
  $("#viewer").hidden = false;
  $("#logout").hidden = EMBEDDED;
  try {
    state.me = await api("/v1/me");
    $("#who").textContent = state.me.workspace_name;
    $("#who").title = `workspace ${state.me.workspace_id}, ${state.me.key_name} (${state.me.key_id})`;
    fixFilters(state.me.fixed_filters);
  } catch (error) {
    $("#who").textContent = `key ${key.split("_").slice(0, 2).join("_")}…`;
  }
  renderTabs();
  await search(false);
}

// A viewer session's fixed filters: shown, and not editable (the server enforces them anyway).
function fixFilters(fixed) {
  const names = Object.keys(fixed || {});
  for (const name of names) {
    const input = $("#filters").querySelector(`input[name="${CSS.escape(name)}"]`);
    if (input) { input.value = fixed[name]; input.readOnly = true; input.dataset.fixed = "1"; }
  }
  const note = $("#fixed");
  note.hidden = names.length === 0;
  note.textContent = names.length
    ? `Limited to ${names.map((n) => `${n} = ${fixed[n]}`).join(", ")}.` : "";
}

async function exchangeLink() {
  const link = location.hash.slice(1);
  // Out of the address bar and history before anything else runs.
  history.replaceState(null, "", location.pathname + location.search);
  try {
    const response = await fetch("/v1/viewer-sessions", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ link }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.error.message);
    return body.session;
  } catch (error) {
    $("#login-error").textContent = error.message;
    return null;
  }
}

function signOut() {
  stopLive();
  sessionStorage.removeItem(KEY);
  location.reload();
}

// Tabs: one per read model this key may read (events, and current-state tables).

function renderTabs() {
  const tabs = $("#tabs");
  tabs.replaceChildren();
  for (const model of state.models.filter((m) => m.kind !== "rollup")) {
    const tab = element("button", model.name.replace("_", " "));
    tab.type = "button";
    tab.id = `tab-${model.name}`;
    tab.setAttribute("role", "tab");
    tab.setAttribute("aria-selected", String(model.name === "audit_events"));
    tab.title = model.description;
    tab.addEventListener("click", () => selectTab(model));
    tabs.append(tab);
  }
}

async function selectTab(model) {
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.setAttribute("aria-selected", String(tab.id === `tab-${model.name}`));
  }
  const events = model.kind === "events";
  $("#events-panel").hidden = !events;
  $("#state-panel").hidden = events;
  if (!events) await showState(model);
}

async function showState(model) {
  const status = $("#state-status");
  status.textContent = "Loading…";
  try {
    const { items } = await api(`/v1/models/${encodeURIComponent(model.name)}/rows?limit=200`);
    const columns = model.columns.map((c) => c.name).filter((n) => !["workspace_id", "position"].includes(n));
    const head = element("tr");
    for (const name of columns) { const th = element("th", name); th.scope = "col"; head.append(th); }
    $("#state thead").replaceChildren(head);
    $("#state tbody").replaceChildren(...items.map((item) => {
      const tr = element("tr");
      for (const name of columns) tr.append(element("td", item[name] ?? "—"));
      return tr;
    }));
    status.textContent = `${items.length} ${model.name} — ${model.description}`;
  } catch (error) {
    status.textContent = error.message;
  }
}

// Searching and paging.

function filterParams({ live = false } = {}) {
  const params = new URLSearchParams();
  for (const input of $("#filters").querySelectorAll("input[name]")) {
    const value = input.value.trim();
    if (!value || (live && (input.name === "since" || input.name === "until"))) continue;
    params.append(input.name, value);
  }
  return params;
}

async function search(append) {
  const params = filterParams();
  params.set("limit", "50");
  if (append && state.cursor) params.set("cursor", state.cursor);
  const status = $("#status");
  status.textContent = "Loading…";
  try {
    const page = await api(`/v1/events?${params}`);
    const body = $("#events tbody");
    if (!append) { body.replaceChildren(); state.seen.clear(); }
    for (const event of page.items) addRow(event, false);
    state.cursor = page.next_cursor;
    $("#more").hidden = !state.cursor;
    const shown = body.children.length;
    status.textContent = `${shown} event${shown === 1 ? "" : "s"} shown`
      + (state.cursor ? " — more below" : "") + (state.live ? " — live" : "");
  } catch (error) {
    status.textContent = error.message;
  }
}

function summary(event) {
  return Object.entries(event.metadata).map(([key, value]) =>
    `${key}=${typeof value === "object" ? JSON.stringify(value) : value}`).join(", ");
}

// Who acted, and — for events written through the API — the key that wrote them, which the
// body's actor cannot change.
function actorText(event) {
  const actor = event.actor.name ? `${event.actor.name} (${event.actor.id})` : event.actor.id;
  const key = event.context.api_key_id;
  return key && key !== event.actor.id ? `${actor} via ${key}` : actor;
}

function addRow(event, fresh) {
  if (state.seen.has(event.event_id)) return;
  state.seen.add(event.event_id);
  const tr = element("tr", null, fresh ? "new" : "");
  tr.tabIndex = 0;
  tr.dataset.eventId = event.event_id;
  tr.setAttribute("aria-selected", "false");
  tr.append(
    element("td", event.occurred_at.replace("T", " ").replace("Z", ""), "time"),
    element("td", event.action),
    element("td", actorText(event)),
    element("td", event.targets.map((t) => `${t.type}:${t.name || t.id}`).join(", ")),
    element("td", event.source),
    element("td", summary(event)),
  );
  const open = () => showDetail(event, tr);
  tr.addEventListener("click", open);
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
  const body = $("#events tbody");
  if (fresh) body.prepend(tr); else body.append(tr);
}

// The detail panel: the whole event and its stream's history.

async function showDetail(event, row) {
  for (const other of document.querySelectorAll("#events tbody tr")) {
    other.setAttribute("aria-selected", String(other === row));
  }
  $("#detail").hidden = false;
  $("#detail-writer").textContent = event.context.api_key_id
    ? `Written through the API by key ${event.context.api_key_id}.`
    : "Not written through the API (no API key).";
  $("#detail-json").textContent = JSON.stringify(event, null, 2);
  if (!state.me || state.me.scopes.includes("read")) showProof(event.event_id);
  else $("#detail-proof").textContent = "Proofs are available to API keys with the read scope.";
  const history = $("#detail-history");
  history.replaceChildren(element("li", "Loading…"));
  try {
    const events = await api(`/v1/streams/${event.stream_id}/events`);
    history.replaceChildren(...events.map((e) => element(
      "li", `v${e.version} ${e.occurred_at.replace("T", " ").slice(0, 19)} ${e.action} by ${e.actor.name || e.actor.id}`,
      e.event_id === event.event_id ? "current" : "")));
  } catch (error) {
    history.replaceChildren(element("li", error.message));
  }
}

// Tamper evidence: the event's inclusion proof in its workspace's signed Merkle log. The
// server checks the proof and recomputes the event's leaf from the store; where the browser
// offers SHA-256 (secure contexts), the proof's path to the signed root is checked here too.

async function showProof(eventId) {
  const line = $("#detail-proof");
  line.dataset.event = eventId;
  line.className = "proof pending";
  line.textContent = "Checking…";
  let text, status;
  try {
    const proof = await api(`/v1/events/${eventId}/proof`);
    status = proof.status;
    text = { proven: "✓ Proven: ", pending: "Not yet signed: ", failed: "✗ Tampered: " }[status]
      + proof.detail;
    if (status === "proven" && await rootFrom(proof) === proof.checkpoint.root_hash) {
      text += " (proof path re-checked in this browser)";
    }
  } catch (error) {
    status = "unavailable";
    text = `Proof unavailable: ${error.message}`;
  }
  if (line.dataset.event !== eventId) return;  // another event was opened meanwhile
  line.className = `proof ${status}`;
  line.textContent = text;
}

const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));

async function nodeHash(left, right) {
  const joined = new Uint8Array(1 + left.length + right.length);
  joined.set([1]); joined.set(left, 1); joined.set(right, 1 + left.length);
  return new Uint8Array(await crypto.subtle.digest("SHA-256", joined));
}

// RFC 9162 §2.1.3.2: the root an inclusion proof leads to (null without WebCrypto).
async function rootFrom(proof) {
  if (!window.crypto || !crypto.subtle) return null;
  let fn = proof.leaf_index, sn = proof.tree_size - 1, r = bytes(proof.leaf_hash);
  for (const p of proof.inclusion_proof.map(bytes)) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn !== 0 && fn % 2 === 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? btoa(String.fromCharCode(...r)) : null;
}

// Live mode: the server's SSE stream, read with fetch so the key travels in a header.

async function startLive() {
  stopLive();
  const controller = new AbortController();
  state.live = controller;
  let lastId = null;
  while (state.live === controller) {
    try {
      const headers = { Authorization: `Bearer ${state.key}` };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`/v1/live?${filterParams({ live: true })}`, { headers, signal: controller.signal });
      if (!response.ok) {
        $("#status").textContent = `Live mode failed: ${(await response.json()).error.message}`;
        $("#live").checked = false;
        state.live = null;
        return;
      }
      $("#status").textContent = "Live: new events appear at the top.";
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = parseMessage(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (message.id) lastId = message.id;
          if (message.event === "audit_event") addRow(JSON.parse(message.data), true);
        }
      }
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

function parseMessage(text) {
  const message = { event: "message", data: "", id: null };
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const field = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (field === "data") message.data += value;
    else if (field === "event") message.event = value;
    else if (field === "id") message.id = value;
  }
  return message;
}

function stopLive() {
  if (state.live) state.live.abort();
  state.live = null;
}

// Wiring.

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#api-key").value.trim()); });
  $("#logout").addEventListener("click", signOut);
  $("#filters").addEventListener("submit", (e) => {
    e.preventDefault();
    search(false);
    if (state.live) startLive();
  });
  $("#filters").addEventListener("reset", () => setTimeout(() => { search(false); if (state.live) startLive(); }));
  $("#more").addEventListener("click", () => search(true));
  $("#live").addEventListener("change", (e) => { if (e.target.checked) startLive(); else { stopLive(); search(false); } });
  $("#close-detail").addEventListener("click", () => { $("#detail").hidden = true; });
  if (EMBEDDED) {
    $("#login-form").hidden = true;
    $("#login-title").textContent = "Audit log";
    if (location.hash.startsWith("#avl_")) {
      exchangeLink().then((session) => { if (session) signIn(session); });
      return;
    }
    if (!state.key) { $("#login-error").textContent = "This viewer link has no session: open the link you were given."; return; }
  }
  if (state.key) signIn(state.key);
});
