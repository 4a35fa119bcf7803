// Approvals page: write actions waiting for a human. Plain DOM, no framework, no CDN; every value from
// /admin/approvals is inserted as text. The master key is shared with the main dashboard (sessionStorage).
"use strict";

const state = { selected: null, timer: null };

async function api(path, { params, body } = {}) {
  const url = new URL(path, location.origin);
  for (const [k, v] of Object.entries(params || {})) if (v) url.searchParams.set(k, v);
  const headers = { "content-type": "application/json" };
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = "Bearer " + key;
  const r = await fetch(url, body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) });
  if (r.status === 401 || r.status === 403) throw new NeedsKey();
  const data = await r.json().catch(() => null);
  if (!r.ok) throw new Error((data && data.error && data.error.message) || `HTTP ${r.status}`);
  return data;
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#approvals").hidden = true;
  $("#login-error").textContent = message || "";
  $("#login-key").focus();
}

const fmtTime = (ts) => (ts ? new Date(ts * 1000).toLocaleString([], { hour12: false }) : "–");
const pretty = (v) => JSON.stringify(v, null, 2);

async function load() {
  const status = $("#filters select[name=status]").value;
  const { data } = await api("/admin/approvals", { params: { status } });
  $("#login").hidden = true;
  $("#approvals").hidden = false;
  $("#logout").hidden = !sessionStorage.getItem(KEY);
  const body = $("#approval-table tbody");
  body.replaceChildren(...data.map((a) => h("tr", {
    "data-id": a.id, class: a.id === state.selected ? "selected" : null, onclick: () => guarded(() => open(a.id)),
  }, h("td", {}, fmtTime(a.created_at)), h("td", {}, a.tool), h("td", { "data-testid": "row-status" }, a.status),
    h("td", {}, a.key_name || ""), h("td", {}, a.application || ""), h("td", {}, fmtTime(a.expires_at)))));
  $("#empty").hidden = data.length > 0;
  setStatus(`${data.length} shown · ${new Date().toLocaleTimeString([], { hour12: false })}`);
}

async function open(id) {
  state.selected = id;
  const a = await api(`/admin/approvals/${encodeURIComponent(id)}`);
  const pending = a.status === "pending";
  const args = h("textarea", { rows: 8, cols: 60, "data-testid": "approval-arguments", readonly: pending ? null : "" });
  args.value = pretty(a.arguments);
  const reason = h("input", { placeholder: "reason for denying", size: 40, "data-testid": "deny-reason" });
  const decide = async (verb) => {
    const body = verb === "approve" ? { arguments: JSON.parse(args.value) } : { reason: reason.value || null };
    await api(`/admin/approvals/${encodeURIComponent(id)}/${verb}`, { body });
    await load();
    await open(id);
  };
  const conversation = (a.conversation || []).map((m) => h("div", { class: "msg" }, h("b", {}, m.role + ": "), m.text));
  // replaceChildren takes nodes only: optional sections are arrays or null, flattened away here.
  $("#detail").replaceChildren(...[
    h("h2", {}, a.id),
    h("dl", { class: "attrs" },
      h("dt", {}, "tool"), h("dd", {}, a.tool),
      h("dt", {}, "status"), h("dd", { "data-testid": "detail-status" }, a.status),
      h("dt", {}, "asked by"), h("dd", {}, `${a.key_name || "–"} (${a.application || "no application"})`),
      h("dt", {}, "request"), h("dd", {}, a.request_id || "–"),
      h("dt", {}, "decided"), h("dd", {}, a.decided_by ? `${a.decided_by} at ${fmtTime(a.decided_at)}` : "–"),
      a.note ? [h("dt", {}, "note"), h("dd", {}, a.note)] : null),
    h("h3", {}, "What the model said"), h("pre", {}, a.reason || "–"),
    h("h3", {}, "Arguments"), args,
    pending ? h("p", { class: "filters" },
      h("button", { type: "submit", "data-testid": "approve", onclick: () => guarded(() => decide("approve")) }, "Approve and run"),
      reason,
      h("button", { "data-testid": "deny", onclick: () => guarded(() => decide("deny")) }, "Deny")) : null,
    a.result ? [h("h3", {}, "Result"), h("pre", { "data-testid": "approval-result" }, a.result.content)] : null,
    h("h3", {}, "Conversation"), conversation.length ? conversation : h("p", { class: "muted" }, "not stored"),
    h("h3", {}, "History"),
    h("table", {}, h("tbody", {}, (a.audit || []).map((e) => h("tr", {},
      h("td", {}, fmtTime(e.ts)), h("td", {}, e.action), h("td", {}, e.actor || ""), h("td", {}, e.status || ""))))),
  ].flat().filter(Boolean));
  $("#detail").hidden = false;
}

$("#login-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("#login-key").value.trim());
  $("#login-key").value = "";
  guarded(load);
});
$("#logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(""); });
$("#filters select[name=status]").addEventListener("change", () => guarded(load));
state.timer = setInterval(() => {
  if ($("#auto").checked && $("#login").hidden && !document.hidden) guarded(load);
}, 3000);
guarded(load);
