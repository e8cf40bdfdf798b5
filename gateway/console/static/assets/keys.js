// API keys: create (the full key is shown once, with a copy button), list with last use, revoke.
import { del, get, post } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { hasScope } from "./session.js";

const SCOPES = ["requests:write", "requests:read", "usage:read", "billing:read", "admin"];
const DEFAULT = new Set(["requests:write", "requests:read", "usage:read"]);

export async function keysView(main) {
  const list = h("div", { id: "key-list", "aria-live": "polite" });
  const created = h("div", { id: "key-created", "aria-live": "polite" });
  const status = h("div", { "aria-live": "polite" });
  const name = h("input", { id: "key-name", type: "text", maxlength: "200", autocomplete: "off" });
  const boxes = SCOPES.filter(hasScope).map((scope) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "scope", value: scope, checked: DEFAULT.has(scope) }), " ", scope));
  const button = h("button", { type: "submit", id: "create-key", class: "primary" }, "Create key");
  const createForm = h("form", { class: "card", id: "key-form" },
    h("h2", {}, "New key"),
    field("Name", name),
    h("fieldset", {}, h("legend", {}, "Scopes"), boxes),
    button, status);
  createForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    replace(status);
    const scopes = boxes.map((b) => b.querySelector("input")).filter((i) => i.checked).map((i) => i.value);
    button.disabled = true;
    try {
      const key = await post("/v1/api-keys", { name: name.value, scopes });
      name.value = "";
      showOnce(key);
      await load();
    } catch (err) {
      replace(status, errorBox(err));
    } finally {
      button.disabled = false;
    }
  });

  function showOnce(key) {
    const value = h("input", { id: "new-key", type: "text", readonly: true, value: key.key, class: "mono",
      "aria-label": "The new API key" });
    const copied = h("span", { class: "muted", "aria-live": "polite" });
    const copy = h("button", { type: "button", id: "copy-key", onclick: async () => {
      try {
        await navigator.clipboard.writeText(key.key);
        copied.textContent = "Copied.";
      } catch {
        value.select();
        copied.textContent = "Select and copy it (Ctrl+C): the clipboard is not available here.";
      }
    } }, "Copy");
    replace(created, h("div", { class: "card success", role: "status" },
      h("h2", {}, `Key “${key.name || key.prefix}” created`),
      h("p", {}, "Copy it now: it is shown only once."),
      h("div", { class: "row" }, value, copy), copied,
      h("button", { type: "button", class: "link", onclick: () => replace(created) }, "Done, hide it")));
    value.focus();
    value.select();
  }

  async function load() {
    let keys;
    try {
      keys = (await get("/v1/api-keys")).data;
    } catch (err) {
      replace(list, errorBox(err));
      return;
    }
    if (!keys.length) {
      replace(list, emptyState("No API keys yet. Create one above to call the API from your code."));
      return;
    }
    replace(list, h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "sr-only" }, "API keys"),
      h("thead", {}, h("tr", {}, ["Name", "Key", "Scopes", "Created", "Last used", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, keys.map((k) => {
        const revoke = h("button", { type: "button", class: "danger", "data-revoke": k.id }, "Revoke");
        revoke.addEventListener("click", async () => {
          if (revoke.dataset.confirm !== "1") {  // two steps: no accidental revocation
            revoke.dataset.confirm = "1";
            revoke.textContent = "Confirm revoke";
            return;
          }
          try {
            await del(`/v1/api-keys/${encodeURIComponent(k.id)}`);
            await load();
          } catch (err) {
            replace(status, errorBox(err));
          }
        });
        return h("tr", { "data-key-id": k.id },
          h("td", {}, k.name || "—"), h("td", {}, h("code", {}, `${k.prefix}…`)), h("td", {}, k.scopes.join(" ")),
          h("td", {}, when(k.created_at)), h("td", { class: "last-used" }, when(k.last_used_at)), h("td", {}, revoke));
      })))));
  }

  replace(main, h("section", { class: "keys" }, h("h1", {}, "API keys"), created, createForm,
    h("h2", {}, "Your keys"), list));
  await load();
}
