// Password pages: forgot password (POST /v1/auth/password/reset-request), reset password and accept an
// invitation from the mailed links (POST /v1/auth/password/reset; the token is in the fragment), and change
// password on /account (POST /v1/auth/password/change).
import { post } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";
import { signedIn, signOut } from "./session.js";

const LINK_PAGES = ["/account/reset-password", "/account/accept-invitation"];
const POLICY = "At least 10 characters, at most 72 bytes, not your email address.";

// The one-time token leaves the address bar and the history as soon as this module loads (before the
// session restore or any other request of the page).
let linkToken = null;
if (LINK_PAGES.includes(location.pathname) && location.hash) {
  linkToken = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);
}

function takeToken() {
  const t = linkToken || new URLSearchParams(location.hash.slice(1)).get("token");
  linkToken = null;
  if (location.hash) history.replaceState(null, "", location.pathname);
  return t;
}

function form(id, title, intro, fields, submitLabel, onSubmit, after) {
  const status = h("div", { class: "status", "aria-live": "polite", id: `${id}-status` });
  const button = h("button", { type: "submit", class: "primary" }, submitLabel);
  const el = h("form", { class: "card narrow", id, novalidate: true }, title ? h("h1", {}, title) : null, intro,
    fields, button, status, after);
  el.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    replace(status);
    try {
      await onSubmit(status);
    } catch (err) {
      replace(status, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  return el;
}

const mismatch = { code: "passwords_differ", message: "the two passwords differ" };

export function forgotPasswordView(main) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  replace(main, form("forgot-form", "Forgot password",
    h("p", { class: "muted" }, "We mail a link that lets you choose a new password. It works once, for an hour."),
    [field("Email", email)], "Mail me a link", async (status) => {
      const answer = await post("/v1/auth/password/reset-request", { email: email.value.trim() });
      replace(status, h("div", { class: "success", role: "status" }, h("h2", {}, "Check your mail"), h("p", {}, answer.message)));
    }, h("p", { class: "muted" }, h("a", { href: "/signin", "data-link": true }, "Back to sign in"))));
  email.focus();
}

function setPasswordView(main, navigate, { title, intro, done }) {
  const token = takeToken();
  if (!token) {
    replace(main, h("div", { class: "card narrow" }, h("h1", {}, title),
      errorBox({ code: "missing_token", message: "this page needs the link from the mail" }),
      h("p", {}, h("a", { href: "/account/forgot-password", "data-link": true }, "Ask for a new link"))));
    return;
  }
  const password = h("input", { type: "password", name: "new_password", autocomplete: "new-password", required: true,
    minlength: "10" });
  const again = h("input", { type: "password", name: "new_password_again", autocomplete: "new-password", required: true });
  replace(main, form("set-password-form", title, h("p", { class: "muted" }, intro),
    [field("New password", password, POLICY), field("New password again", again)], "Set password", async () => {
      if (password.value !== again.value) throw mismatch;
      await post("/v1/auth/password/reset", { token, new_password: password.value });
      // every session of the account ended: this tab's too
      if (signedIn()) { try { await signOut(false); } catch { /* already ended */ } }
      navigate("/signin", { replace: true, notice: done });
    }, h("p", { class: "muted" }, "Link expired or used? ",
      h("a", { href: "/account/forgot-password", "data-link": true }, "Ask for a new one"), ".")));
  password.focus();
}

export function resetPasswordView(main, { navigate }) {
  setPasswordView(main, navigate, { title: "Choose a new password",
    intro: "Setting it signs you out everywhere: sign in again with the new password.",
    done: "Your password is changed and every session was signed out: sign in with the new one." });
}

export function acceptInvitationView(main, { navigate }) {
  setPasswordView(main, navigate, { title: "Accept the invitation",
    intro: "Choose a password for your new account; then sign in with your email address and it.",
    done: "Welcome! Your password is set: sign in." });
}

// The change-password card of /account (the account page appends it).
export function changePasswordCard() {
  const current = h("input", { type: "password", id: "current-password", autocomplete: "current-password", required: true });
  const next = h("input", { type: "password", id: "new-password", autocomplete: "new-password", required: true, minlength: "10" });
  const again = h("input", { type: "password", id: "new-password-again", autocomplete: "new-password", required: true });
  const el = form("change-password-form", null, h("h2", {}, "Change password"),
    [field("Current password", current), field("New password", next, POLICY), field("New password again", again)],
    "Change password", async (status) => {
      if (next.value !== again.value) throw mismatch;
      const answer = await post("/v1/auth/password/change", { current_password: current.value, new_password: next.value });
      current.value = ""; next.value = ""; again.value = "";
      replace(status, h("p", { class: "success", role: "status" },
        `Password changed. Other sessions signed out: ${answer.revoked_sessions}.`));
    });
  el.classList.remove("narrow");
  return el;
}
