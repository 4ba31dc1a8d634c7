// Governor console: one ES module, no build step. Data only ever reaches the page through
// text nodes, textContent and setAttribute (never innerHTML), so a session id, agent name
// or action argument cannot inject markup.

const STATES = ["active", "alerting", "awaiting-approval", "killed", "closed"];
const TAIL_CAP = 300;
const KEY = { token: "governor.token", tenant: "governor.tenant" };

const $ = (id) => document.getElementById(id);

/** h("td", {class: "x"}, "text", child): every string child becomes a text node. */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (typeof v === "function") el.addEventListener(k.replace(/^on/, ""), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) if (c !== undefined && c !== null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}

// Cents, unless the amount is below a cent (a single cheap call): then four decimals.
const usd = (n) => (n == null ? "–" : `$${n !== 0 && Math.abs(n) < 0.01 ? n.toFixed(4) : n.toFixed(2)}`);
const clip = (s, n = 160) => (s.length > n ? `${s.slice(0, n - 1)}…` : s);
const time = (ts) => new Date(ts).toLocaleTimeString([], { hour12: false });
const badge = (state) => h("span", { class: `badge state-${state}`, "data-state": state }, state);

function ago(ts) {
  const s = Math.round((Date.now() - ts) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(ts).toLocaleDateString();
}

function left(ts) {
  const s = Math.max(0, Math.round((ts - Date.now()) / 1000));
  return s >= 60 ? `${Math.floor(s / 60)}m ${s % 60}s` : `${s}s`;
}

/** Relative times refresh themselves: elements carry data-ago / data-left with an epoch ms. */
const agoEl = (ts) => h("time", { "data-ago": ts, datetime: new Date(ts).toISOString(), title: new Date(ts).toLocaleString() }, ago(ts));
setInterval(() => {
  for (const el of document.querySelectorAll("[data-ago]")) el.textContent = ago(Number(el.dataset.ago));
  for (const el of document.querySelectorAll("[data-left]")) el.textContent = left(Number(el.dataset.left));
}, 1000);

function bar(spent, reserved, budget) {
  if (!budget) return h("div", { class: "bar none" });
  const pct = (v) => `${Math.min(100, Math.max(0, (v / budget) * 100)).toFixed(1)}%`;
  const used = spent / budget;
  const fill = h("span", { class: `fill${used >= 1 ? " over" : used >= 0.8 ? " warn" : ""}` });
  const held = h("span", { class: "held" });
  fill.style.width = pct(spent);
  held.style.width = pct(Math.min(reserved, Math.max(0, budget - spent)));
  return h("div", { class: "bar", title: `spent ${usd(spent)}, reserved ${usd(reserved)} of ${usd(budget)}` }, fill, held);
}

// ------------------------------------------------------------------ banners

function banner(text, kind = "error") {
  const box = $("banners");
  const el = h("div", { class: `banner ${kind}`, role: "alert" }, h("span", {}, text), h("button", { type: "button", class: "ghost", "aria-label": "Dismiss", onclick: () => el.remove() }, "×"));
  box.append(el);
  while (box.children.length > 4) box.firstElementChild.remove();
  // Errors stay until dismissed; news goes by itself.
  if (kind === "info") setTimeout(() => el.remove(), 6000);
}

// ------------------------------------------------------------------ sockets

const wsUrl = (path) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

/**
 * A socket that reconnects with jittered exponential backoff. `path()` is asked again on
 * every attempt (so a reconnect can resume after the last event seen); `onClose` may
 * answer false to stop retrying (a refused token).
 */
function live(path, { onMessage, onStatus, onClose = async () => true }) {
  let ws;
  let timer;
  let attempt = 0;
  let stopped = false;
  const open = () => {
    onStatus("connecting");
    ws = new WebSocket(wsUrl(path()));
    ws.onopen = () => {
      attempt = 0;
      onStatus("live");
    };
    ws.onmessage = (e) => {
      let m;
      try {
        m = JSON.parse(e.data);
      } catch {
        return;
      }
      if (m && typeof m.type === "string") onMessage(m);
    };
    ws.onclose = async () => {
      if (stopped) return;
      if (!(await onClose())) return onStatus("offline");
      const delay = Math.round(Math.min(30_000, 500 * 2 ** attempt++) * (0.8 + Math.random() * 0.4));
      onStatus("retrying", delay);
      timer = setTimeout(() => !stopped && open(), delay);
    };
  };
  open();
  return {
    send(m) {
      if (ws?.readyState !== WebSocket.OPEN) {
        banner("not connected: the message was not sent, try again in a moment");
        return false;
      }
      ws.send(JSON.stringify(m));
      return true;
    },
    close() {
      stopped = true;
      clearTimeout(timer);
      ws?.close();
    },
  };
}

function showStatus(el, status, delay) {
  el.dataset.status = status;
  el.textContent = status === "retrying" ? `reconnecting in ${Math.ceil(delay / 1000)}s` : status;
}

// ------------------------------------------------------------------ sign in

const config = { token: null, tenant: "local" };

function readConfig() {
  const url = new URL(location.href);
  const q = url.searchParams;
  if (q.has("token")) {
    sessionStorage.setItem(KEY.token, q.get("token"));
    // Keep the token out of the address bar, history and anything screenshotted.
    q.delete("token");
    history.replaceState(null, "", url);
  }
  if (q.get("tenant")) sessionStorage.setItem(KEY.tenant, q.get("tenant"));
  config.token = sessionStorage.getItem(KEY.token);
  config.tenant = q.get("tenant") || sessionStorage.getItem(KEY.tenant) || "local";
}

function showLogin() {
  $("app").hidden = true;
  $("logout").hidden = true;
  const form = $("login");
  form.hidden = false;
  form.elements.tenant.value = config.tenant;
  form.elements.token.focus();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const f = e.target.elements;
  sessionStorage.setItem(KEY.token, f.token.value.trim());
  sessionStorage.setItem(KEY.tenant, f.tenant.value.trim());
  const url = new URL(location.href);
  url.searchParams.set("tenant", f.tenant.value.trim());
  history.replaceState(null, "", url);
  f.token.value = "";
  start();
});

