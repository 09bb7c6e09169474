// The BeanRaft dashboard: polls the nodes' HTTP endpoints once a second and draws what they say.
//
// Which nodes: the one that served the page, and every node a /status of theirs names (its own
// "http" and its "http_peers", given to the nodes with --peer-http). The page sends the token to
// every node it knows, so it takes no address from anything a link can set, such as its own
// query string: a link naming a host of someone else's would hand them the token once entered.
// Every known node's /status is read each round (bounded by a timeout), so the nodes table and
// the leader are never older than one round. Tubes and buried jobs are read from one node, the
// "source": it stays the same while it answers, and the first node that answers takes over when
// it does not.
// The admin token lives in this page's memory and sessionStorage only; it is sent as a bearer
// header with every request once entered (nodes started with --http-read-token-required need it
// for reads too; the others ignore it on reads) and never written back into the page.
"use strict";

const POLL_MS = 1000;
const FETCH_TIMEOUT_MS = 800;
const HISTORY_S = 300; // the chart's span, one sample per round
const BURIED_LIMIT = 50;
const TOKEN_KEY = "beanraft-admin-token";

const state = {
  nodes: [],           // base URLs, in the order they became known
  statuses: new Map(), // base URL -> last /status, or null when unreachable
  source: null,
  tube: "default",
  history: new Map(),  // tube -> [{t, ready, buried, total, deletes}]
  token: sessionStorage.getItem(TOKEN_KEY),
};

const $ = (id) => document.getElementById(id);

function baseUrl(address) {
  // A node bound to every interface reports 0.0.0.0: reach it by the page's host name.
  const [host, port] = [address.slice(0, address.lastIndexOf(":")), address.slice(address.lastIndexOf(":") + 1)];
  const reachable = (host === "0.0.0.0" || host === "::" || host === "[::]") ? location.hostname : host;
  return `${location.protocol}//${reachable}:${port}`;
}

function learn(url) {
  if (url && !state.nodes.includes(url)) state.nodes.push(url);
}

async function getJson(url, options = {}) {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), FETCH_TIMEOUT_MS);
  const headers = { ...(options.headers || {}) };
  if (state.token && !headers.Authorization) headers.Authorization = `Bearer ${state.token}`;
  try {
    const response = await fetch(url, { ...options, headers, signal: abort.signal, cache: "no-store" });
    if (response.status === 401 && !options.method) {
      say("this node needs the admin token to be read: enter it below", true);
    }
    const body = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, body };
  } finally {
    clearTimeout(timer);
  }
}

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

// ------------------------------------------------------------------------------- nodes

async function pollNodes() {
  const answers = await Promise.all(state.nodes.map(async (url) => {
    try {
      const reply = await getJson(`${url}/status`);
      return [url, reply.ok ? reply.body : null];
    } catch (error) {
      return [url, null];
    }
  }));
  for (const [url, status] of answers) {
    state.statuses.set(url, status);
    if (status) {
      if (status.http) learn(baseUrl(status.http));
      for (const peer of status.http_peers || []) learn(baseUrl(peer));
    }
  }
}

function leaderStatus() {
  let best = null;
  for (const status of state.statuses.values()) {
    if (status && status.role === "leader" && (!best || status.term > best.term)) best = status;
  }
  return best;
}

