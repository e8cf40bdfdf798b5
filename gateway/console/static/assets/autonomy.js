// Autonomy settings (docs/autonomy.md): the tenant default and maximum (admin), one's own default, the rules
// per user, task, context and (task, context) — list, create, delete — and the resolver ("what level would
// apply to task X in context Y, and why": GET /v1/autonomy/resolve).
import { call, del, get, post } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { LEVEL_NAMES } from "./requests.js";
import { currentUser, hasScope } from "./session.js";

const LEVELS = ["no_ai", "assisted", "collaborator", "expert", "agent"];
const enc = encodeURIComponent;
const SCOPE_WORDS = {
  "user:task+context": "your own rule for this task in this context",
  "tenant:task+context": "the tenant's rule for this task in this context",
  "user:task": "your own rule for this task",
  "tenant:task": "the tenant's rule for this task",
  "user:context": "your own rule for this context",
  "tenant:context": "the tenant's rule for this context",
  "user:default": "your own default",
  tenant_default: "the tenant default",
  platform_default: "the platform default (no rule matched and the tenant set no default)",
};

const levelSelect = (id, selected, extra = {}) => h("select", { id, ...extra },
  LEVELS.map((l) => h("option", { value: l, selected: l === selected }, LEVEL_NAMES[l])));

function explain(res) {
  const rule = res.rule || {};
  const parts = [h("p", {}, "Level ", h("strong", { id: "resolved-level", "data-level": res.level },
    LEVEL_NAMES[res.level] || res.level), " — set by ", h("span", { id: "resolved-scope", "data-scope": rule.scope || "" },
    SCOPE_WORDS[rule.scope] || rule.scope || "—"), rule.id ? [" (", h("code", {}, rule.id), ")"] : null, ".")];
  if (rule.capped_by) {
    parts.push(h("p", { id: "resolved-capped" }, `The rule asked for ${LEVEL_NAMES[rule.level] || rule.level}; `
      + `the tenant maximum (${LEVEL_NAMES[rule.capped_by.level] || rule.capped_by.level}) caps it.`));
  }
  parts.push(h("p", { class: "small muted" }, "Precedence, most specific first: your (task, context) rule, the tenant's; "
    + "your task rule, the tenant's; your context rule, the tenant's; your default; the tenant default; the platform "
    + "default (Agent). Everything is capped at the tenant maximum. A request may still ask for a lower level."));
  return parts;
}

