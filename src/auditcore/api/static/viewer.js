"use strict";
// The audit-log viewer: plain DOM, no build step. Every value is set as text, never as HTML.

const $ = (selector) => document.querySelector(selector);
const KEY = "auditcore.api_key";
const state = { key: sessionStorage.getItem(KEY), cursor: null, live: null, seen: new Set(),
                selected: null, models: [], me: null, events: [], templates: {}, chart: null,
                view: { zone: "utc", tab: "audit_events", range: "", since: "", until: "" } };
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
  try { state.templates = await api("/v1/display-templates"); } catch (_) { state.templates = {}; }
  viewFromUrl();
  renderColumnChooser();
  renderTabs();
  await showView();
}

async function showView() {
  const model = state.models.find((m) => m.name === state.view.tab && m.kind !== "rollup")
    || state.models.find((m) => m.name === "audit_events");
  if (model) await selectTab(model, false);
  if (!model || model.kind === "events") await search(false);
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
    tab.setAttribute("aria-controls", model.kind === "events" ? "events-panel" : "state-panel");
    tab.title = model.description;
    tab.addEventListener("click", () => selectTab(model, true));
    tabs.append(tab);
  }
}

async function selectTab(model, remembered) {
  for (const tab of document.querySelectorAll("#tabs button")) {
    tab.setAttribute("aria-selected", String(tab.id === `tab-${model.name}`));
  }
  const events = model.kind === "events";
  $("#events-panel").hidden = !events;
  $("#state-panel").hidden = events;
  $("#state-panel").setAttribute("aria-labelledby", `tab-${model.name}`);
  state.view.tab = model.name;
  if (remembered) remember();
  if (!events) { stateFilters(model); await showState(model); }
}

// A current-state table's own filters (its read model's), applied as you type or choose.
function stateFilters(model) {
  const form = $("#state-filters");
  if (form.dataset.model === model.name) return;
  form.dataset.model = model.name;
  const query = new URLSearchParams(location.search);
  const inputs = model.filters.map((f) => {
    const label = element("label", f.name.replace("_", " "));
    const input = element("input");
    input.name = f.name;
    input.placeholder = f.help || "";
    input.value = query.get(`${model.name}.${f.name}`) || "";
    label.append(input);
    return label;
  });
  if (model.text_search) {
    const label = element("label", "Text");
    const input = element("input");
    input.name = "text";
    input.type = "search";
    label.append(input);
    inputs.push(label);
  }
  const submit = element("button", "Apply");
  submit.type = "submit";
  form.replaceChildren(...inputs, submit);
  form.onsubmit = (e) => { e.preventDefault(); showState(model); };
}

async function showState(model) {
  const status = $("#state-status");
  status.textContent = "Loading…";
  try {
    const params = new URLSearchParams({ limit: "200" });
    for (const input of $("#state-filters").querySelectorAll("input[name]")) {
      if (input.value.trim()) params.append(input.name, input.value.trim());
    }
    const { items } = await api(`/v1/models/${encodeURIComponent(model.name)}/rows?${params}`);
    const columns = model.columns.map((c) => c.name).filter((n) => !["workspace_id", "position"].includes(n));
    const head = element("tr");
    for (const name of columns) { const th = element("th", name); th.scope = "col"; head.append(th); }
    $("#state thead").replaceChildren(head);
    $("#state tbody").replaceChildren(...items.map((item) => {
      const tr = element("tr");
      for (const name of columns) {
        const value = item[name];
        tr.append(element("td", typeof value === "string" && ISO_MOMENT.test(value) ? formatTime(value) : value ?? "—"));
      }
      return tr;
    }));
    status.textContent = `${items.length} ${model.name} — ${model.description}`;
  } catch (error) {
    status.textContent = error.message;
  }
}

// Time: one format everywhere, in UTC or the browser's local time (the header's switch).

const pad = (n, width = 2) => String(n).padStart(width, "0");

