// Building the page from elements, never from HTML strings: every text from the API goes in as a text node (no injection).

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2).toLowerCase(), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

// An error as the API gave it: its message and its stable code.
export function errorBox(err) {
  const code = err && err.code ? err.code : "network_error";
  const message = err && err.message ? err.message : String(err);
  return h("div", { class: "error", role: "alert" },
    h("span", { class: "error-message" }, message), " ",
    h("code", { class: "error-code" }, code),
    err && err.retryAfter ? retryNote(err.retryAfter) : null);
}

// "Try again in 14 min (at 20:31)": for 429 answers (lockout, throttling) that say when.
function retryNote(seconds) {
  const at = new Date(Date.now() + seconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const wait = seconds < 90 ? `${seconds} s` : `${Math.ceil(seconds / 60)} min`;
  return h("p", { class: "retry-after", "data-retry-after": String(seconds) }, `Try again in ${wait} (at ${at}).`);
}

export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  const hintEl = hint ? h("small", { class: "hint", id: `${id}-hint` }, hint) : null;
  if (hintEl) input.setAttribute("aria-describedby", hintEl.id);
  return h("div", { class: "field" }, h("label", { for: id }, label), input, hintEl);
}

export function emptyState(text, action) {
  return h("div", { class: "empty" }, h("p", {}, text), action || null);
}

export function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}
