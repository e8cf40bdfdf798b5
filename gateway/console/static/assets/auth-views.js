// Sign up, verify email, sign in, account (sign out here / everywhere).
import { post } from "./api.js";
import { errorBox, field, h, replace } from "./dom.js";
import { changePasswordCard } from "./account.js";
import { currentUser, signIn, signOut, verifyEmail } from "./session.js";

function form(title, fields, submitLabel, onSubmit, after) {
  const status = h("div", { class: "status", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, submitLabel);
  const el = h("form", { class: "card narrow", novalidate: true }, h("h1", {}, title), fields, button, status, after);
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

export function signInView(main, { navigate, notice }) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  replace(main,
    notice ? h("p", { class: "notice", role: "status" }, notice) : null,
    form("Sign in", [field("Email", email), field("Password", password)], "Sign in", async () => {
      await signIn(email.value, password.value);
      navigate("/", { replace: true });
    }, h("p", { class: "muted" }, "No account yet? ", h("a", { href: "/signup", "data-link": true }, "Sign up"),
      " · ", h("a", { href: "/account/forgot-password", "data-link": true }, "Forgot password?"))));
  email.focus();
}

export function signUpView(main) {
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const password = h("input", { type: "password", name: "password", autocomplete: "new-password", required: true,
    minlength: "10" });
  const tenant = h("input", { type: "text", name: "tenant_name", autocomplete: "organization" });
  replace(main, form("Create an account", [
    field("Email", email),
    field("Password", password, "At least 10 characters, at most 72 bytes, not your email address."),
    field("Organisation (optional)", tenant),
  ], "Sign up", async (status) => {
    const body = { email: email.value, password: password.value };
    if (tenant.value.trim()) body.tenant_name = tenant.value.trim();
    const answer = await post("/v1/auth/register", body);
    replace(status, h("div", { class: "success", role: "status" },
      h("h2", {}, "Check your mail"),
      h("p", {}, answer.message),
      h("p", {}, "Follow the link in the mail to verify the address; it signs you in.")));
  }, h("p", { class: "muted" }, "Have an account? ", h("a", { href: "/signin", "data-link": true }, "Sign in"))));
  email.focus();
}

export async function verifyView(main, { navigate }) {
  // The one-time token is in the fragment (never sent to a server by the browser); drop it from the URL
  // and the history at once.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);
  const box = h("div", { class: "card narrow", "aria-live": "polite" }, h("h1", {}, "Verify email"));
  replace(main, box);
  if (!token) {
    box.append(errorBox({ code: "missing_token", message: "this page needs the link from the verification mail" }));
    return;
  }
  box.append(h("p", { class: "muted" }, "Verifying…"));
  try {
    const signed = await verifyEmail(token);
    if (signed) {
      navigate("/", { replace: true, notice: "Your email address is verified. Welcome!" });
    } else {
      navigate("/signin", { replace: true, notice: "Your email address is verified: sign in." });
    }
  } catch (err) {
    replace(box, h("h1", {}, "Verify email"), errorBox(err),
      h("p", {}, h("a", { href: "/signin", "data-link": true }, "Sign in")));
  }
}

export function accountView(main, { navigate }) {
  const me = currentUser();
  const user = me.user || {};
  const status = h("div", { "aria-live": "polite" });
  const out = (everywhere) => async () => {
    try {
      await signOut(everywhere);
      navigate("/signin", { replace: true, notice: everywhere ? "Signed out everywhere." : "Signed out." });
    } catch (err) {
      replace(status, errorBox(err));
    }
  };
  replace(main, h("section", { class: "card narrow" },
    h("h1", {}, "Account"),
    h("dl", { class: "facts" },
      h("dt", {}, "Email"), h("dd", { id: "account-email" }, user.email || "—"),
      h("dt", {}, "Role"), h("dd", { id: "account-role" }, user.role || me.kind),
      h("dt", {}, "Tenant"), h("dd", {}, h("code", {}, me.tenant_id)),
      h("dt", {}, "Tier"), h("dd", {}, me.tier),
      h("dt", {}, "Scopes"), h("dd", {}, me.scopes.join(" "))),
    h("div", { class: "row" },
      h("button", { type: "button", id: "signout", onclick: out(false) }, "Sign out"),
      h("button", { type: "button", id: "signout-all", class: "danger", onclick: out(true) }, "Sign out everywhere")),
    status),
  me.user ? h("div", { class: "narrow" }, changePasswordCard()) : null);
}