function formatTime(iso) {
  const moment = new Date(iso);
  if (Number.isNaN(moment.getTime())) return String(iso);
  if (state.view.zone === "utc") {
    return `${moment.getUTCFullYear()}-${pad(moment.getUTCMonth() + 1)}-${pad(moment.getUTCDate())} `
      + `${pad(moment.getUTCHours())}:${pad(moment.getUTCMinutes())}:${pad(moment.getUTCSeconds())} UTC`;
  }
  const offset = -moment.getTimezoneOffset();
  const sign = offset >= 0 ? "+" : "-";
  return `${moment.getFullYear()}-${pad(moment.getMonth() + 1)}-${pad(moment.getDate())} `
    + `${pad(moment.getHours())}:${pad(moment.getMinutes())}:${pad(moment.getSeconds())} `
    + `${sign}${pad(Math.floor(Math.abs(offset) / 60))}:${pad(Math.abs(offset) % 60)}`;
}

const ISO_MOMENT = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/;

// A datetime-local input's value, read in the chosen zone, as an ISO moment (and back).
function fromInput(value) {
  if (!value) return "";
  const moment = state.view.zone === "utc" ? new Date(`${value}Z`) : new Date(value);
  return Number.isNaN(moment.getTime()) ? "" : moment.toISOString();
}

function toInput(iso) {
  if (!iso) return "";
  const m = new Date(iso);
  if (Number.isNaN(m.getTime())) return "";
  return state.view.zone === "utc"
    ? m.toISOString().slice(0, 19)
    : `${m.getFullYear()}-${pad(m.getMonth() + 1)}-${pad(m.getDate())}T${pad(m.getHours())}:${pad(m.getMinutes())}:${pad(m.getSeconds())}`;
}

// Display templates: the same grammar as auditcore.events.display (paths into the event's
// JSON, missing fields empty, {{ and }} literal); the result is set as text, never HTML.

const TEMPLATE_TOKEN = /\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]{1,3}\])*)\}/g;

function describe(event) {
  const template = state.templates[event.action];
  if (!template) return "";
  const text = template.replace(TEMPLATE_TOKEN, (token, path) => {
    if (!path) return token[0];
    let node = event;
    for (const [, name, index] of path.matchAll(/\.?([A-Za-z_][A-Za-z0-9_]*)|\[([0-9]+)\]/g)) {
      if (name !== undefined) {
        node = node && typeof node === "object" && !Array.isArray(node)
          && Object.prototype.hasOwnProperty.call(node, name) ? node[name] : null;
      } else {
        node = Array.isArray(node) && Number(index) < node.length ? node[Number(index)] : null;
      }
      if (node === null || node === undefined) return "";
    }
    return typeof node === "string" ? node : JSON.stringify(node);
  });
  return text.length <= 1000 ? text : `${text.slice(0, 999)}…`;
}

// Columns: chosen per browser (localStorage).

const COLUMNS = [
  { id: "time", label: "Time", cell: (e) => element("td", formatTime(e.occurred_at), "time") },
  { id: "action", label: "Action", cell: (e) => chipCell("action", e.action) },
  { id: "description", label: "Description", cell: (e) => element("td", describe(e), "description") },
  { id: "actor", label: "Actor", cell: (e) => chipCell("actor_id", e.actor.id, actorText(e)) },
  { id: "targets", label: "Targets", cell: targetsCell },
  { id: "source", label: "Source", cell: (e) => chipCell("source", e.source) },
  { id: "ip", label: "IP", cell: (e) => element("td", e.context.ip || "") },
  { id: "user_agent", label: "User agent", cell: (e) => element("td", e.context.user_agent || "") },
  { id: "request_id", label: "Request id", cell: (e) => element("td", e.context.request_id || "") },
  { id: "api_key_id", label: "Writing key", cell: (e) => chipCell("api_key_id", e.context.api_key_id || "") },
  { id: "details", label: "Details", cell: (e) => element("td", summary(e)) },
];
const DEFAULT_COLUMNS = ["time", "action", "description", "actor", "targets", "source", "details"];
const COLUMNS_KEY = "auditcore.columns";

