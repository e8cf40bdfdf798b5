// Team (admin): the tenant's users and their roles, pending invitations, invite by email, change a role,
// disable a user or revoke an invitation (both DELETE /v1/users/{id}: the account stops working, sessions end).
import { call, del, get, post } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { currentUser } from "./session.js";

const ROLES = ["member", "finance", "admin", "owner"];

export async function teamView(main) {
  const me = currentUser();
  const myId = me && me.user ? me.user.id : null;
  const owner = me && me.user && me.user.role === "owner";
  const status = h("div", { "aria-live": "polite", id: "team-status" });
  const invites = h("div", { id: "invite-list" });
  const users = h("div", { id: "user-list" });

  const email = h("input", { type: "email", id: "invite-email", required: true, autocomplete: "off" });
  const role = h("select", { id: "invite-role" },
    ROLES.filter((r) => owner || r !== "owner").map((r) => h("option", { value: r }, r)));
  const button = h("button", { type: "submit", class: "primary", id: "invite" }, "Send invitation");
  const formStatus = h("div", { "aria-live": "polite" });
  const form = h("form", { class: "card", id: "invite-form" }, h("h2", {}, "Invite someone"),
    h("div", { class: "controls" }, field("Email", email), field("Role", role)), button, formStatus);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(formStatus);
    button.disabled = true;
    try {
      const user = await post("/v1/users", { email: email.value.trim(), role: role.value });
      email.value = "";
      replace(formStatus, h("p", { class: "success", role: "status" },
        `Invitation mailed to ${user.email} (${user.role}). The link lets them set a password.`));
      await load();
    } catch (err) {
      replace(formStatus, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });

  const act = (fn) => async () => {
    replace(status);
    try { await fn(); await load(); } catch (err) { replace(status, errorBox(err)); }
  };

  function disable(u, label, confirmLabel) {
    const b = h("button", { type: "button", class: "danger", "data-disable": u.id }, label);
    b.addEventListener("click", () => {
      if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = confirmLabel; return; }
      act(() => del(`/v1/users/${encodeURIComponent(u.id)}`))();
    });
    return b;
  }

  // admin-forced reset: the password stops working at once, sessions end, a reset link is mailed
  function forceReset(u) {
    if (!u.password_set) return null;
    const b = h("button", { type: "button", "data-force-reset": u.id }, "Force password reset");
    b.addEventListener("click", () => {
      if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = "Confirm reset"; return; }
      act(() => post(`/v1/users/${encodeURIComponent(u.id)}/password-reset`, {}))();
    });
    return b;
  }

  function roleControl(u) {
    if (u.id === myId || !u.active || (u.role === "owner" && !owner)) return u.role;
    const select = h("select", { "aria-label": `Role of ${u.email}`, "data-role-of": u.id },
      ROLES.filter((r) => owner || r !== "owner").map((r) => h("option", { value: r, selected: r === u.role }, r)));
    const save = h("button", { type: "button", "data-save-role": u.id, onclick: act(async () => {
      await call("PATCH", `/v1/users/${encodeURIComponent(u.id)}`, { role: select.value });
    }) }, "Save role");
    return h("div", { class: "row" }, select, save);
  }

  async function load() {
    let all;
    try {
      all = (await get("/v1/users")).data;
    } catch (err) {
      replace(users, errorBox(err));
      replace(invites);
      return;
    }
    // an invitation: no password yet and the address never verified (a forced reset keeps the verified address)
    const invited = (u) => u.active && !u.password_set && !u.email_verified;
    const pending = all.filter(invited);
    const members = all.filter((u) => !invited(u));
    if (!pending.length) {
      replace(invites, emptyState("No pending invitations."));
    } else {
      replace(invites, h("div", { class: "table-wrap" }, h("table", {},
        h("caption", { class: "sr-only" }, "Pending invitations"),
        h("thead", {}, h("tr", {}, ["Email", "Role", "Invited", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, pending.map((u) => h("tr", { "data-user-id": u.id },
          h("td", {}, u.email), h("td", {}, u.role), h("td", {}, when(u.created_at)),
          h("td", {}, u.role === "owner" && !owner ? "—" : disable(u, "Revoke invitation", "Confirm revoke"))))))));
    }
    if (!members.length) {
      replace(users, emptyState("No users yet."));
      return;
    }
    replace(users, h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "sr-only" }, "Users"),
      h("thead", {}, h("tr", {}, ["Email", "Role", "State", "Since", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, members.map((u) => h("tr", { "data-user-id": u.id, "data-active": String(u.active) },
        h("td", {}, u.email, u.id === myId ? h("span", { class: "muted" }, " (you)") : null),
        h("td", {}, roleControl(u)),
        h("td", { class: "user-state" }, !u.active ? "disabled" : !u.password_set ? "password reset pending"
          : u.email_verified ? "active" : "active, email not verified"),
        h("td", {}, when(u.created_at)),
        h("td", {}, u.active && u.id !== myId && (u.role !== "owner" || owner)
          ? h("div", { class: "actions" }, forceReset(u), disable(u, "Disable", "Confirm disable")) : "—")))))));
  }

  replace(main, h("section", { class: "team" }, h("h1", {}, "Team"), status, form,
    h("h2", {}, "Invitations"), invites, h("h2", {}, "Users"), users));
  await load();
}