$("logout").addEventListener("click", () => {
  sessionStorage.removeItem(KEY.token);
  stop();
  readConfig();
  showLogin();
});

// ------------------------------------------------------------------ tenant: the sessions table

const sessions = new Map();
let tenantSocket = null;

/** The socket cannot say why it was refused; one HTTP call can. */
async function tokenStillGood() {
  try {
    const res = await fetch("/v1/sessions", { headers: { authorization: `Bearer ${config.token}` } });
    if (res.status === 401 || res.status === 403) {
      const body = await res.json().catch(() => ({}));
      banner(`${body.error?.code ?? "unauthorized"}: ${body.error?.message ?? "the token was refused"}`);
      stop();
      showLogin();
      return false;
    }
  } catch {
    /* server unreachable: keep retrying */
  }
  return true;
}

function upsertSummary(s) {
  const known = sessions.get(s.session);
  if (known && known.seq > s.seq) return;
  sessions.set(s.session, s);
}

let tableQueued = false;
function renderTable() {
  if (tableQueued) return;
  tableQueued = true;
  requestAnimationFrame(() => {
    tableQueued = false;
    const filter = $("filter").value.trim().toLowerCase();
    const all = [...sessions.values()].sort((a, b) => b.lastActivity - a.lastActivity);
    const shown = filter ? all.filter((s) => [s.session, s.agent, s.user, s.state, s.task].some((v) => v?.toLowerCase().includes(filter))) : all;
    const waiting = all.filter((s) => s.pendingApprovals.length).length;
    $("sessions-count").textContent = `${all.length} total${waiting ? ` · ${waiting} awaiting approval` : ""}`;
    $("sessions-empty").hidden = all.length > 0;
    $("sessions-body").replaceChildren(...shown.map(row));
  });
}

function row(s) {
  const selected = s.session === detail?.id;
  const open = () => (location.hash = `session=${encodeURIComponent(s.session)}`);
  return h(
    "tr",
    { "data-session": s.session, "data-state": s.state, class: selected ? "selected" : "", tabindex: 0, onclick: open, onkeydown: (e) => e.key === "Enter" && open() },
    h("td", { class: "mono" }, s.session, s.task ? h("div", { class: "muted small" }, clip(s.task, 60)) : null),
    h("td", {}, badge(s.state)),
    h("td", { class: "spend" }, h("div", {}, usd(s.spentUsd), h("span", { class: "muted" }, " / ", s.budgetUsd == null ? "no budget" : usd(s.budgetUsd))), bar(s.spentUsd, s.reservedUsd, s.budgetUsd)),
    h("td", {}, s.agent ?? h("span", { class: "muted" }, "–")),
    h("td", {}, s.user ?? h("span", { class: "muted" }, "–")),
    h("td", {}, agoEl(s.lastActivity)),
    h("td", { class: "num" }, s.pendingApprovals.length ? h("span", { class: "count hot" }, s.pendingApprovals.length) : h("span", { class: "muted" }, "0")),
  );
}

