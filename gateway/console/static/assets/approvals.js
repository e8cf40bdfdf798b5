// The approvals inbox: every request awaiting a human decision (Collaborator, Expert), with approve,
// edit-then-approve and reject (POST /v1/requests/{id}/approve|edit|reject); after a decision the audit
// trail is shown at once. The navigation badge counts what awaits (refreshed after decisions and every 15 s).
import { get, post } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { LEVEL_NAMES, auditTrail, requestDetailView } from "./requests.js";
import { hasScope, signedIn } from "./session.js";

const enc = encodeURIComponent;
const BADGE_LIMIT = 100;
const REFRESH_MS = 15000;
let count = null;  // null: unknown yet
let more = false;
let timer = null;

function drawBadge() {
  const el = document.getElementById("approvals-count");
  if (!el) return;
  if (!count) {
    el.hidden = true;
    el.textContent = "";
    el.dataset.count = "0";
    return;
  }
  el.hidden = false;
  el.replaceChildren(more ? `${count}+` : String(count), h("span", { class: "sr-only" }, " awaiting"));
  el.dataset.count = String(count);
}

// One cheap page of awaiting requests (the newest 100); "100+" when there are more.
export async function refreshApprovalsCount() {
  if (!signedIn() || !hasScope("requests:read")) { count = null; drawBadge(); return; }
  try {
    const page = await get(`/v1/requests?status=awaiting_approval&limit=${BADGE_LIMIT}`);
    count = page.data.filter((r) => !r.autonomy || r.autonomy.needs_decision).length;
    more = !!page.next_cursor;
  } catch {
    return;  // the badge keeps its last figure; the inbox itself shows errors
  }
  drawBadge();
}

// The navigation link with its badge; starts the periodic refresh the first time it is drawn.
export function approvalsLink(link) {
  const a = link("/approvals", "Approvals");
  a.append(" ", h("span", { class: "count-badge", id: "approvals-count", hidden: true }));
  drawBadge();
  if (!timer) {
    timer = setInterval(() => { if (signedIn() && !document.hidden) refreshApprovalsCount(); }, REFRESH_MS);
    refreshApprovalsCount();
  }
  return a;
}

const lastUser = (r) => {
  const msgs = r.input && Array.isArray(r.input.messages) ? r.input.messages : [];
  const users = msgs.filter((m) => m.role === "user");
  const m = users.length ? users[users.length - 1] : null;
  return m && typeof m.content === "string" ? m.content : "";
};

// The decision controls for one awaiting request; `done(resource)` runs after a decision was recorded.
export function decisionPanel(r, done) {
  const draft = r.output ? r.output.text : "";
  const text = h("textarea", { rows: "5", "data-edit-text": r.id, id: `edit-${r.id}` });
  text.value = draft;
  const comment = h("input", { type: "text", "data-comment": r.id, id: `comment-${r.id}`, maxlength: "2000" });
  const status = h("div", { "aria-live": "polite", class: "decision-status" });
  const buttons = [];
  const decide = (kind) => async () => {
    replace(status);
    buttons.forEach((b) => { b.disabled = true; });
    const body = {};
    if (comment.value.trim()) body.comment = comment.value.trim();
    if (kind === "edit") body.text = text.value;
    try {
      const decided = await post(`/v1/requests/${enc(r.id)}/${kind}`, body);
      await refreshApprovalsCount();
      await done(decided, kind);
    } catch (err) {
      replace(status, errorBox(err));
      buttons.forEach((b) => { b.disabled = false; });
    }
  };
  const approve = h("button", { type: "button", class: "primary", "data-approve": r.id, onclick: decide("approve") },
    "Approve as is");
  const edit = h("button", { type: "button", "data-edit": r.id, disabled: true, onclick: decide("edit") },
    "Approve edited text");
  const reject = h("button", { type: "button", class: "danger", "data-reject": r.id, onclick: decide("reject") },
    "Reject");
  buttons.push(approve, edit, reject);
  text.addEventListener("input", () => { edit.disabled = !text.value.trim() || text.value === draft; });
  return h("div", { class: "card decision", "data-decision-for": r.id },
    h("h2", {}, "Decision"),
    field(r.autonomy && r.autonomy.level === "expert" ? "Advice (edit it to record your own decision)"
      : "Draft (edit it before approving)", text),
    field("Comment (optional, kept in the audit trail)", comment),
    h("div", { class: "actions" }, approve, edit, reject),
    status);
}

