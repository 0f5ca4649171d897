// blockhub operator dashboard: datasets, live channel messages with replay, SQL.
// Talks only to the public API (REST with a bearer token, /v1/ws with an auth message).
"use strict";

const state = {
  token: sessionStorage.getItem("blockhub.token") || "",
  // last offset seen per channel, so that a reconnect replays what was missed
  offsets: JSON.parse(sessionStorage.getItem("blockhub.offsets") || "{}"),
  epoch: sessionStorage.getItem("blockhub.epoch") || null,
  ws: null,
  retry: 0,
  channels: [],
  received: 0,
};

const $ = (sel) => document.querySelector(sel);

async function api(path, options = {}) {
  const res = await fetch(path, {
    ...options,
    headers: { Authorization: `Bearer ${state.token}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const body = await res.json().catch(() => ({ ok: false, error: res.statusText }));
  if (!res.ok) throw Object.assign(new Error(body.error || res.statusText), { status: res.status, body });
  return body;
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  return td;
}

async function loadDatasets() {
  const datasets = await api("/v1/datasets");
  const tbody = $("#datasets tbody");
  tbody.replaceChildren();
  for (const d of datasets) {
    const tr = document.createElement("tr");
    tr.dataset.id = d.id;
    for (const v of [d.id, d.title, d.agency, d.sharing, d.latest_version ?? "–"]) tr.append(cell(v));
    tbody.append(tr);
  }
  state.channels = datasets.map((d) => `dataset:${d.id}`);
  return datasets;
}

function showEvent(msg) {
  const li = document.createElement("li");
  const ts = new Date(msg.ts).toLocaleTimeString();
  const d = msg.data || {};
  let what;
  if (msg.event === "dataset.updated") {
    what = `version ${d.version}, +${Number(d.rows_added).toLocaleString()} rows (total ${Number(d.total_rows).toLocaleString()})`;
  } else if (msg.event && msg.event.startsWith("alert.")) {
    li.className = "alert";
    what = `${d.rule_id ?? ""} ${d.key ?? ""} ${d.status ?? ""}`.trim();
  } else if (msg.event && msg.event.startsWith("order.")) {
    li.className = "order";
    const o = d.order || {};
    what = `${o.target ?? ""}: ${o.instructions ?? ""} (${o.status ?? ""})`;
  } else {
    what = JSON.stringify(d).slice(0, 160);
  }
  li.innerHTML = `<span class="ts"></span> <span class="ch"></span> #<span class="off"></span> <b class="ev"></b> <span class="what"></span>`;
  li.querySelector(".ts").textContent = ts;
  li.querySelector(".ch").textContent = msg.channel;
  li.querySelector(".off").textContent = msg.offset;
  li.querySelector(".ev").textContent = msg.event;
  li.querySelector(".what").textContent = what;
  $("#events").prepend(li);
  state.received += 1;
  $("#live-count").textContent = `${state.received} messages`;
}

function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/v1/ws`);
  state.ws = ws;
  ws.onopen = () => ws.send(JSON.stringify({ op: "auth", token: state.token }));
  ws.onmessage = (ev) => {
    const msg = JSON.parse(ev.data);
    if (msg.type === "welcome") {
      state.retry = 0;
      $("#conn").className = "conn on";
      $("#principal").textContent = `${msg.principal} · ${msg.agency} · ${msg.role}`;
      // Operators also watch the city's alerts and the orders they dispatch.
      const ops = msg.role === "operator" || msg.role === "admin";
      const extra = ops ? ["alerts", `orders:${msg.agency}`] : [`orders:${msg.agency}`, `orders:${msg.principal}`];
      for (const c of extra) if (!state.channels.includes(c)) state.channels.push(c);
      if (state.epoch && state.epoch !== msg.epoch) state.offsets = {};
      state.epoch = msg.epoch;
      sessionStorage.setItem("blockhub.epoch", msg.epoch);
      for (const channel of state.channels) {
        const since = state.offsets[channel];
        ws.send(JSON.stringify({ op: "subscribe", channel, since: since ?? 0, epoch: state.epoch }));
      }
    } else if (msg.type === "message") {
      state.offsets[msg.channel] = msg.offset;
      sessionStorage.setItem("blockhub.offsets", JSON.stringify(state.offsets));
      showEvent(msg);
      if (msg.event === "dataset.updated") loadDatasets().catch(() => {});
    } else if (msg.type === "error") {
      console.warn("websocket error", msg);
    }
  };
  ws.onclose = (ev) => {
    $("#conn").className = "conn off";
    if (ev.code === 4401 || !state.token) return;  // bad token: no point retrying
    const delay = Math.min(30000, 500 * 2 ** state.retry++);
    setTimeout(connect, delay);
  };
}

async function runQuery(sql) {
  $("#query-error").textContent = "";
  try {
    const body = await api("/v1/query", { method: "POST", body: JSON.stringify({ sql, max_rows: 500 }) });
    const thead = $("#result thead"), tbody = $("#result tbody");
    const head = document.createElement("tr");
    for (const c of body.columns) { const th = document.createElement("th"); th.textContent = c.name; head.append(th); }
    thead.replaceChildren(head);
    tbody.replaceChildren(...body.rows.map((row) => {
      const tr = document.createElement("tr");
      for (const c of body.columns) tr.append(cell(row[c.name]));
      return tr;
    }));
    const versions = Object.entries(body.versions).map(([k, v]) => `${k} v${v}`).join(", ");
    $("#query-meta").textContent = `${body.row_count} rows${body.truncated ? " (truncated)" : ""} · ${body.query_ms} ms · ${versions}`;
  } catch (err) {
    $("#query-error").textContent = err.message;
  }
}

async function start() {
  try {
    const datasets = await loadDatasets();
    $("#login").hidden = true;
    $("#app").hidden = false;
    $("#who").hidden = false;
    if (datasets.length) $("#sql").value = `SELECT count(*) AS n FROM ${datasets[0].id}`;
    connect();
  } catch (err) {
    $("#login-error").textContent = err.status === 401 ? "token refused: " + err.message : err.message;
    sessionStorage.removeItem("blockhub.token");
  }
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("#token").value.trim();
  sessionStorage.setItem("blockhub.token", state.token);
  start();
});
$("#query-form").addEventListener("submit", (ev) => { ev.preventDefault(); runQuery($("#sql").value); });
$("#logout").addEventListener("click", () => {
  sessionStorage.clear();
  state.token = "";
  if (state.ws) state.ws.close();
  location.reload();
});
if (state.token) start();