$("filter").addEventListener("input", renderTable);

// ------------------------------------------------------------------ one session: the detail panel

/** @type {null | {id: string, socket: any, summary: any, events: any[], seqs: Set<number>, backfilled: boolean}} */
let detail = null;
const notes = new Map();

function select(id) {
  if (detail?.id === id) return;
  detail?.socket.close();
  detail = null;
  $("detail").hidden = !id;
  renderTable();
  if (!id) return;
  const d = { id, socket: null, summary: null, events: [], seqs: new Set(), backfilled: false };
  detail = d;
  $("detail-title").textContent = id;
  $("approvals").replaceChildren();
  $("events").tBodies[0].replaceChildren();
  renderDetail();
  const base = `/parties/session/${encodeURIComponent(config.tenant)}:${encodeURIComponent(id)}?token=${encodeURIComponent(config.token)}&tail=1`;
  d.socket = live(() => {
    // Resume after the newest event seen, so a reconnect misses nothing.
    const last = d.events[0]?.seq;
    return last ? `${base}&after=${last}` : base;
  }, {
    onStatus: (st, delay) => showStatus($("detail-conn"), st, delay),
    onMessage: (m) => detail === d && onSessionMessage(d, m),
  });
}

function onSessionMessage(d, m) {
  switch (m.type) {
    case "state":
      if (d.summary && d.summary.seq > m.summary.seq) return;
      d.summary = m.summary;
      if (m.summary.session) upsertSummary(m.summary);
      if (!d.backfilled && m.seq > 0) {
        // The recent past, once: live events that race it are deduplicated by seq.
        d.backfilled = true;
        if (!d.events.length) d.socket.send({ type: "subscribe", tail: true, after: Math.max(0, m.seq - TAIL_CAP) });
      }
      renderDetail();
      renderTable();
      return;
    case "event":
      addEvent(d, m.event);
      return;
    case "error":
      banner(`${m.code}: ${m.message}`);
      // A refused decision leaves its buttons usable again.
      for (const b of document.querySelectorAll("#approvals button:disabled, #kill:disabled")) b.disabled = false;
      renderDetail();
      return;
    case "decision":
      if (m.approvalId && m.final) banner(`${m.approvalId}: ${m.decision === "allow" ? "approved" : "denied"} (${m.reason ?? ""})`, "info");
      return;
  }
}

function addEvent(d, e) {
  if (d.seqs.has(e.seq)) return;
  d.seqs.add(e.seq);
  const tbody = $("events").tBodies[0];
  const tr = eventRow(e);
  // Newest first; a backfilled (older) event goes to its place by seq.
  let i = 0;
  while (i < d.events.length && d.events[i].seq > e.seq) i++;
  d.events.splice(i, 0, e);
  tbody.insertBefore(tr, tbody.children[i] ?? null);
  while (d.events.length > TAIL_CAP) {
    d.seqs.delete(d.events.pop().seq);
    tbody.lastElementChild.remove();
  }
}

function eventRow(e) {
  const kind = e.type.split(".")[0];
  const bad = /denied|killed/.test(e.type) || (e.type === "action.checked" && e.data.decision === "deny");
  return h(
    "tr",
    { "data-seq": e.seq, "data-type": e.type },
    h("td", { class: "num mono" }, e.seq),
    h("td", { class: "mono", title: new Date(e.ts).toISOString() }, time(e.ts)),
    h("td", {}, h("span", { class: `etype k-${kind}${bad ? " bad" : ""}` }, e.type)),
    h("td", { class: "data", title: clip(JSON.stringify(e.data), 2000) }, clip(describe(e))),
  );
}

