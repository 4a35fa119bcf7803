// Evals tab: the runs from /admin/evals, and two of them side by side with per-item differences.
// Uses app.js's helpers (h, api, guarded, $, fmtTime). Outputs are model text: inserted as text, never HTML.
"use strict";

const evalState = { runs: [], a: null, b: null, cache: new Map() };

async function evalRun(id) {
  if (!evalState.cache.has(id)) evalState.cache.set(id, await api("/admin/evals/" + encodeURIComponent(id)));
  return evalState.cache.get(id);
}

const fmtScore = (v) => (v === null || v === undefined ? "–" : v.toFixed(3));

function fillSelect(sel, runs, chosen) {
  sel.replaceChildren(...runs.map((r) => h("option", { value: r.run_id, selected: r.run_id === chosen ? "selected" : null },
    `${r.run_id} (${r.status})`)));
}

async function loadEvals() {
  const data = await api("/admin/evals", { limit: 200 });
  evalState.runs = data.data;
  for (const r of data.data) if (r.status === "running") evalState.cache.delete(r.run_id);
  $("#eval-empty").hidden = data.data.length > 0;
  $("#eval-runs tbody").replaceChildren(...data.data.map((r) => h("tr", { "data-run": r.run_id },
    h("td", {}, r.run_id), h("td", {}, r.name), h("td", {}, r.status),
    h("td", {}, `${r.dataset} v${r.dataset_version}`), h("td", {}, fmtTime(r.created_at)),
    h("td", { class: r.summary && r.summary.gates === "fail" ? "status-bad" : null }, (r.summary && r.summary.gates) || "–"))));
  const done = data.data.filter((r) => r.status === "done");
  if (!evalState.b || !data.data.some((r) => r.run_id === evalState.b)) evalState.b = done[0] ? done[0].run_id : null;
  if (!evalState.a || !data.data.some((r) => r.run_id === evalState.a)) evalState.a = done[1] ? done[1].run_id : evalState.b;
  fillSelect($("#eval-a"), data.data, evalState.a);
  fillSelect($("#eval-b"), data.data, evalState.b);
  setStatus(`${data.data.length} eval runs`);
  if (evalState.a && evalState.b) await compareRuns();
}

function firstScorer(run) {
  const s = run.summary && Object.values(run.summary.variants)[0];
  return s ? Object.keys(s.scorers)[0] : null;
}

// One row per (variant, scorer): the two runs' means and the difference.
function summaryTable(A, B) {
  const rows = [];
  const variants = [...new Set([...Object.keys((A.summary || {}).variants || {}), ...Object.keys((B.summary || {}).variants || {})])];
  for (const v of variants) {
    const sa = ((A.summary || {}).variants || {})[v] || { scorers: {} };
    const sb = ((B.summary || {}).variants || {})[v] || { scorers: {} };
    for (const s of [...new Set([...Object.keys(sa.scorers), ...Object.keys(sb.scorers)])]) {
      const ma = (sa.scorers[s] || {}).mean, mb = (sb.scorers[s] || {}).mean;
      const d = ma !== undefined && mb !== undefined ? mb - ma : null;
      rows.push(h("tr", { "data-testid": "eval-summary-row", "data-variant": v, "data-scorer": s },
        h("td", {}, v), h("td", {}, s), h("td", { class: "num" }, fmtScore(ma)), h("td", { class: "num" }, fmtScore(mb)),
        h("td", { class: "num" + (d < 0 ? " status-bad" : "") }, d === null ? "–" : (d >= 0 ? "+" : "") + d.toFixed(3))));
    }
  }
  return h("table", {}, h("thead", {}, h("tr", {}, ...["variant", "scorer", "run A", "run B", "B − A"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows));
}

function cells(run) {
  const out = new Map(); // item|variant -> {score (mean over repeats of the first scorer), text}
  const scorer = firstScorer(run);
  for (const r of run.results || []) {
    const k = `${r.item_id}|${r.variant}`;
    const e = out.get(k) || { scores: [], text: null, error: null };
    const v = scorer ? (r.scores || {})[scorer] : null;
    if (v !== null && v !== undefined) e.scores.push(v);
    if (r.repeat === 0) { e.text = r.error ? null : (r.output || {}).text; e.error = r.error; }
    out.set(k, e);
  }
  for (const e of out.values()) e.score = e.scores.length ? e.scores.reduce((a, b) => a + b, 0) / e.scores.length : null;
  return out;
}

function itemTable(A, B) {
  const ca = cells(A), cb = cells(B);
  const only = $("#eval-changed").checked;
  const rows = [];
  for (const k of [...new Set([...ca.keys(), ...cb.keys()])].sort()) {
    const [item, variant] = k.split("|");
    const a = ca.get(k) || {}, b = cb.get(k) || {};
    const d = a.score !== undefined && b.score !== undefined && a.score !== null && b.score !== null ? b.score - a.score : null;
    const changed = d !== 0 || a.text !== b.text;
    if (only && !changed) continue;
    rows.push(h("tr", { "data-testid": "eval-item-row", "data-item": item, "data-variant": variant, "data-delta": d === null ? "" : d.toFixed(3),
      class: d < 0 ? "worse" : d > 0 ? "better" : null },
      h("td", {}, item), h("td", {}, variant), h("td", { class: "num" }, fmtScore(a.score)), h("td", { class: "num" }, fmtScore(b.score)),
      h("td", { class: "num" }, d === null ? "–" : (d >= 0 ? "+" : "") + d.toFixed(3)),
      h("td", { class: "out" }, h("pre", {}, a.error ? "error: " + a.error : a.text || "")),
      h("td", { class: "out" }, h("pre", {}, b.error ? "error: " + b.error : b.text || ""))));
  }
  const head = ["item", "variant", "A", "B", "B − A", "answer in A", "answer in B"].map((t) => h("th", {}, t));
  return rows.length ? h("table", { class: "eval-items" }, h("thead", {}, h("tr", {}, head)), h("tbody", {}, rows))
    : h("p", { class: "muted" }, "No item differs between the two runs.");
}

async function compareRuns() {
  const [A, B] = await Promise.all([evalRun(evalState.a), evalRun(evalState.b)]);
  const scorer = firstScorer(B) || firstScorer(A);
  $("#eval-compare").replaceChildren(
    h("h3", {}, `Run A ${A.run_id} vs run B ${B.run_id}`),
    summaryTable(A, B),
    h("h3", {}, `Items by ${scorer || "score"} (mean over repeats)`),
    itemTable(A, B));
}

$("#eval-pick").addEventListener("change", (e) => {
  evalState.a = $("#eval-a").value;
  evalState.b = $("#eval-b").value;
  guarded(compareRuns);
});
window.loadEvals = loadEvals;
