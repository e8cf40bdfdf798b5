// Requests: the list (GET /v1/requests, status filter, cursor paging) and one request's detail
// (GET /v1/requests/{id}: timings, usage, autonomy, output) with its audit trail (GET /v1/requests/{id}/audit).
import { get, post } from "./api.js";
import { emptyState, errorBox, h, replace, when } from "./dom.js";
import { hasScope } from "./session.js";

export const STATUSES = ["queued", "running", "awaiting_approval", "succeeded", "failed", "canceled"];
export const LEVEL_NAMES = { no_ai: "No AI", assisted: "Assisted", collaborator: "Collaborator", expert: "Expert",
  agent: "Agent" };
const PAGE = 20;

const enc = encodeURIComponent;
const levelName = (r) => (r.autonomy ? LEVEL_NAMES[r.autonomy.level] || r.autonomy.level : "—");
const lastUserText = (r) => {
  const msgs = r.input && Array.isArray(r.input.messages) ? r.input.messages : [];
  const users = msgs.filter((m) => m.role === "user");
  const last = users.length ? users[users.length - 1] : msgs[msgs.length - 1];
  return last && typeof last.content === "string" ? last.content : "";
};
const short = (text, n = 80) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}`, "data-status": status }, status.replaceAll("_", " "));
}

export async function requestsView(main) {
  const params = new URLSearchParams(location.search);
  const initial = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const filter = h("select", { id: "status-filter", "aria-label": "Status" },
    h("option", { value: "" }, "Every status"),
    STATUSES.map((s) => h("option", { value: s, selected: s === initial }, s.replaceAll("_", " "))));
  const list = h("div", { id: "request-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const more = h("div", { id: "request-more" });
  let rows = [];

  async function load(cursor) {
    const q = new URLSearchParams({ limit: String(PAGE) });
    if (filter.value) q.set("status", filter.value);
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await get(`/v1/requests?${q}`);
    } catch (err) {
      replace(more);
      replace(list, errorBox(err));
      return;
    }
    rows = cursor ? rows.concat(page.data) : page.data;
    draw(page.next_cursor);
  }

  function draw(nextCursor) {
    if (!rows.length) {
      replace(list, emptyState(filter.value ? `No ${filter.value.replaceAll("_", " ")} requests.`
        : "No requests yet. Send one from the chat or the API."));
    } else {
      replace(list, h("div", { class: "table-wrap" }, h("table", {},
        h("caption", { class: "sr-only" }, "Requests, newest first"),
        h("thead", {}, h("tr", {}, ["Request", "Status", "Level", "Prompt", "Tokens", "Created"]
          .map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows.map((r) => h("tr", { "data-request-id": r.id, "data-status": r.status },
          h("td", {}, h("a", { href: `/requests/${enc(r.id)}`, "data-link": true }, h("code", {}, r.id))),
          h("td", {}, statusBadge(r.status)),
          h("td", {}, levelName(r)),
          h("td", { class: "wrap" }, short(lastUserText(r)) || "—"),
          h("td", { class: "num" }, r.usage ? String(r.usage.total_tokens) : "—"),
          h("td", {}, when(r.created_at))))))));
    }
    replace(more, nextCursor ? h("button", { type: "button", id: "load-more", onclick: async (ev) => {
      ev.target.disabled = true;
      await load(nextCursor);
    } }, "Load more") : rows.length ? h("p", { class: "muted small", id: "list-end" }, `${rows.length} shown; that is all.`) : null);
  }

  filter.addEventListener("change", () => {
    const url = filter.value ? `/requests?status=${enc(filter.value)}` : "/requests";
    history.replaceState(history.state, "", url);
    replace(list, h("p", { class: "muted" }, "Loading…"));
    load();
  });

  replace(main, h("section", { class: "requests" },
    h("h1", {}, "Requests"),
    h("div", { class: "inline-form" }, h("div", { class: "field" }, h("label", { for: "status-filter" }, "Status"), filter)),
    list, more));
  await load();
}

// The audit trail as a list (GET /v1/requests/{id}/audit), newest last.
export async function auditTrail(requestId) {
  const box = h("ol", { class: "audit", id: "audit-trail", "aria-label": "Audit trail" });
  let entries;
  try {
    entries = (await get(`/v1/requests/${enc(requestId)}/audit`)).data;
  } catch (err) {
    return errorBox(err);
  }
  if (!entries.length) return emptyState("No audit entries.");
  for (const e of entries) box.append(auditEntry(e));
  return box;
}

function auditEntry(e) {
  const d = e.detail || {};
  const facts = [];
  if (e.event === "level_resolved") {
    const rule = d.rule || {};
    facts.push(`level ${LEVEL_NAMES[e.level] || e.level}`, rule.scope ? `by ${rule.scope}` : null,
      d.task ? `task ${d.task}` : null, d.context ? `context ${d.context}` : null,
      d.model_invoked === false ? "model not invoked" : null);
  } else {
    if (d.comment) facts.push(`comment: ${d.comment}`);
    if (d.action_authorized) facts.push("action authorised");
    if (d.endpoint_id) facts.push(`endpoint ${d.endpoint_id}`);
    if (d.attempts !== undefined) facts.push(`attempts ${d.attempts}`);
  }
  return h("li", { "data-event": e.event },
    h("strong", { class: "audit-event" }, e.event.replaceAll("_", " ")), " ",
    h("span", { class: "muted" }, `by ${e.actor || "—"}${e.actor_kind ? ` (${e.actor_kind})` : ""} · ${when(e.at)}`),
    facts.filter(Boolean).length ? h("div", { class: "small" }, facts.filter(Boolean).join(" · ")) : null,
    e.event === "edited" && d.final !== undefined ? h("div", { class: "audit-edit" },
      h("div", { class: "small muted" }, "Draft"), h("pre", { class: "output", "data-draft": true }, String(d.draft ?? "")),
      h("div", { class: "small muted" }, "Final"), h("pre", { class: "output", "data-final": true }, String(d.final))) : null);
}

function dl(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v, id]) => [h("dt", {}, k), h("dd", id ? { id } : {}, v)]));
}

export async function requestDetailView(main, { id, decisionPanel }) {
  const status = h("div", { "aria-live": "polite", id: "detail-status" });
  replace(main, h("section", { class: "card" }, h("h1", {}, "Request"), h("p", { class: "muted" }, "Loading…")));
  let r;
  try {
    r = await get(`/v1/requests/${enc(id)}`);
  } catch (err) {
    replace(main, h("section", { class: "card" }, h("h1", {}, "Request"), errorBox(err),
      h("p", {}, h("a", { href: "/requests", "data-link": true }, "All requests"))));
    return;
  }
  const t = r.timings || {};
  const a = r.autonomy;
  const messages = r.input && Array.isArray(r.input.messages) ? r.input.messages : [];
  const reload = () => requestDetailView(main, { id, decisionPanel });
  const cancel = ["queued", "running"].includes(r.status) && hasScope("requests:write")
    ? h("button", { type: "button", id: "cancel-request", onclick: async () => {
      try { await post(`/v1/requests/${enc(r.id)}/cancel`); await reload(); } catch (err) { replace(status, errorBox(err)); }
    } }, "Cancel request") : null;
  const decide = a && a.needs_decision && r.status === "awaiting_approval" && decisionPanel && hasScope("requests:write")
    ? decisionPanel(r, reload) : null;
  const trail = h("div", { id: "audit" }, h("p", { class: "muted" }, "Loading…"));

  replace(main, h("section", { class: "request-detail", "data-request-id": r.id, "data-status": r.status },
    h("p", { class: "small" }, h("a", { href: "/requests", "data-link": true }, "← All requests")),
    h("h1", {}, "Request ", h("code", {}, r.id)),
    status,
    h("div", { class: "card" },
      dl([["Status", statusBadge(r.status), "detail-status-value"], ["Tier", r.tier],
        ["Conversation", r.conversation_id ? h("code", {}, r.conversation_id) : "—"],
        r.error ? ["Error", h("span", {}, r.error.message, " ", h("code", { class: "error-code" }, r.error.code))] : null]),
      cancel),
    decide,
    h("div", { class: "card" }, h("h2", {}, "Output"),
      r.output ? [h("pre", { class: "output", id: "output-text" }, r.output.text),
        h("p", { class: "small muted" }, `finish reason: ${r.output.finish_reason || "—"}`)]
        : emptyState(a && a.no_ai ? "No AI: the model was not invoked." : "No output yet.")),
    h("div", { class: "card" }, h("h2", {}, "Input"),
      messages.length ? h("ol", { class: "messages" }, messages.map((m) => h("li", {},
        h("strong", {}, `${m.role}: `), h("span", { class: "wrap" }, typeof m.content === "string" ? m.content : JSON.stringify(m.content)))))
        : emptyState("No messages.")),
    h("div", { class: "card" }, h("h2", {}, "Timings"),
      dl([["Created", when(t.created_at)], ["Started", when(t.started_at)], ["First token", when(t.first_token_at)],
        ["Finished", when(t.finished_at)],
        ["Queued for", t.queue_ms !== undefined ? `${t.queue_ms} ms` : "—", "queue-ms"],
        ["Ran for", t.run_ms !== undefined ? `${t.run_ms} ms` : "—", "run-ms"]])),
    h("div", { class: "card" }, h("h2", {}, "Usage"),
      r.usage ? dl([["Prompt tokens", String(r.usage.prompt_tokens), "usage-prompt"],
        ["Completion tokens", String(r.usage.completion_tokens), "usage-completion"],
        ["Total", String(r.usage.total_tokens), "usage-total"]]) : emptyState("No usage recorded yet.")),
    h("div", { class: "card" }, h("h2", {}, "Autonomy"),
      a ? dl([["Level", LEVEL_NAMES[a.level] || a.level, "autonomy-level"],
        ["Set by", a.rule && a.rule.scope ? a.rule.scope : "—"],
        ["Task", a.task || "—"], ["Context", a.context || "—"], ["Presentation", a.presentation || "—"],
        ["Decision", a.decision ? `${a.decision.kind} by ${a.decision.by} · ${when(a.decision.at)}`
          : a.needs_decision ? "awaiting a decision" : "none needed", "autonomy-decision"],
        a.action ? ["Action", `${a.action.type}${a.action.endpoint_id ? ` → ${a.action.endpoint_id}` : ""}`] : null,
        a.suggestions ? ["Suggestions", h("ol", {}, a.suggestions.map((s) => h("li", {}, s)))] : null])
        : emptyState("This request predates autonomy levels.")),
    h("div", { class: "card" }, h("h2", {}, "Audit trail"), trail)));
  replace(trail, await auditTrail(r.id));
}
