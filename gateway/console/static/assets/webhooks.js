// Webhooks: endpoints (create — the signing secret is shown once —, rotate the secret, enable/disable, delete),
// the delivery log with status and attempts, a delivery's attempt log, replay. Scopes as the API has them:
// changing endpoints needs admin, reading needs requests:read, replaying needs requests:write.
import { call, del, get, post } from "./api.js";
import { emptyState, errorBox, field, h, replace, when } from "./dom.js";
import { hasScope } from "./session.js";

const EVENTS = ["started", "succeeded", "failed", "canceled", "awaiting_approval", "completed"];
const STATUSES = ["", "pending", "retrying", "succeeded", "failed"];

function secretOnce(host, title, secret) {
  const value = h("input", { id: "new-secret", type: "text", readonly: true, value: secret, class: "mono",
    "aria-label": "The signing secret" });
  const copied = h("span", { class: "muted", "aria-live": "polite" });
  const copy = h("button", { type: "button", id: "copy-secret", onclick: async () => {
    try {
      await navigator.clipboard.writeText(secret);
      copied.textContent = "Copied.";
    } catch {
      value.select();
      copied.textContent = "Select and copy it (Ctrl+C): the clipboard is not available here.";
    }
  } }, "Copy");
  replace(host, h("div", { class: "card success", role: "status" }, h("h2", {}, title),
    h("p", {}, "Copy the signing secret now: it is shown only once. Verify deliveries with it (docs/webhooks.md)."),
    h("div", { class: "row" }, value, copy), copied,
    h("button", { type: "button", class: "link", onclick: () => replace(host) }, "Done, hide it")));
  value.focus();
  value.select();
}

// a button that acts on the second click only (no accidental deletion)
function twoStep(label, confirmLabel, attrs, action) {
  const b = h("button", { type: "button", class: "danger", ...attrs }, label);
  b.addEventListener("click", async () => {
    if (b.dataset.confirm !== "1") { b.dataset.confirm = "1"; b.textContent = confirmLabel; return; }
    await action();
  });
  return b;
}

