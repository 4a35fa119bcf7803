// Applications tab: every configured application (/admin/applications) with its last 24 hours of traffic
// (/admin/stats grouped by application) and feedback; a click draws its pipeline (app.js's pipelineGraph) and
// its feedback by version and model, and links to its requests.
// Uses app.js's helpers (h, api, guarded, $, pipelineGraph, showTab, fmtCost). Names are inserted as text.
"use strict";

const appState = { selected: null, apps: [], stats: null };

function feedbackSummary(rows) {
  // One short figure per metric: the mean of boolean/float metrics, wins-losses-ties of pairwise ones.
  const by = new Map();
  for (const f of rows) {
    const e = by.get(f.metric) || { kind: f.kind, count: 0, sum: 0, wins: 0, losses: 0, ties: 0 };
    e.count += f.count;
    if (f.mean !== undefined) e.sum += f.mean * f.count;
    e.wins += f.wins || 0; e.losses += f.losses || 0; e.ties += f.ties || 0;
    by.set(f.metric, e);
  }
  return [...by].map(([m, e]) => e.kind === "pairwise" ? `${m} ${e.wins}-${e.losses}-${e.ties}`
    : e.kind === "boolean" || e.kind === "float" ? `${m} ${(e.sum / e.count).toFixed(2)} (n=${e.count})`
    : `${m} n=${e.count}`).join(" · ");
}

async function loadApplications() {
  const since = Date.now() / 1000 - 86400;
  const [apps, stats] = await Promise.all([api("/admin/applications"),
    api("/admin/stats", { group_by: "application", since: since.toFixed(0) })]);
  appState.apps = apps.data;
  appState.stats = stats;
  const traffic = new Map(stats.groups.map((g) => [g.name, g]));
  $("#app-empty").hidden = apps.data.length > 0;
  $("#app-table tbody").replaceChildren(...apps.data.map((a) => {
    const t = traffic.get(a.name) || { requests: 0, errors: 0, cost_usd: 0 };
    const fb = stats.feedback.filter((f) => f.application === a.name);
    const exp = a.experiment ? `${a.experiment.name}: ` + a.experiment.variants.map((v) => `${v.name} ${v.weight}`).join(", ") +
      (a.experiment.bandit ? " (bandit)" : "") : "–";
    const tr = h("tr", { "data-app": a.name, class: a.name === appState.selected ? "selected" : null },
      h("td", {}, a.name), h("td", {}, a.model), h("td", {}, a.version), h("td", { class: "num" }, a.steps),
      h("td", {}, exp), h("td", { class: "num", "data-testid": "app-requests" }, t.requests),
      h("td", { class: "num" + (t.errors ? " status-bad" : "") }, t.errors), h("td", { class: "num" }, fmtCost(t.cost_usd)),
      h("td", {}, feedbackSummary(fb) || "–"));
    tr.addEventListener("click", () => guarded(() => openApplication(a.name)));
    return tr;
  }));
  setStatus(`${apps.data.length} applications`);
  if (appState.selected) await openApplication(appState.selected);
}

async function openApplication(name) {
  appState.selected = name;
  for (const tr of document.querySelectorAll("#app-table tbody tr")) tr.classList.toggle("selected", tr.dataset.app === name);
  const g = await api(`/admin/applications/${encodeURIComponent(name)}/pipeline`);
  const fb = (appState.stats ? appState.stats.feedback : []).filter((f) => f.application === name);
  const rows = fb.map((f) => h("tr", { "data-testid": "app-feedback-row" }, h("td", {}, f.metric), h("td", {}, f.version ?? "–"),
    h("td", {}, f.model ?? "–"), h("td", { class: "num" }, f.count),
    h("td", { class: "num" }, f.mean !== undefined ? f.mean.toFixed(3) : f.kind === "pairwise"
      ? `${f.wins || 0} won, ${f.losses || 0} lost, ${f.ties || 0} tied` : JSON.stringify(f.categories || {}))));
  const open = h("button", { class: "link", "data-testid": "app-requests-link" }, "Show its requests");
  open.addEventListener("click", () => {
    $("#filters").elements.application.value = name;
    showTab("requests");
    guarded(() => showApplication(name));
  });
  const detail = $("#app-detail");
  detail.hidden = false;
  detail.replaceChildren(h("h2", { "data-testid": "app-name" }, name),
    h("div", { class: "muted" }, `model ${g.model} · version ${g.version} · `, open),
    h("h3", {}, "Pipeline"), pipelineGraph(g, null),
    h("h3", {}, "Feedback, last 24 hours, by version and model"),
    rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "metric"), h("th", {}, "version"),
      h("th", {}, "model"), h("th", { class: "num" }, "count"), h("th", { class: "num" }, "score"))), h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No feedback yet (POST /v1/feedback)."));
}

window.loadApplications = loadApplications;
