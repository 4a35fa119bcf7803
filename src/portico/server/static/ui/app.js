// Portico dashboard: plain DOM and SVG, no framework, no CDN. Every value shown comes from /admin/* and is
// inserted as text (prompts and answers are user content), never as HTML.
"use strict";

const PALETTE = ["#2f6fde", "#e0823d", "#3aa17e", "#9b59b6", "#d4b000", "#17a2b8", "#c0567a", "#8c8c8c"];
const state = { selected: null, timer: null, tab: "requests" };

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

async function api(path, params) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
  const headers = {};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(url, { headers });
  if (r.status === 401 || r.status === 403) throw new NeedsKey();
  const body = await r.json().catch(() => null);
  if (!r.ok) throw new Error((body && body.error && body.error.message) || `HTTP ${r.status}`);
  return body;
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#requests").hidden = true;
  $("#usage").hidden = true;
  $("#evals").hidden = true;
  $("#applications").hidden = true;
  $("#login-error").textContent = message || "";
  $("#login-key").focus();
}

function hideLogin() {
  $("#login").hidden = true;
  $("#logout").hidden = !sessionStorage.getItem(KEY);
  showTab(state.tab);
}

// ---------- formatting ----------
const fmtTime = (ts) => new Date(ts * 1000).toLocaleString([], { hour12: false });
const fmtMs = (ms) => (ms === null || ms === undefined ? "–" : ms < 10 ? ms.toFixed(2) : ms.toFixed(0));
const fmtCost = (c) => (c ? c.toFixed(c < 0.01 ? 6 : 4) : "0");
const fmtNum = (n) => (n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : String(Math.round(n * 1000) / 1000));