export async function webhooksView(main) {
  const admin = hasScope("admin");
  const writer = hasScope("requests:write");
  const created = h("div", { id: "secret-shown", "aria-live": "polite" });
  const status = h("div", { "aria-live": "polite", id: "webhook-status" });
  const endpoints = h("div", { id: "endpoint-list" });
  const deliveries = h("div", { id: "delivery-list" });
  const detail = h("div", { id: "delivery-detail", "aria-live": "polite" });
  const filterStatus = h("select", { id: "delivery-status" },
    STATUSES.map((s) => h("option", { value: s }, s || "any status")));
  const filterEndpoint = h("select", { id: "delivery-endpoint" }, h("option", { value: "" }, "every endpoint"));
  let known = [];

  function createForm() {
    const url = h("input", { type: "url", id: "endpoint-url", required: true,
      autocomplete: "off" });
    const description = h("input", { type: "text", id: "endpoint-description", maxlength: "200", autocomplete: "off" });
    const boxes = EVENTS.map((e) => h("label", { class: "check" },
      h("input", { type: "checkbox", name: "event", value: e }), " ", e));
    const all = h("input", { type: "checkbox", id: "endpoint-all" });
    const button = h("button", { type: "submit", class: "primary", id: "create-endpoint" }, "Create endpoint");
    const formStatus = h("div", { "aria-live": "polite" });
    const form = h("form", { class: "card", id: "endpoint-form" }, h("h2", {}, "New endpoint"),
      field("URL", url, "A public http(s) address; private and loopback addresses are refused."),
      field("Description (optional)", description),
      h("fieldset", {}, h("legend", {}, "Events (none ticked: every event)"), boxes),
      h("label", { class: "check" }, all, " Every request of the tenant (otherwise only requests that name this endpoint)"),
      h("div", {}, button), formStatus);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      replace(formStatus);
      button.disabled = true;
      try {
        const body = { url: url.value.trim(), event_types: boxes.map((b) => b.querySelector("input"))
          .filter((i) => i.checked).map((i) => i.value), all_requests: all.checked };
        if (description.value.trim()) body.description = description.value.trim();
        const ep = await post("/v1/webhooks/endpoints", body);
        form.reset();
        secretOnce(created, `Endpoint ${ep.url} created`, ep.secret);
        await loadEndpoints();
      } catch (err) {
        replace(formStatus, errorBox(err));
      } finally {
        button.disabled = false;
      }
    });
    return form;
  }

  const act = (fn) => async () => {
    replace(status);
    try { await fn(); } catch (err) { replace(status, errorBox(err)); }
  };

  async function loadEndpoints() {
    try {
      known = (await get("/v1/webhooks/endpoints")).data;
    } catch (err) {
      replace(endpoints, errorBox(err));
      return;
    }
    const chosen = filterEndpoint.value;
    replace(filterEndpoint, h("option", { value: "" }, "every endpoint"),
      known.map((e) => h("option", { value: e.id, selected: e.id === chosen }, e.description || e.url)));
    if (!known.length) {
      replace(endpoints, emptyState(admin ? "No webhook endpoints yet. Create one above to be told when requests finish."
        : "No webhook endpoints yet. An admin can add one."));
      return;
    }
    replace(endpoints, h("div", { class: "table-wrap" }, h("table", {},
      h("caption", { class: "sr-only" }, "Webhook endpoints"),
      h("thead", {}, h("tr", {}, ["URL", "Events", "State", "Secrets", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, known.map((e) => h("tr", { "data-endpoint-id": e.id },
        h("td", {}, h("span", { class: "mono wrap" }, e.url), e.description ? h("div", { class: "muted small" }, e.description) : null,
          h("div", { class: "muted small" }, h("code", {}, e.id))),
        h("td", {}, e.event_types.length ? e.event_types.join(" ") : "every event", e.all_requests ? h("div", { class: "muted small" }, "all requests") : null),
        h("td", { class: "endpoint-state" }, e.enabled ? "enabled" : "disabled",
          e.disabled_reason ? h("div", { class: "muted small" }, e.disabled_reason) : null,
          e.failing_since ? h("div", { class: "muted small" }, `failing since ${when(e.failing_since)}`) : null),
        h("td", {}, `${e.secrets.length} live`, e.secrets.filter((s) => s.expires_at).map((s) =>
          h("div", { class: "muted small" }, `one expires ${when(s.expires_at)}`))),
        h("td", { class: "actions" },
          h("button", { type: "button", onclick: act(async () => { filterEndpoint.value = e.id; await loadDeliveries(); }) }, "Deliveries"),
          admin ? h("button", { type: "button", "data-toggle": e.id, onclick: act(async () => {
            await call("PATCH", `/v1/webhooks/endpoints/${encodeURIComponent(e.id)}`, { enabled: !e.enabled });
            await loadEndpoints();
          }) }, e.enabled ? "Disable" : "Enable") : null,
          admin ? h("button", { type: "button", "data-rotate": e.id, onclick: act(async () => {
            const r = await post(`/v1/webhooks/endpoints/${encodeURIComponent(e.id)}/rotate-secret`, {});
            secretOnce(created, "New signing secret", r.secret);
            await loadEndpoints();
          }) }, "Rotate secret") : null,
          admin ? twoStep("Delete", "Confirm delete", { "data-delete": e.id }, act(async () => {
            await del(`/v1/webhooks/endpoints/${encodeURIComponent(e.id)}`);
            await loadEndpoints();
            await loadDeliveries();
          })) : null)))))));
  }

  let shown = null;  // the delivery whose attempts are open
  async function showDelivery(id) {
    shown = id;
    replace(detail, h("p", { class: "muted" }, "Loading…"));
    try {
      const d = await get(`/v1/webhooks/deliveries/${encodeURIComponent(id)}`);
      replace(detail, h("section", { class: "card", "aria-labelledby": "attempts-h" },
        h("h3", { id: "attempts-h" }, `Attempts of ${d.event_type} for request ${d.request_id}`),
        d.attempt_log.length ? h("div", { class: "table-wrap" }, h("table", { id: "attempt-log" },
          h("caption", { class: "sr-only" }, "Attempts"),
          h("thead", {}, h("tr", {}, ["#", "When", "Status code", "Latency", "Error or response", "Next attempt"].map((t) => h("th", { scope: "col" }, t)))),
          h("tbody", {}, d.attempt_log.map((a) => h("tr", {},
            h("td", {}, `${a.attempt}${a.replay ? " (replay)" : ""}`), h("td", {}, when(a.attempted_at)),
            h("td", {}, a.status_code === null ? "—" : String(a.status_code)),
            h("td", {}, a.latency_ms === null ? "—" : `${a.latency_ms} ms`),
            h("td", { class: "mono wrap" }, a.error || a.response_body || "—"),
            h("td", {}, a.next_attempt_at ? when(a.next_attempt_at) : "—"))))))
          : emptyState("No attempt yet.")));
    } catch (err) {
      replace(detail, errorBox(err));
    }
  }

  let cursor = null;
  async function loadDeliveries(more = false) {
    const q = new URLSearchParams({ limit: "20" });
    if (filterStatus.value) q.set("status", filterStatus.value);
    if (filterEndpoint.value) q.set("endpoint_id", filterEndpoint.value);
    if (more && cursor) q.set("cursor", cursor);
    let page;
    try {
      page = await get(`/v1/webhooks/deliveries?${q}`);
    } catch (err) {
      replace(deliveries, errorBox(err));
      return;
    }
    cursor = page.next_cursor;
    const rows = page.data.map((d) => h("tr", { "data-delivery-id": d.id, "data-status": d.status },
      h("td", {}, d.event_type), h("td", {}, h("code", {}, d.request_id)),
      h("td", { class: "delivery-status" }, d.status), h("td", { class: "num" }, String(d.attempts)),
      h("td", {}, d.last_status_code ? String(d.last_status_code) : "—", d.last_error ? h("div", { class: "muted small wrap" }, d.last_error) : null),
      h("td", {}, when(d.created_at), d.next_attempt_at ? h("div", { class: "muted small" }, `next ${when(d.next_attempt_at)}`) : null),
      h("td", { class: "actions" },
        h("button", { type: "button", onclick: () => showDelivery(d.id) }, "Attempts"),
        writer ? h("button", { type: "button", "data-replay": d.id, disabled: d.status === "pending" || d.status === "retrying",
          onclick: act(async () => {
            await post(`/v1/webhooks/deliveries/${encodeURIComponent(d.id)}/replay`, {});
            await loadDeliveries();
          }) },
        "Replay") : null)));
    const body = more ? deliveries.querySelector("tbody") : null;
    if (body) {
      body.append(...rows);
    } else if (!rows.length) {
      replace(deliveries, emptyState(filterStatus.value || filterEndpoint.value ? "No deliveries match these filters."
        : "No deliveries yet. They appear here when a request with a webhook changes state."));
    } else {
      replace(deliveries, h("div", { class: "table-wrap" }, h("table", {},
        h("caption", { class: "sr-only" }, "Deliveries"),
        h("thead", {}, h("tr", {}, ["Event", "Request", "Status", "Attempts", "Last answer", "Created", "Actions"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, rows))));
    }
    const old = deliveries.querySelector(".more");
    if (old) old.remove();
    if (cursor) deliveries.append(h("button", { type: "button", class: "more", onclick: () => loadDeliveries(true) }, "Load more"));
    if (!more && shown && page.data.some((d) => d.id === shown)) await showDelivery(shown);  // its attempts, fresh
  }

  const filters = h("form", { class: "inline-form", id: "delivery-filters" },
    field("Status", filterStatus), field("Endpoint", filterEndpoint),
    h("button", { type: "submit" }, "Filter"));
  filters.addEventListener("submit", (ev) => { ev.preventDefault(); loadDeliveries(); });

  replace(main, h("section", { class: "webhooks" }, h("h1", {}, "Webhooks"), created, status,
    admin ? createForm() : null,
    h("h2", {}, "Endpoints"), endpoints,
    h("h2", {}, "Deliveries"), filters, deliveries, detail));
  await loadEndpoints();
  await loadDeliveries();
}