function drawNodes() {
  const leader = leaderStatus();
  const contact = new Map();
  for (const peer of (leader && leader.peers) || []) contact.set(peer.address, peer.silent_s);
  $("leader").textContent = leader ? leader.node : "none";
  const body = $("nodes").tBodies[0];
  body.replaceChildren();
  for (const url of state.nodes) {
    const status = state.statuses.get(url);
    const row = body.insertRow();
    row.dataset.url = url;
    if (!status) {
      row.className = "down";
      cell(row, "?");
      cell(row, url);
      cell(row, "unreachable");
      for (let i = 0; i < 6; i++) cell(row, "");
      continue;
    }
    row.dataset.node = status.node;
    if (status.role === "leader") row.className = "leader";
    cell(row, status.node);
    cell(row, url);
    cell(row, status.role, "role");
    cell(row, status.term);
    cell(row, status.commit_index);
    cell(row, status.applied_index);
    cell(row, leader ? Math.max(0, leader.commit_index - status.applied_index) : "?");
    const health = status.journal_failed ? "journal failed" : (status.ready ? "ready" : "not ready");
    cell(row, health, status.ready ? "" : "bad");
    const silent = contact.get(status.node);
    cell(row, status.role === "leader" ? "-" : (silent == null ? "?" : `${silent.toFixed(1)} s ago`));
  }
}

function pickSource() {
  const answers = (url) => Boolean(state.statuses.get(url));
  if (state.source && answers(state.source)) return;
  state.source = state.nodes.find((url) => answers(url) && state.statuses.get(url).ready)
    || state.nodes.find(answers) || null;
}

// ------------------------------------------------------------------------------- tubes

function record(tubes) {
  const now = Date.now() / 1000;
  for (const tube of tubes) {
    const samples = state.history.get(tube.name) || [];
    samples.push({ t: now, ready: tube.ready, buried: tube.buried, total: tube.total_jobs,
      deletes: tube.deletes });
    while (samples.length && samples[0].t < now - HISTORY_S) samples.shift();
    state.history.set(tube.name, samples);
  }
}

function rate(samples, key, span = 5) {
  if (samples.length < 2) return 0;
  const first = samples[Math.max(0, samples.length - 1 - span)];
  const last = samples[samples.length - 1];
  return last.t > first.t ? Math.max(0, last[key] - first[key]) / (last.t - first.t) : 0;
}

function drawTubes(doc) {
  const body = $("tubes").tBodies[0];
  body.replaceChildren();
  for (const tube of doc.tubes) {
    const samples = state.history.get(tube.name) || [];
    const row = body.insertRow();
    row.dataset.tube = tube.name;
    if (tube.name === state.tube) row.className = "selected";
    cell(row, tube.name);
    for (const key of ["ready", "urgent", "reserved", "delayed", "buried"]) cell(row, tube[key], key);
    cell(row, rate(samples, "total").toFixed(1), "puts");
    cell(row, rate(samples, "deletes").toFixed(1), "deletes");
    cell(row, tube.pause_s ? `${tube.pause_left_s.toFixed(0)} s of ${tube.pause_s} s` : "", "paused");
    const button = document.createElement("button");
    button.textContent = "show";
    button.className = "show";
    button.addEventListener("click", () => { state.tube = tube.name; $("peek").textContent = ""; refresh(); });
    row.insertCell().append(button);
  }
  $("tubes-note").textContent = doc.truncated ? "(only the first tubes are listed)" : "";
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const samples = state.history.get(state.tube) || [];
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  $("chart-tube").textContent = state.tube;
  if (samples.length < 2) return;
  const now = samples[samples.length - 1].t;
  // The last minute at least, the last five at most: a fresh page's chart is not a sliver.
  const span = Math.min(HISTORY_S, Math.max(60, now - samples[0].t));
  const rates = samples.map((s, i) => rate(samples.slice(0, i + 1), "total", 1));
  const top = Math.max(1, ...samples.map((s) => Math.max(s.ready, s.buried)), ...rates);
  const x = (t) => canvas.width - ((now - t) / span) * canvas.width;
  const y = (v) => canvas.height - 4 - (v / top) * (canvas.height - 8);
  const line = (values, color) => {
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    samples.forEach((s, i) => (i ? ctx.lineTo : ctx.moveTo).call(ctx, x(s.t), y(values[i])));
    ctx.stroke();
  };
  line(samples.map((s) => s.ready), "#2a7de1");
  line(samples.map((s) => s.buried), "#d0452f");
  line(rates, "#3a9d4a");
  ctx.fillStyle = "#667";
  ctx.fillText(String(top), 4, 12);
}