// ---------- requests ----------
async function loadRequests() {
  const params = Object.fromEntries(new FormData($("#filters")));
  const data = await api("/admin/requests", { ...params, limit: 100 });
  const tbody = $("#request-table tbody");
  tbody.replaceChildren(
    ...data.data.map((r) =>
      h("tr", { "data-id": r.request_id, class: r.request_id === state.selected ? "selected" : null, onclick: () => guarded(() => openTrace(r.request_id)) },
        h("td", { title: r.request_id }, fmtTime(r.ts)),
        h("td", {}, r.model || ""),
        h("td", {}, r.application || ""),
        h("td", {}, r.key_name || ""),
        h("td", { class: r.status >= 400 ? "status-bad" : null }, r.status),
        h("td", { class: "num" }, fmtMs(r.latency_ms)),
        h("td", { class: "num" }, (r.prompt_tokens || 0) + (r.completion_tokens || 0)),
        h("td", { class: "num" }, fmtCost(r.cost_usd)))));
  $("#empty").hidden = data.data.length > 0;
  setStatus(`${data.data.length} requests · updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
}

function flatten(nodes, depth, out) {
  for (const n of nodes) {
    out.push({ ...n, depth });
    flatten(n.children || [], depth + 1, out);
  }
  return out;
}

function attrList(attrs) {
  const entries = Object.entries(attrs || {}).sort(([a], [b]) => a.localeCompare(b));
  return h("dl", { class: "attrs" }, entries.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, typeof v === "string" ? v : JSON.stringify(v))]));
}

function messages(input) {
  if (input === null || input === undefined) return h("p", { class: "muted" }, "Not stored (tracing.content is none).");
  if (!Array.isArray(input)) return h("pre", {}, JSON.stringify(input, null, 2));
  return h("div", {}, input.map((m) => h("div", { class: "msg" }, h("b", {}, m.role || "?"),
    typeof m.content === "string" ? m.content : JSON.stringify(m.content))));
}

function output(out) {
  if (out === null || out === undefined) return h("p", { class: "muted", "data-testid": "trace-output" }, "No answer stored.");
  if (typeof out === "string") return h("pre", { "data-testid": "trace-output" }, out);
  if (Array.isArray(out)) return h("div", { "data-testid": "trace-output" }, messages(out)); // one message per choice
  return h("pre", { "data-testid": "trace-output" }, JSON.stringify(out, null, 2));
}

// Retrieved documents and citations, wherever a step recorded them (attributes named *documents* / *citations*).
function documents(spans) {
  const found = [];
  for (const s of spans)
    for (const [k, v] of Object.entries(s.attributes || {}))
      if (/documents|citations/.test(k)) found.push(h("div", {}, h("b", {}, `${s.name} · ${k}`),
        h("pre", {}, typeof v === "string" ? v : JSON.stringify(v, null, 2))));
  return found.length ? found : [h("p", { class: "muted" }, "No retrieval in this request.")];
}

// Branch arms and loop iterations (portico.flow.* attributes, see portico.flow): the path the request took.
function flowPath(spans) {
  const steps = spans.filter((s) => "portico.flow.kind" in (s.attributes || {}));
  if (!steps.length) return [h("p", { class: "muted" }, "No branches or loops in this request.")];
  return [h("ol", { "data-testid": "trace-path" }, steps.map((s) => {
    const a = s.attributes, cond = a["portico.flow.condition"];
    const why = (cond ? ` ${cond} → ${a["portico.flow.value"]}` : ` (${a["portico.flow.arm"] || "no condition"})`) +
      (a["portico.flow.exhausted"] ? ", max_iterations reached" : "") + (a["portico.flow.errors"] ? ` (${a["portico.flow.errors"]})` : "");
    return h("li", { class: a["portico.flow.value"] ? "taken" : "not-taken" }, h("b", {}, s.name), why);
  }))];
}

// The application's pipeline (/admin/applications/{name}/pipeline) with this request's path laid over it: the
// parts whose spans are in the trace are marked "ran", arms not taken and steps not reached are dimmed.
// Without spans (the application view) nothing is marked.
function pipelineGraph(g, spans) {
  const ran = new Set((spans || []).map((s) => s.name));
  const list = (nodes, live) => h("ul", { class: "pipe" }, nodes.map((n) => item(n, live)));
  const mark = (on, label, ...kids) => h("li", { class: spans ? (on ? "ran" : "skipped") : null, "data-testid": "graph-node" },
    h("span", { class: "node" }, label), ...kids);
  const item = (n, live) => {
    const on = live && (n.kind === "parallel" || ran.has(n.span));
    if (n.kind === "parallel") return mark(on, "parallel", list(n.steps, live));
    if (n.kind === "branch") return mark(on, `branch ${n.path}`, h("ul", { class: "pipe" }, n.arms.map((a) =>
      mark(on && ran.has(a.span), a.condition === null ? "else" : `when ${a.condition}`, list(a.steps, on && ran.has(a.span))))));
    if (n.kind === "call") return mark(on, `call ${n.target}`, list(n.steps, on));
    if (n.kind === "loop") {
      const times = spans.filter((s) => s.name.startsWith(n.path + " iteration ")).length;
      return mark(on, `loop ${n.path} until ${n.until ?? "(none)"}, at most ${n.max_iterations}` +
        (on ? ` · ran ${times}×` : ""), list(n.steps, on));
    }
    return mark(on, n.span + (n.model ? ` (model ${n.model})` : ""));
  };
  return h("div", { "data-testid": "pipeline-graph" }, h("div", { class: "muted" }, `${g.application} → ${g.model}`),
    list(g.steps, true));
}

// The application view: filtering the requests by an application shows its pipeline until a request is opened.
async function showApplication(name) {
  const g = await api(`/admin/applications/${encodeURIComponent(name)}/pipeline`);
  state.selected = null;
  $("#trace").hidden = false;
  $("#trace").replaceChildren(h("h2", { "data-testid": "application-view" }, name),
    h("div", { class: "muted" }, `version ${g.version} · click one of its requests to see the path it took`),
    pipelineGraph(g, null));
}

async function openTrace(id) {
  state.selected = id;
  for (const tr of document.querySelectorAll("#request-table tbody tr")) tr.classList.toggle("selected", tr.dataset.id === id);
  const t = await api("/admin/requests/" + encodeURIComponent(id));
  const spans = flatten(t.spans || [], 0, []);
  const graph = t.application ? await api(`/admin/applications/${encodeURIComponent(t.application)}/pipeline`)
    .catch(() => null) : null; // an application no longer configured has no graph
  const total = Math.max(1e-6, ...spans.map((s) => s.start_ms + s.duration_ms));
  const detail = h("div", { "data-testid": "span-attributes" }, h("p", { class: "muted" }, "Click a step to see its attributes."));
  const rows = spans.map((s) => {
    const flow = "portico.flow.kind" in (s.attributes || {}); // an arm taken or a loop iteration: the path
    const row = h("div", { class: "span-row" + (flow ? " flow" : ""), "data-testid": "span", "data-name": s.name },
      h("div", { class: "span-name", style: `padding-left:${s.depth * 14}px`, title: s.name }, s.name),
      h("div", { class: "span-track" },
        h("div", { class: "span-bar" + (s.status === "error" ? " error" : ""),
          style: `left:${(100 * s.start_ms) / total}%;width:${(100 * s.duration_ms) / total}%` }),
        h("span", { class: "span-ms" }, fmtMs(s.duration_ms) + " ms")));
    row.addEventListener("click", () => {
      for (const r of document.querySelectorAll(".span-row")) r.classList.toggle("selected", r === row);
      detail.replaceChildren(h("b", {}, s.name), attrList(s.attributes));
    });
    return row;
  });
  $("#trace").hidden = false;
  $("#trace").replaceChildren(
    h("h2", {}, t.request_id),
    h("div", { class: "muted" }, `${fmtTime(t.ts)} · ${t.model || ""}${t.application ? " · " + t.application : ""} · status ${t.status} · ` +
      `${fmtMs(t.latency_ms)} ms · ${t.prompt_tokens}+${t.completion_tokens} tokens · $${fmtCost(t.cost_usd)}`),
    h("h3", {}, "Steps"),
    h("div", { class: "waterfall", "data-testid": "waterfall" }, rows),
    h("h3", {}, "Step attributes"), detail,
    h("h3", {}, "Path (branches and loops)"), ...flowPath(spans),
    ...(graph ? [h("h3", {}, "Pipeline"), pipelineGraph(graph, spans)] : []),
    h("h3", {}, "Prompt sent"), messages(t.input),
    h("h3", {}, "Answer"), output(t.output),
    h("h3", {}, "Retrieved documents"), ...documents(spans),
    h("h3", {}, "Feedback"), feedbackList(t));
}

// Feedback from POST /v1/feedback, and the conversation (session / user) the request belongs to.
function feedbackList(t) {
  const who = [t.session && `session ${t.session}`, t.user && `user ${t.user}`, t.version && `version ${t.version}`]
    .filter(Boolean).join(" · ");
  const rows = (t.feedback || []).map((f) => h("tr", { "data-testid": "feedback-row" },
    h("td", {}, f.metric), h("td", {}, f.kind),
    h("td", {}, f.kind === "pairwise" ? `winner: ${f.winner}${f.request_id === t.request_id ? "" : " (paired)"}`
      : typeof f.value === "object" && f.value !== null ? f.value.content || JSON.stringify(f.value) : String(f.value)),
    h("td", {}, f.key_name || ""), h("td", {}, fmtTime(f.created))));
  return h("div", { "data-testid": "feedback" }, who ? h("p", { class: "muted" }, who) : null,
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "metric"), h("th", {}, "kind"), h("th", {}, "value"),
      h("th", {}, "by"), h("th", {}, "when"))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No feedback yet."));
}

// ---------- usage charts ----------
function axisLabel(t, bucket) {
  const d = new Date(t * 1000);
  return bucket >= 86400 ? d.toLocaleDateString([], { month: "short", day: "numeric" })
    : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function frame(times, bucket, maxY) {
  const W = 600, H = 190, L = 48, B = 22, T = 8;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" });
  const y = (v) => T + (H - T - B) * (1 - v / (maxY || 1));
  for (const v of [0, maxY / 2, maxY]) {
    root.append(svg("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "#e3e6ec" }));
    root.append(svg("text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmtNum(v)));
  }
  const n = Math.max(1, times.length);
  const step = (W - L) / n;
  const ticks = [[0, "start"], [Math.floor(n / 2), "middle"], [n - 1, "end"]];
  for (const [i, anchor] of ticks) {
    if (times[i] === undefined) continue;
    const x = anchor === "start" ? L : anchor === "end" ? W : L + step * (i + 0.5);
    root.append(svg("text", { x, y: H - 6, "text-anchor": anchor }, axisLabel(times[i], bucket)));
  }
  return { root, y, step, L };
}

function legend(series) {
  return h("div", { class: "legend" }, series.map((s) => h("span", {}, h("i", { style: `background:${s.color}` }), s.name)));
}

function barChart(el, times, bucket, series) {
  const sums = times.map((_, i) => series.reduce((a, s) => a + (s.values[i] || 0), 0));
  const f = frame(times, bucket, Math.max(...sums, 0) || 1);
  times.forEach((t, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      const top = f.y(base + v), bottom = f.y(base);
      f.root.append(svg("rect", { x: f.L + f.step * i + 1, y: top, width: Math.max(1, f.step - 2), height: Math.max(0.5, bottom - top), fill: s.color },
        svg("title", {}, `${axisLabel(t, bucket)} ${s.name}: ${fmtNum(v)}`)));
      base += v;
    }
  });
  el.replaceChildren(f.root, legend(series));
}

function lineChart(el, times, bucket, series) {
  const all = series.flatMap((s) => s.values.filter((v) => v !== null));
  const f = frame(times, bucket, Math.max(...all, 0) || 1);
  for (const s of series) {
    let points = [];
    const flush = () => {
      if (points.length === 1) f.root.append(svg("circle", { cx: points[0][0], cy: points[0][1], r: 2.5, fill: s.color }));
      if (points.length > 1) f.root.append(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), fill: "none", stroke: s.color, "stroke-width": 2 }));
      points = [];
    };
    s.values.forEach((v, i) => (v === null ? flush() : points.push([f.L + f.step * (i + 0.5), f.y(v)])));
    flush();
  }
  el.replaceChildren(f.root, legend(series));
}

// The top groups get a colour each; the rest are summed as "other" so a chart stays readable.
function groupSeries(groups, field) {
  const top = groups.slice(0, PALETTE.length - 1).map((g, i) => ({ name: g.name, values: g.series[field], color: PALETTE[i] }));
  const rest = groups.slice(PALETTE.length - 1);
  if (rest.length) top.push({ name: `other (${rest.length})`, color: PALETTE[PALETTE.length - 1],
    values: rest[0].series[field].map((_, i) => rest.reduce((a, g) => a + g.series[field][i], 0)) });
  return top;
}

async function loadUsage() {
  const form = Object.fromEntries(new FormData($("#range")));
  const until = Date.now() / 1000;
  const s = await api("/admin/stats", { since: until - Number(form.range), until, group_by: form.group_by });
  const times = s.series.map((p) => p.t);
  const T = s.totals;
  $("#totals").replaceChildren(...[
    ["requests", fmtNum(T.requests)], ["errors", fmtNum(T.errors)],
    ["error rate", T.requests ? ((100 * T.errors) / T.requests).toFixed(1) + "%" : "–"],
    ["tokens in / out", `${fmtNum(T.prompt_tokens)} / ${fmtNum(T.completion_tokens)}`],
    ["cost", "$" + fmtCost(T.cost_usd)], ["p50 / p95 ms", `${fmtMs(T.p50_ms)} / ${fmtMs(T.p95_ms)}`],
  ].map(([k, v]) => h("div", { class: "card" }, h("div", { class: "v" }, v), h("div", { class: "k" }, k))));
  for (const el of document.querySelectorAll(".by")) el.textContent = s.group_by;
  barChart($("#chart-requests"), times, s.bucket_seconds, [
    { name: "ok", color: PALETTE[0], values: s.series.map((p) => p.requests - p.errors) },
    { name: "errors", color: "#c93c3c", values: s.series.map((p) => p.errors) }]);
  lineChart($("#chart-latency"), times, s.bucket_seconds, [
    { name: "p50", color: PALETTE[0], values: s.series.map((p) => p.p50_ms) },
    { name: "p95", color: PALETTE[1], values: s.series.map((p) => p.p95_ms) }]);
  barChart($("#chart-cost"), times, s.bucket_seconds, groupSeries(s.groups, "cost_usd"));
  barChart($("#chart-tokens"), times, s.bucket_seconds, groupSeries(s.groups, "tokens"));
  $("#error-table tbody").replaceChildren(...(s.errors.length ? s.errors.map((e) => h("tr", {}, h("td", {}, e.type), h("td", {}, e.status), h("td", { class: "num" }, e.count)))
    : [h("tr", {}, h("td", { colspan: 3, class: "muted" }, "No errors in this window."))]));
  setStatus(`usage · ${s.latency_sample} latency samples · updated ${new Date().toLocaleTimeString([], { hour12: false })}`);
}

// ---------- wiring ----------
function refresh() {
  const load = { requests: loadRequests, usage: loadUsage, evals: () => window.loadEvals(),
    applications: () => window.loadApplications() }[state.tab];
  return guarded(load);
}

function showTab(name) {
  state.tab = name;
  for (const b of document.querySelectorAll(".tab")) b.classList.toggle("active", b.dataset.tab === name);
  $("#requests").hidden = name !== "requests";
  $("#usage").hidden = name !== "usage";
  $("#evals").hidden = name !== "evals";
  $("#applications").hidden = name !== "applications";
  refresh();
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (!$("#login").hidden || document.hidden) return;
    if (state.tab === "usage" || (state.tab === "requests" && $("#auto").checked)) refresh();
  }, 3000);
}

for (const b of document.querySelectorAll(".tab")) b.addEventListener("click", () => showTab(b.dataset.tab));
$("#filters").addEventListener("submit", (e) => {
  e.preventDefault();
  const app = new FormData($("#filters")).get("application");
  refresh();
  if (app) guarded(() => showApplication(app));
});
$("#range").addEventListener("change", () => refresh());
$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("#login-key").value.trim());
  $("#login-key").value = "";
  hideLogin();
});
$("#logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
$("#logout").hidden = !sessionStorage.getItem(KEY);
showTab("requests");
schedule();