function chosenColumns() {
  try {
    const saved = JSON.parse(localStorage.getItem(COLUMNS_KEY));
    if (Array.isArray(saved)) return COLUMNS.filter((c) => saved.includes(c.id));
  } catch (_) { /* no choice saved */ }
  return COLUMNS.filter((c) => DEFAULT_COLUMNS.includes(c.id));
}

function renderColumnChooser() {
  const chosen = new Set(chosenColumns().map((c) => c.id));
  $("#columns").replaceChildren($("#columns legend"), ...COLUMNS.map((column) => {
    const label = element("label");
    const box = element("input");
    box.type = "checkbox";
    box.value = column.id;
    box.checked = chosen.has(column.id);
    box.addEventListener("change", () => {
      const ids = [...document.querySelectorAll("#columns input:checked")].map((b) => b.value);
      localStorage.setItem(COLUMNS_KEY, JSON.stringify(ids));
      renderRows();
    });
    label.append(box, ` ${column.label}`);
    return label;
  }));
}

// Click to filter: an actor, target, action or source sets that filter.
function chipCell(name, value, text = value) {
  const td = element("td");
  if (!value) return td;
  td.append(chip(name, value, text));
  return td;
}

function chip(name, value, text) {
  const button = element("button", text, "chip");
  button.type = "button";
  button.title = `Show only ${name.replace("_id", "")} ${value}`;
  button.addEventListener("click", (e) => { e.stopPropagation(); setFilter(name, value); });
  button.addEventListener("keydown", (e) => e.stopPropagation());
  return button;
}

function targetsCell(event) {
  const td = element("td");
  event.targets.forEach((t, index) => {
    if (index) td.append(", ");
    td.append(chip("target", `${t.type}:${t.id}`, `${t.type}:${t.name || t.id}`));
  });
  return td;
}

function setFilter(name, value) {
  const input = $("#filters").querySelector(`input[name="${CSS.escape(name)}"]`);
  if (!input || input.readOnly) return;
  input.value = value;
  apply();
}

// The whole view in the URL: filters, range, zone, tab (shareable; back and forward work).

function viewFromUrl() {
  const query = new URLSearchParams(location.search);
  state.view.zone = query.get("zone") === "local" ? "local" : "utc";
  state.view.tab = query.get("tab") || "audit_events";
  state.view.range = query.get("range") || "";
  state.view.since = query.get("since") || "";
  state.view.until = query.get("until") || "";
  for (const input of $("#filters").querySelectorAll("input[name]")) {
    if (!input.readOnly) input.value = query.get(input.name) || "";
  }
  $("#zone").value = state.view.zone;
  $("#range").value = state.view.since ? "custom" : state.view.range;
  $("#from").value = toInput(state.view.since);
  $("#to").value = toInput(state.view.until);
  showCustom();
}

function urlFromView() {
  const query = filterParams({ fixed: false, range: false });
  if (state.view.range) query.set("range", state.view.range);
  if (state.view.since) query.set("since", state.view.since);
  if (state.view.until) query.set("until", state.view.until);
  if (state.view.zone !== "utc") query.set("zone", state.view.zone);
  if (state.view.tab !== "audit_events") query.set("tab", state.view.tab);
  const text = query.toString();
  return location.pathname + (text ? `?${text}` : "");
}

function remember() {
  const url = urlFromView();
  if (url !== location.pathname + location.search) history.pushState(null, "", url);
}

function showCustom() {
  for (const label of document.querySelectorAll("#filters label.custom")) {
    label.hidden = $("#range").value !== "custom";
  }
}

function readRange() {
  const range = $("#range").value;
  if (range === "custom") {
    state.view.range = "";
    state.view.since = fromInput($("#from").value);
    state.view.until = fromInput($("#to").value);
  } else {
    state.view.range = range;
    state.view.since = "";
    state.view.until = "";
  }
}

