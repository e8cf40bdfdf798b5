// The console's entry point: a small router over the History API, the role-aware navigation, and the
// session restore (a refresh with the HttpOnly cookie) when the page loads.
import { acceptInvitationView, forgotPasswordView, resetPasswordView } from "./account.js";
import { approvalsLink, approvalsView, requestPage } from "./approvals.js";
import { accountView, signInView, signUpView, verifyView } from "./auth-views.js";
import { autonomyView } from "./autonomy.js";
import { chatView } from "./chat.js";
import { errorBox, h, replace } from "./dom.js";
import { financeView } from "./finance.js";
import { keysView } from "./keys.js";
import { requestsView } from "./requests.js";
import { currentUser, hasScope, onChange, refreshSession, signedIn } from "./session.js";
import { teamView } from "./team.js";
import { usageView } from "./usage.js";
import { webhooksView } from "./webhooks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");

// path -> [view, who may see it]
const ROUTES = {
  "/signin": [signInView, "anonymous"],
  "/signup": [signUpView, "anonymous"],
  "/account/verify-email": [verifyView, "anyone"],
  "/account/forgot-password": [forgotPasswordView, "anyone"],
  "/account/reset-password": [resetPasswordView, "anyone"],
  "/account/accept-invitation": [acceptInvitationView, "anyone"],
  "/requests": [requestsView, () => hasScope("requests:read")],
  "/requests/:id": [requestPage, () => hasScope("requests:read")],
  "/approvals": [approvalsView, () => hasScope("requests:read")],
  "/autonomy": [autonomyView, () => hasScope("requests:read")],
  "/chat": [chatView, () => hasScope("requests:read")],
  "/keys": [keysView, () => hasScope("admin")],
  "/usage": [usageView, () => hasScope("usage:read")],
  "/finance": [financeView, () => hasScope("billing:read")],
  "/webhooks": [webhooksView, () => hasScope("requests:read")],
  "/team": [teamView, () => hasScope("admin")],
  "/account": [accountView, () => true],
};

function home() {
  if (!signedIn()) return "/signin";
  if (hasScope("requests:read")) return "/chat";
  if (hasScope("admin")) return "/keys";
  if (hasScope("usage:read")) return "/usage";
  return "/account";
}

export function navigate(path, { replace: replaceEntry = false, notice } = {}) {
  if (replaceEntry) history.replaceState({ notice }, "", path);
  else history.pushState({ notice }, "", path);
  render(notice);
}

function renderNav() {
  const here = location.pathname;
  const link = (href, label) => h("a", { href, "data-link": true, "aria-current": here === href ? "page" : false }, label);
  if (!signedIn()) {
    replace(nav, link("/signin", "Sign in"), link("/signup", "Sign up"));
    return;
  }
  const me = currentUser();
  replace(nav,
    hasScope("requests:read") ? link("/chat", "Chat") : null,
    hasScope("requests:read") ? link("/requests", "Requests") : null,
    hasScope("requests:read") ? approvalsLink(link) : null,
    hasScope("requests:read") ? link("/autonomy", "Autonomy") : null,
    hasScope("admin") ? link("/keys", "API keys") : null,
    hasScope("requests:read") ? link("/webhooks", "Webhooks") : null,
    hasScope("usage:read") ? link("/usage", "Usage") : null,
    hasScope("billing:read") ? link("/finance", "Finance SQL") : null,
    hasScope("admin") ? link("/team", "Team") : null,
    link("/account", me && me.user ? me.user.email : "Account"));
}

async function render(notice) {
  let path = location.pathname;
  if (path === "/") path = home();
  const route = ROUTES[path] || (/^\/requests\/[^/]+$/.test(path) ? ROUTES["/requests/:id"] : undefined);
  renderNav();
  if (!route) {
    replace(main, h("div", { class: "card narrow" }, h("h1", {}, "Not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "Home"))));
    return;
  }
  const [view, who] = route;
  if (who === "anonymous" && signedIn()) { navigate(home(), { replace: true }); return; }
  if (typeof who === "function" && !signedIn()) {
    navigate("/signin", { replace: true, notice: "Sign in to continue." });
    return;
  }
  if (typeof who === "function" && !who()) {
    replace(main, h("div", { class: "card narrow" }, h("h1", {}, "Not available"),
      errorBox({ code: "insufficient_role", message: "your role cannot use this page" })));
    return;
  }
  if (location.pathname === "/") history.replaceState(history.state, "", path);
  renderNav();
  const state = history.state || {};
  const shown = notice || state.notice;
  try {
    await view(main, { navigate, notice: shown });
    if (shown && path !== "/signin") main.prepend(h("p", { class: "notice", role: "status" }, shown));
  } catch (err) {
    replace(main, errorBox(err));
  }
  const heading = main.querySelector("h1");
  if (heading && !main.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus();
  }
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-link]");
  if (!a || ev.ctrlKey || ev.metaKey || ev.shiftKey || a.origin !== location.origin) return;
  ev.preventDefault();
  if (a.pathname !== location.pathname) navigate(a.pathname);
});
window.addEventListener("popstate", () => render());
onChange(renderNav);

(async () => {
  // The verification page must redeem its link first; elsewhere, restore a session from the cookie.
  if (location.pathname !== "/account/verify-email" && document.cookie.includes("lb_csrf=")) {
    await refreshSession();
  }
  await render();
})();
