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
  return new ApiError(res.status, e.code || `http_${res.status}`, e.message || res.statusText || "request failed",
    e.details);
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
  if (res.status === 401 && retry && token && await refreshSession()) {
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