/** One line per event: the fields an operator reads first. */
function describe({ type, data: d }) {
  const who = (a) => [a?.agent && `agent ${a.agent}`, a?.user && `user ${a.user}`, a?.run && `run ${a.run}`].filter(Boolean).join(", ");
  switch (type) {
    case "session.opened":
      return [d.policy?.budget?.session_usd != null && `budget ${usd(d.policy.budget.session_usd)}`, who(d), d.task].filter(Boolean).join(" · ") || "opened";
    case "request.reserved":
      return `${d.model ?? d.kind} · est. ${usd(d.estimateUsd)}${d.promptTokens != null ? ` · ${d.promptTokens} prompt tokens` : ""}`;
    case "request.settled":
      return `${d.outcome} · ${usd(d.costUsd)}${d.usage ? ` · ${d.usage.inputTokens} in / ${d.usage.outputTokens} out` : ""}`;
    case "request.denied":
      return `${d.code} · ${d.reason}`;
    case "action.checked":
      return `${d.action} → ${d.decision}${d.costUsd ? ` · ${usd(d.costUsd)}` : ""}${d.reason ? ` · ${d.reason}` : ""}`;
    case "violation.recorded":
      return `${d.kind} (${d.source})${d.detail ? ` · ${d.detail}` : ""}`;
    case "anomaly.detected":
    case "alert.raised":
      return `${d.kind} · ${d.reason}`;
    case "approval.requested":
      return `${d.approvalId} · ${d.action} · ${d.reason}`;
    case "approval.granted":
    case "approval.denied":
      return `${d.approvalId} by ${d.by}${d.timedOut ? " (timed out)" : ""}${d.note ? ` · ${d.note}` : ""}`;
    case "session.killed":
    case "session.closed":
      return `by ${d.by}${d.reason ? ` · ${d.reason}` : ""}`;
    default:
      return JSON.stringify(d);
  }
}

function stat(label, value, extra) {
  return h("div", { class: "stat" }, h("span", { class: "label" }, label), h("span", { class: "value" }, value), extra);
}

function renderDetail() {
  const d = detail;
  if (!d) return;
  const s = d.summary;
  $("detail-badge").replaceChildren(s ? badge(s.state) : "");
  $("detail-meta").replaceChildren(
    ...(s
      ? [s.agent && `agent ${s.agent}`, s.user && `user ${s.user}`, s.task && `task ${s.task}`, s.openedAt && `opened ${new Date(s.openedAt).toLocaleString()}`].filter(Boolean).join(" · ")
      : "loading…"),
  );
  const final = !s || s.state === "killed" || s.state === "closed";
  $("kill").disabled = final;

  $("machine").replaceChildren(
    ...STATES.map((st) => h("li", { class: `node state-${st}${s?.state === st ? " current" : ""}`, "aria-current": s?.state === st ? "step" : undefined }, st)),
  );

  if (!s) return;
  $("detail-killed").replaceChildren(
    s.killed ? h("div", { class: "killed-note" }, h("strong", {}, "Killed"), ` by ${s.killed.by} ${ago(s.killed.at)}: ${s.killed.reason}`, s.killed.rule ? h("span", { class: "muted" }, ` (rule ${s.killed.rule})`) : null) : "",
  );
  $("detail-money").replaceChildren(
    stat("spent", usd(s.spentUsd), bar(s.spentUsd, s.reservedUsd, s.budgetUsd)),
    stat("reserved", usd(s.reservedUsd)),
    stat("budget", s.budgetUsd == null ? "none" : usd(s.budgetUsd)),
    stat("remaining", s.remainingUsd == null ? "∞" : usd(s.remainingUsd)),
  );
  const c = s.counters;
  $("detail-counters").replaceChildren(
    ...[["LLM calls", c.llmCalls], ["actions", c.actions], ["allowed", c.allowed], ["denied", c.denied], ["reviews", c.reviews], ["violations", c.violations], ["alerts", c.alerts], ["anomalies", c.anomalies]].map(([k, v]) => stat(k, v)),
  );
  const violations = Object.entries(s.violations);
  $("detail-alerts").replaceChildren(
    ...s.alerts.map((a) => h("div", { class: "alert-note" }, a)),
    violations.length ? h("p", { class: "muted small" }, "violations: ", violations.map(([k, n]) => `${k} × ${n}`).join(", ")) : "",
  );
  renderApprovals(d, s.pendingApprovals, final);
  const res = $("reservations");
  res.hidden = !s.reservations.length;
  $("reservations-count").textContent = s.reservations.length;
  res.tBodies[0].replaceChildren(
    ...s.reservations.map((r) => h("tr", {}, h("td", { class: "mono" }, clip(r.requestId, 40)), h("td", {}, r.kind), h("td", {}, r.model ?? "–"), h("td", { class: "num" }, usd(r.estimateUsd)), h("td", {}, h("span", { "data-left": r.expiresAt }, left(r.expiresAt))))),
  );
}

