// The public API, same origin. Every call carries the in-memory access token; a 401 refreshes once.
import { accessToken, refreshSession } from "./session.js";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details || {};
  }
}

export async function errorFrom(res) {
  let body = null;
  try { body = await res.json(); } catch { /* not JSON */ }
  const e = body && body.error ? body.error : {};
  const err = new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText || "request failed",
    e.details);
  // lockout and throttling: when to try again (the body's retry_after_s, else the Retry-After header)
  const header = Number.parseInt(res.headers.get("Retry-After") || "", 10);
  const seconds = Number(err.details.retry_after_s) || (Number.isFinite(header) ? header : 0);
  if (seconds > 0) err.retryAfter = seconds;
  return err;
}

// fetch with the bearer token; answers the Response (for streams) after one refresh-and-retry on 401.
export async function raw(path, options = {}, retry = true) {
  const headers = new Headers(options.headers || {});
  const token = accessToken();
  if (token) headers.set("Authorization", `Bearer ${token}`);
  if (options.body && !headers.has("Content-Type")) headers.set("Content-Type", "application/json");
  let res;
  try {
    res = await fetch(path, { ...options, headers, credentials: "same-origin", cache: "no-store" });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network_error", "the gateway could not be reached");
  }
  // only a credential problem (401 with a WWW-Authenticate challenge) is worth a refresh; a wrong current
  // password (401 invalid_credentials) must not be retried: each try counts toward the lockout
  if (res.status === 401 && res.headers.has("WWW-Authenticate") && retry && token && await refreshSession()) {
    return raw(path, options, false);
  }
  return res;
}

export async function call(method, path, body, extra = {}) {
  const res = await raw(path, { method, body: body === undefined ? undefined : JSON.stringify(body), ...extra });
  if (!res.ok) throw await errorFrom(res);
  if (res.status === 204) return null;
  return res.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);
export const del = (path) => call("DELETE", path);