export async function approvalsView(main) {
  const list = h("div", { id: "approval-list", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading…"));
  const moreBox = h("div", { id: "approvals-more" });
  const decided = h("div", { id: "decided" });
  let rows = [];

  async function load(cursor) {
    const q = new URLSearchParams({ status: "awaiting_approval", limit: "20" });
    if (cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await get(`/v1/requests?${q}`);
    } catch (err) {
      replace(list, errorBox(err));
      return;
    }
    const fresh = page.data.filter((r) => !r.autonomy || r.autonomy.needs_decision);
    rows = cursor ? rows.concat(fresh) : fresh;
    draw();
    replace(moreBox, page.next_cursor ? h("button", { type: "button", id: "approvals-load-more", onclick: (ev) => {
      ev.target.disabled = true;
      load(page.next_cursor);
    } }, "Load more") : null);
  }

  function draw() {
    if (!rows.length) {
      replace(list, emptyState("Nothing awaits a decision. Requests at the Collaborator and Expert levels show up here."));
      return;
    }
    replace(list, h("ul", { class: "approvals" }, rows.map((r) => h("li", { class: "card", "data-request-id": r.id },
      h("h2", {}, h("a", { href: `/requests/${enc(r.id)}`, "data-link": true }, h("code", {}, r.id))),
      h("p", { class: "small muted" },
        `${LEVEL_NAMES[r.autonomy ? r.autonomy.level : ""] || "?"} · ${when(r.created_at)}`,
        r.autonomy && r.autonomy.task ? ` · task ${r.autonomy.task}` : "",
        r.autonomy && r.autonomy.context ? ` · context ${r.autonomy.context}` : "",
        r.autonomy && r.autonomy.action ? ` · action ${r.autonomy.action.type} waits for the decision` : ""),
      h("p", {}, h("strong", {}, "Prompt: "), h("span", { class: "wrap" }, lastUser(r) || "—")),
      decisionPanel(r, async (resource, kind) => {
        rows = rows.filter((x) => x.id !== r.id);
        draw();
        await showDecided(resource, kind);
      })))));
  }

  async function showDecided(resource, kind) {
    const label = { approve: "Approved", edit: "Edited and approved", reject: "Rejected" }[kind];
    replace(decided, h("div", { class: "card", id: "last-decision", "data-request-id": resource.id, role: "status" },
      h("h2", {}, `${label}: `, h("a", { href: `/requests/${enc(resource.id)}`, "data-link": true }, h("code", {}, resource.id))),
      h("p", {}, "Status now ", h("strong", { id: "decided-status" }, resource.status), "."),
      h("h3", {}, "Audit trail"), h("p", { class: "muted" }, "Loading…")));
    const trail = await auditTrail(resource.id);
    decided.firstChild.lastChild.replaceWith(trail);
  }

  replace(main, h("section", { class: "approvals-page" },
    h("h1", {}, "Approvals"),
    h("p", { class: "muted" }, "Requests at the Collaborator and Expert levels wait here for a person: approve the draft, edit it and approve your text, or reject it."),
    decided, list, moreBox));
  await load();
  refreshApprovalsCount();
}

// `/requests/<id>`: the request's detail, with the decision controls while it awaits one.
export function requestPage(main, ctx) {
  const id = decodeURIComponent(location.pathname.slice("/requests/".length));
  return requestDetailView(main, { ...ctx, id, decisionPanel });
}
