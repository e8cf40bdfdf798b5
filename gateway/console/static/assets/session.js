// The session: the access token lives in memory only; the refresh token is the HttpOnly `lb_refresh`
// cookie (path /v1/auth), refreshed with the double-submit CSRF header (docs/auth.md, cookie mode).
// Nothing goes to web storage.

const COOKIE_MODE = { "LotaBots-Refresh-Cookie": "1" };
let token = null;
let me = null;
let timer = null;
const listeners = new Set();

export const accessToken = () => token;
export const currentUser = () => me;
export const signedIn = () => token !== null;
export const hasScope = (scope) => !!me && (me.scopes.includes(scope) || me.scopes.includes("admin"));
export const onChange = (fn) => listeners.add(fn);

function csrfCookie() {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === "lb_csrf") return decodeURIComponent(rest.join("="));
  }
  return "";
}

async function adopt(tokens) {
  token = tokens.access_token;
  clearTimeout(timer);
  // renew a minute before expiry (at least 10 s from now)
  const wait = Math.max(10, (tokens.expires_in || 900) - 60) * 1000;
  timer = setTimeout(() => { refreshSession(); }, wait);
  const res = await fetch("/v1/auth/me", { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  me = res.ok ? await res.json() : null;
  listeners.forEach((fn) => fn());
}

function forget() {
  token = null;
  me = null;
  clearTimeout(timer);
  listeners.forEach((fn) => fn());
}

async function tokenCall(path, body, extraHeaders = {}) {
  const { errorFrom } = await import("./api.js");
  const res = await fetch(path, {
    method: "POST", credentials: "same-origin", cache: "no-store",
    headers: { ...COOKIE_MODE, ...extraHeaders, ...(body ? { "Content-Type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  if (!res.ok) throw await errorFrom(res);
  return res.status === 204 ? null : res.json();
}

export async function signIn(email, password) {
  await adopt(await tokenCall("/v1/auth/login", { email, password }));
}

// Verify email; the API signs the person in (cookie mode) or answers 204 (then: sign in by hand).
export async function verifyEmail(oneTimeToken) {
  const tokens = await tokenCall("/v1/auth/verify-email", { token: oneTimeToken });
  if (tokens && tokens.access_token) {
    await adopt(tokens);
    return true;
  }
  return false;
}

// One refresh at a time across tabs (a refresh token is spent on use; a second use revokes the family).
export async function refreshSession() {
  const run = async () => {
    if (!csrfCookie()) { forget(); return false; }
    try {
      await adopt(await tokenCall("/v1/auth/refresh", null, { "X-CSRF-Token": csrfCookie() }));
      return true;
    } catch {
      forget();
      return false;
    }
  };
  return navigator.locks ? navigator.locks.request("lotabots-refresh", run) : run();
}

export async function signOut(everywhere = false) {
  const path = everywhere ? "/v1/auth/logout-all" : "/v1/auth/logout";
  const { raw } = await import("./api.js");
  try {
    // raw() refreshes once on 401, so an expired access token still ends the session (and clears the cookies)
    await raw(path, { method: "POST" });
  } finally {
    forget();
  }
}