/** Keyed by approval id, so a note being typed survives the state updates around it. */
function renderApprovals(d, pending, final) {
  const box = $("approvals");
  const ids = new Set(pending.map((a) => a.approvalId));
  for (const card of [...box.children]) if (!ids.has(card.dataset.approval)) card.remove();
  for (const a of pending) {
    if (box.querySelector(`[data-approval="${CSS.escape(a.approvalId)}"]`)) continue;
    const note = h("input", { type: "text", class: "note", placeholder: "note (optional)", maxlength: 1024, "aria-label": "Note", value: notes.get(a.approvalId) ?? "", oninput: (e) => notes.set(a.approvalId, e.target.value) });
    const decide = (type) => (e) => {
      const text = note.value.trim();
      if (d.socket.send({ type, approvalId: a.approvalId, ...(text && { note: text }) })) {
        for (const b of e.target.parentElement.querySelectorAll("button")) b.disabled = true;
      }
    };
    const args = a.args === undefined ? "" : JSON.stringify(a.args);
    box.append(
      h(
        "div",
        { class: "approval", "data-approval": a.approvalId },
        h("div", { class: "approval-head" }, h("strong", { class: "mono" }, a.action), a.costUsd ? h("span", {}, usd(a.costUsd)) : null, h("span", { class: "muted small" }, "expires in ", h("span", { "data-left": a.deadline }, left(a.deadline)))),
        h("div", { class: "small" }, a.reason, h("span", { class: "muted" }, ` (${a.rule})`)),
        args ? h("pre", { class: "args", title: clip(args, 2000) }, clip(args, 400)) : null,
        h("div", { class: "approval-actions" }, note, h("button", { type: "button", class: "primary", onclick: decide("approve") }, "Approve"), h("button", { type: "button", class: "danger", onclick: decide("deny") }, "Deny")),
      ),
    );
  }
  for (const b of box.querySelectorAll("button")) if (final) b.disabled = true;
  $("approvals-count").textContent = pending.length;
  $("approvals-count").classList.toggle("hot", pending.length > 0);
  $("approvals-empty").hidden = pending.length > 0;
  for (const id of notes.keys()) if (!ids.has(id)) notes.delete(id);
}

$("detail-close").addEventListener("click", () => {
  history.pushState(null, "", `${location.pathname}${location.search}`);
  select(null);
});

$("kill").addEventListener("click", () => {
  if (!detail) return;
  $("kill-target").textContent = detail.id;
  const dialog = $("kill-dialog");
  dialog.querySelector("form").reset();
  dialog.returnValue = "";
  dialog.showModal();
});

$("kill-dialog").addEventListener("close", (e) => {
  const dialog = e.target;
  if (dialog.returnValue !== "kill" || !detail) return;
  const reason = dialog.querySelector("input[name=reason]").value.trim();
  if (detail.socket.send({ type: "kill", ...(reason && { reason }) })) $("kill").disabled = true;
});

// ------------------------------------------------------------------ wiring

const sessionFromHash = () => {
  const m = /(?:^|&)session=([^&]*)/.exec(location.hash.slice(1));
  return m ? decodeURIComponent(m[1]) : null;
};
window.addEventListener("hashchange", () => config.token && select(sessionFromHash()));

function stop() {
  tenantSocket?.close();
  tenantSocket = null;
  select(null);
  sessions.clear();
  showStatus($("conn"), "offline");
}

function start() {
  readConfig();
  if (!config.token) return showLogin();
  $("login").hidden = true;
  $("app").hidden = false;
  $("logout").hidden = false;
  $("tenant-label").textContent = `tenant ${config.tenant}`;
  document.title = `Governor · ${config.tenant}`;
  tenantSocket = live(() => `/parties/tenant/${encodeURIComponent(config.tenant)}?token=${encodeURIComponent(config.token)}`, {
    onStatus: (st, delay) => showStatus($("conn"), st, delay),
    onClose: tokenStillGood,
    onMessage: (m) => {
      if (m.type === "sessions") {
        sessions.clear();
        for (const s of m.sessions) upsertSummary(s);
      } else if (m.type === "session") upsertSummary(m.summary);
      else if (m.type === "error") banner(`${m.code}: ${m.message}`);
      renderTable();
    },
  });
  renderTable();
  select(sessionFromHash());
}

start();