// ------------------------------------------------------------------------------- buried jobs

function drawBuried(doc) {
  $("buried-tube").textContent = state.tube;
  const body = $("buried").tBodies[0];
  body.replaceChildren();
  for (const job of (doc && doc.jobs) || []) {
    const row = body.insertRow();
    row.dataset.job = job.id;
    cell(row, job.id);
    cell(row, job.pri);
    cell(row, job.size);
    const actions = row.insertCell();
    for (const [name, act] of [["peek", peek], ["kick", kick], ["delete", remove]]) {
      const button = document.createElement("button");
      button.textContent = name;
      button.className = name;
      button.addEventListener("click", () => act(job.id));
      actions.append(button);
    }
  }
  const shown = (doc && doc.jobs.length) || 0;
  $("buried-note").textContent = doc && doc.count > shown ? `${shown} of ${doc.count} shown` : "";
}

async function peek(id) {
  const reply = await getJson(`${state.source}/api/jobs/${id}`);
  $("peek").textContent = reply.ok
    ? `job ${id} (${reply.body.size} bytes, ${reply.body.stats.state}):\n${reply.body.body}`
    : `job ${id}: not found`;
}

function say(text, error = false) {
  $("message").textContent = text;
  $("message").className = error ? "error" : "";
}

async function mutate(method, path, what) {
  if (!state.token) {
    say("enter the admin token first", true);
    return;
  }
  // Any node will do (each proposes through Raft): the source first, then the others.
  for (const url of [state.source, ...state.nodes.filter((u) => u !== state.source)]) {
    try {
      const reply = await getJson(`${url}${path}`, { method, headers: { Authorization: `Bearer ${state.token}` } });
      say(reply.ok ? `${what}: ${reply.body.reply}` : `${what}: ${reply.body.error || reply.body.reply || reply.status}`,
        !reply.ok);
      refresh();
      return;
    } catch (error) {
      // unreachable: try the next node
    }
  }
  say(`${what}: no node answered`, true);
}

const kick = (id) => mutate("POST", `/api/jobs/${id}/kick`, `kick ${id}`);
const remove = (id) => mutate("DELETE", `/api/jobs/${id}`, `delete ${id}`);

// ------------------------------------------------------------------------------- the loop

async function pollSource() {
  if (!state.source) {
    $("source").textContent = "no node answers";
    return;
  }
  $("source").textContent = state.source;
  const tubes = await getJson(`${state.source}/api/tubes`);
  if (!tubes.ok) throw new Error(`tubes: HTTP ${tubes.status}`);
  // Without a leader the node answers what it has applied, unconfirmed: say so.
  $("stale").textContent = tubes.body.stale ? "(no leader: may be stale)" : "";
  record(tubes.body.tubes);
  drawTubes(tubes.body);
  drawChart();
  const buried = await getJson(`${state.source}/api/tubes/${encodeURIComponent(state.tube)}/buried?limit=${BURIED_LIMIT}`);
  drawBuried(buried.ok ? buried.body : null);
}

let timer = null;
let running = false;
let again = false;

async function refresh() {
  if (running) {
    again = true; // a click while a round runs: one more round right after it
    return;
  }
  running = true;
  clearTimeout(timer);
  try {
    await pollNodes();
    drawNodes();
    pickSource();
    await pollSource();
  } catch (error) {
    state.statuses.set(state.source, null); // read from another node next round
    state.source = null;
  } finally {
    running = false;
    timer = setTimeout(refresh, again ? 0 : POLL_MS);
    again = false;
  }
}

function showTokenState() {
  $("token-state").textContent = state.token ? "token set" : "no token";
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim() || null;
  $("token").value = "";
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  showTokenState();
});
$("token-forget").addEventListener("click", () => {
  state.token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});

learn(location.origin);
showTokenState();
refresh();