export async function autonomyView(main) {
  const admin = hasScope("admin");
  const canWrite = hasScope("requests:write");
  const me = currentUser();
  const myId = me && me.user ? me.user.id : me ? me.key_id || me.subject : null;
  const status = h("div", { "aria-live": "polite", id: "autonomy-status" });
  const tenantBox = h("div", { id: "tenant-levels" }, h("p", { class: "muted" }, "Loading…"));
  const rulesBox = h("div", { id: "rule-list" }, h("p", { class: "muted" }, "Loading…"));
  let users = [];  // admin: the tenant's users, to name rule owners

  const guard = (fn) => async (ev) => {
    if (ev) ev.preventDefault();
    replace(status);
    try { await fn(); await load(); } catch (err) { replace(status, errorBox(err)); }
  };
  const userName = (id) => {
    if (!id) return "tenant-wide";
    if (id === myId) return "you";
    const u = users.find((x) => x.id === id);
    return u ? u.email : id;
  };

  // ---- rule form
  const owner = h("select", { id: "rule-owner" },
    admin ? h("option", { value: "" }, "Tenant-wide (everyone)") : null,
    canWrite ? h("option", { value: "me" }, "Only me") : null);
  const task = h("input", { type: "text", id: "rule-task", maxlength: "100", autocomplete: "off" });
  const context = h("input", { type: "text", id: "rule-context", maxlength: "100", autocomplete: "off" });
  const level = levelSelect("rule-level", "collaborator");
  const ruleForm = h("form", { class: "card", id: "rule-form" }, h("h2", {}, "Add or replace a rule"),
    h("p", { class: "small muted" }, "Give a task, a context, or both. For a user with neither, the rule is that user's default. "
      + "A rule with the same owner, task and context replaces the old one."),
    h("div", { class: "inline-form" }, field("Whose rule", owner), field("Task", task), field("Context", context),
      field("Level", level), h("button", { type: "submit", class: "primary", id: "add-rule" }, "Save rule")));
  ruleForm.addEventListener("submit", guard(async () => {
    const body = { level: level.value };
    if (task.value.trim()) body.task = task.value.trim();
    if (context.value.trim()) body.context = context.value.trim();
    const who = owner.value;
    if (!body.task && !body.context && who) {
      await call("PUT", who === "me" ? "/v1/autonomy/users/me" : `/v1/autonomy/users/${enc(who)}`, { level: body.level });
    } else {
      await post(who === "" ? "/v1/autonomy/rules" : who === "me" ? "/v1/autonomy/users/me/rules"
        : `/v1/autonomy/users/${enc(who)}/rules`, body);
    }
    task.value = "";
    context.value = "";
  }));

  // ---- resolver
  const rTask = h("input", { type: "text", id: "resolve-task", maxlength: "100", autocomplete: "off" });
  const rContext = h("input", { type: "text", id: "resolve-context", maxlength: "100", autocomplete: "off" });
  const answer = h("div", { id: "resolve-answer", "aria-live": "polite" });
  const resolver = h("form", { class: "card", id: "resolver" }, h("h2", {}, "Which level would apply?"),
    h("p", { class: "small muted" }, "As a request you submit now would resolve it (leave a field empty for none)."),
    h("div", { class: "inline-form" }, field("Task", rTask), field("Context", rContext),
      h("button", { type: "submit", id: "resolve" }, "Resolve")), answer);
  resolver.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = new URLSearchParams();
    if (rTask.value.trim()) q.set("task", rTask.value.trim());
    if (rContext.value.trim()) q.set("context", rContext.value.trim());
    try {
      replace(answer, explain(await get(`/v1/autonomy/resolve?${q}`)));
    } catch (err) {
      replace(answer, errorBox(err));
    }
  });

  async function load() {
    let policy;
    try {
      policy = await get("/v1/autonomy/policy");
      if (admin && !users.length) users = (await get("/v1/users")).data;
    } catch (err) {
      replace(rulesBox, errorBox(err));
      replace(tenantBox);
      return;
    }
    if (admin && owner.options.length <= 2) {
      for (const u of users.filter((x) => x.active && x.id !== myId)) owner.append(h("option", { value: u.id }, `User ${u.email}`));
    }
    const t = policy.tenant;
    if (admin) {
      const def = levelSelect("tenant-default", t.default_level || "agent");
      const max = levelSelect("tenant-max", t.max_level || "agent");
      const f = h("form", { class: "inline-form", id: "tenant-form" }, field("Tenant default", def), field("Tenant maximum", max),
        h("button", { type: "submit", class: "primary", id: "save-tenant" }, "Save"));
      f.addEventListener("submit", guard(() => call("PUT", "/v1/autonomy/tenant",
        { default_level: def.value, max_level: max.value })));
      replace(tenantBox, f, h("p", { class: "small muted" }, t.configured
        ? `Last changed ${when(t.updated_at)} by ${t.updated_by}.` : "Not set: requests run at the platform default (Agent), no maximum."));
    } else {
      replace(tenantBox, h("dl", { class: "facts" },
        h("dt", {}, "Tenant default"), h("dd", { id: "tenant-default-value" }, t.default_level ? LEVEL_NAMES[t.default_level] : "not set (Agent)"),
        h("dt", {}, "Tenant maximum"), h("dd", {}, t.max_level ? LEVEL_NAMES[t.max_level] : "not set (Agent)")),
      h("p", { class: "small muted" }, "Only a tenant admin changes these."));
    }
    const rules = policy.rules;
    if (!rules.length) {
      replace(rulesBox, emptyState("No rules yet: every request gets the tenant default."));
      return;
    }
    const mayDelete = (r) => admin || (r.owner === "user" && r.user_id === myId && canWrite);
    replace(rulesBox, h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "sr-only" }, "Autonomy rules"),
      h("thead", {}, h("tr", {}, ["Whose", "Kind", "Task", "Context", "Level", "Changed", "Actions"].map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rules.map((r) => h("tr", { "data-rule-id": r.id, "data-scope": r.scope },
        h("td", {}, userName(r.user_id)), h("td", {}, r.kind.replace("_", " + ")),
        h("td", {}, r.task || "—"), h("td", {}, r.context || "—"),
        h("td", {}, LEVEL_NAMES[r.level] || r.level), h("td", {}, when(r.updated_at)),
        h("td", {}, mayDelete(r) ? deleteButton(r) : "—")))))));
  }

  function deleteButton(r) {
    const b = h("button", { type: "button", class: "danger", "data-delete-rule": r.id }, "Delete");
    b.addEventListener("click", () => {
      if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = "Confirm delete"; return; }
      const path = r.kind === "default" ? (r.user_id === myId ? "/v1/autonomy/users/me" : `/v1/autonomy/users/${enc(r.user_id)}`)
        : `/v1/autonomy/rules/${enc(r.id)}`;
      guard(() => del(path))();
    });
    return b;
  }

  replace(main, h("section", { class: "autonomy" },
    h("h1", {}, "Autonomy"),
    status,
    h("div", { class: "card" }, h("h2", {}, "Tenant default and maximum"), tenantBox),
    h("h2", {}, "Rules"), rulesBox,
    canWrite || admin ? ruleForm : null,
    resolver));
  await load();
}