function apply() {
  readRange();
  remember();
  search(false);
  if (state.live) startLive();
}

// Searching and paging.

function filterParams({ live = false, fixed = true, range = true } = {}) {
  const params = new URLSearchParams();
  for (const input of $("#filters").querySelectorAll("input[name]")) {
    const value = input.value.trim();
    if (!value || (!fixed && input.readOnly)) continue;
    params.append(input.name, value);
  }
  if (range && !live) {
    const since = state.view.since || state.view.range;
    if (since) params.set("since", since);
    if (state.view.until) params.set("until", state.view.until);
  }
  return params;
}

async function search(append) {
  const params = filterParams();
  params.set("limit", "50");
  if (append && state.cursor) params.set("cursor", state.cursor);
  const status = $("#status");
  status.textContent = "Loading…";
  if (!append) drawChart();
  try {
    const page = await api(`/v1/events?${params}`);
    if (!append) { state.events = []; state.seen.clear(); }
    for (const event of page.items) addRow(event, false);
    state.cursor = page.next_cursor;
    $("#more").hidden = !state.cursor;
    renderRows();
    const shown = state.events.length;
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
  event.fresh = fresh;
  if (fresh) { state.events.unshift(event); renderRows(); } else state.events.push(event);
}

function renderRows() {
  const columns = chosenColumns();
  const head = element("tr");
  for (const column of columns) {
    const th = element("th", column.id === "time" ? `Time (${state.view.zone === "utc" ? "UTC" : "local"})` : column.label);
    th.scope = "col";
    head.append(th);
  }
  $("#events thead").replaceChildren(head);
  $("#events tbody").replaceChildren(...state.events.map((event) => {
    const tr = element("tr", null, event.fresh ? "new" : "");
    tr.tabIndex = 0;
    tr.dataset.eventId = event.event_id;
    if (state.selected === event.event_id) tr.className += " selected";
    tr.append(...columns.map((column) => column.cell(event)));
    const open = () => showDetail(event, tr);
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(); } });
    return tr;
  }));
}

// Export and report for the current filters: fetched with the key, saved as a file.

async function download(path, name) {
  const status = $("#status");
  status.textContent = "Preparing the download…";
  try {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${state.key}` } });
    if (!response.ok) throw new Error((await response.json()).error.message);
    const link = element("a");
    link.href = URL.createObjectURL(await response.blob());
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    status.textContent = `Downloaded ${name}.`;
  } catch (error) {
    status.textContent = `Download failed: ${error.message}`;
  }
}

function exportEvents(format) {
  const params = filterParams();
  params.set("format", format);
  download(`/v1/events/export?${params}`, `audit-events.${format}`);
}

function openReport() {
  // The report covers the whole workspace for a period: the time range is what it takes.
  const params = new URLSearchParams();
  params.set("since", state.view.since || state.view.range || "30d");
  if (state.view.until) params.set("until", state.view.until);
  download(`/v1/reports?${params}`, "audit-report.html");
}

// The activity chart (the stats API), above the list: dragging across it picks a range.

async function drawChart() {
  const svg = $("#chart");
  const params = filterParams({ range: false });
  for (const name of ["action_prefix", "target", "api_key_id", "text"]) params.delete(name);
  const until = state.view.until ? new Date(state.view.until) : new Date();
  const since = state.view.since ? new Date(state.view.since)
    : new Date(until.getTime() - (AGES[state.view.range] || AGES["7d"]));
  params.set("since", since.toISOString());
  params.set("until", until.toISOString());
  params.set("group_by", "action");
  let stats;
  try { stats = await api(`/v1/stats?${params}`); } catch (_) { svg.replaceChildren(); return; }
  const totals = new Map();
  for (const b of stats.buckets) totals.set(b.bucket, (totals.get(b.bucket) || 0) + b.events);
  const start = new Date(stats.since).getTime();
  const end = new Date(stats.until).getTime();
  const step = { minute: 6e4, hour: 36e5, day: 864e5 }[stats.interval];
  const count = Math.max(1, Math.round((end - start) / step));
  const most = Math.max(1, ...totals.values());
  const bars = [];
  for (const [bucket, events] of totals) {
    const index = Math.round((new Date(bucket).getTime() - start) / step);
    const bar = document.createElementNS(SVG, "rect");
    const height = Math.max(2, (events / most) * 110);
    bar.setAttribute("class", "bar");
    bar.setAttribute("x", String((index / count) * 1000));
    bar.setAttribute("width", String(Math.max(1, 1000 / count - 1)));
    bar.setAttribute("y", String(120 - height));
    bar.setAttribute("height", String(height));
    const title = document.createElementNS(SVG, "title");
    title.textContent = `${formatTime(bucket)}: ${events} event${events === 1 ? "" : "s"}`;
    bar.append(title);
    bars.push(bar);
  }
  svg.replaceChildren(...bars);
  const total = [...totals.values()].reduce((a, b) => a + b, 0);
  svg.setAttribute("aria-label", `Activity chart: ${total} events from ${formatTime(stats.since)} to ${formatTime(stats.until)}`);
  state.chart = { start, end };
}

const SVG = "http://www.w3.org/2000/svg";
const AGES = { "1h": 36e5, "1d": 864e5, "7d": 7 * 864e5, "30d": 30 * 864e5 };

function brushable() {
  const svg = $("#chart");
  let from = null;
  let brush = null;
  const at = (e) => {
    const box = svg.getBoundingClientRect();
    return Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
  };
  svg.addEventListener("pointerdown", (e) => {
    if (!state.chart) return;
    from = at(e);
    brush = document.createElementNS(SVG, "rect");
    brush.setAttribute("class", "brush");
    brush.setAttribute("y", "0");
    brush.setAttribute("height", "120");
    svg.append(brush);
    svg.setPointerCapture(e.pointerId);
  });
  svg.addEventListener("pointermove", (e) => {
    if (from === null) return;
    const to = at(e);
    brush.setAttribute("x", String(Math.min(from, to) * 1000));
    brush.setAttribute("width", String(Math.abs(to - from) * 1000));
  });
  svg.addEventListener("pointerup", (e) => {
    if (from === null) return;
    const to = at(e);
    const [a, b] = [Math.min(from, to), Math.max(from, to)];
    from = null;
    if (b - a < 0.005) { brush.remove(); return; }
    const { start, end } = state.chart;
    const span = end - start;
    $("#range").value = "custom";
    state.view.since = new Date(start + a * span).toISOString();
    state.view.until = new Date(start + b * span).toISOString();
    $("#from").value = toInput(state.view.since);
    $("#to").value = toInput(state.view.until);
    showCustom();
    apply();
  });
}

// The detail panel: the whole event and its stream's history.

async function showDetail(event, row) {
  state.selected = event.event_id;
  for (const other of document.querySelectorAll("#events tbody tr")) {
    other.classList.toggle("selected", other === row);
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
      "li", `v${e.version} ${formatTime(e.occurred_at)} ${e.action} by ${e.actor.name || e.actor.id}`,
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
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); apply(); });
  $("#filters").addEventListener("reset", () => setTimeout(() => {
    fixFilters(state.me && state.me.fixed_filters);
    showCustom();
    apply();
  }));
  $("#range").addEventListener("change", () => { showCustom(); if ($("#range").value !== "custom") apply(); });
  $("#zone").addEventListener("change", () => {
    state.view.zone = $("#zone").value;
    $("#from").value = toInput(state.view.since);
    $("#to").value = toInput(state.view.until);
    remember();
    renderRows();
    drawChart();
  });
  window.addEventListener("popstate", () => { if (state.key) { viewFromUrl(); showView(); } });
  $("#export-csv").addEventListener("click", () => exportEvents("csv"));
  $("#export-jsonl").addEventListener("click", () => exportEvents("jsonl"));
  $("#report").addEventListener("click", openReport);
  brushable();
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
