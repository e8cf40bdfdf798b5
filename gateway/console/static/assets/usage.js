// Usage and billing: tokens and requests per day, broken down by model, tier or autonomy level (GET /v1/usage),
// drawn with uPlot (vendored, loaded on this page only), each chart with its data as a table; the month's
// invoice lines (GET /v1/billing/invoices) for roles with billing:read.
import { get } from "./api.js";
import { emptyState, errorBox, field, h, replace } from "./dom.js";
import { hasScope } from "./session.js";

const DIMENSIONS = { model: "Model", tier: "Tier", autonomy_level: "Autonomy level" };
// distinct hues, each at least 4.5:1 against the white chart background
const COLORS = ["#1f4e8c", "#b3541e", "#2e7d4a", "#7b3fa0", "#a32020", "#00727a", "#6b5b00", "#444c5c"];
const DAY_S = 86400;

let loading = null;

// uPlot is a classic script (its minified IIFE build): added once, on first use, from the same origin (CSP 'self').
function loadUPlot() {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const css = h("link", { rel: "stylesheet", href: new URL("./vendor/uPlot.min.css", import.meta.url).href });
      const script = h("script", { src: new URL("./vendor/uPlot.iife.min.js", import.meta.url).href });
      script.addEventListener("load", () => resolve(window.uPlot));
      script.addEventListener("error", () => { loading = null; reject(new Error("the chart library did not load")); });
      document.head.append(css, script);
    });
  }
  return loading;
}

const isoDay = (d) => d.toISOString().slice(0, 10);
const daySeconds = (iso) => Date.parse(`${iso}T00:00:00Z`) / 1000;
const fmt = (n) => Number(n).toLocaleString("en-US");

function label(dim, value) {
  if (value === "" || value === null || value === undefined) {
    return dim === "model" ? "(no model: admission)" : "(not recorded)";
  }
  return String(value);
}

// rows of GET /v1/usage (grouped by day and one dimension) -> one series per dimension value, every day of the range
export function series(rows, dim, metric, start, end) {
  const xs = [];
  for (let t = daySeconds(start); t <= daySeconds(end); t += DAY_S) xs.push(t);
  const index = new Map(xs.map((t, i) => [t, i]));
  const byKey = new Map();
  for (const row of rows) {
    const key = row[dim] === undefined ? "" : row[dim];
    if (!byKey.has(key)) byKey.set(key, xs.map(() => 0));
    const i = index.get(daySeconds(row.day));
    if (i !== undefined) byKey.get(key)[i] += metric(row);
  }
  const keys = [...byKey.keys()].filter((k) => byKey.get(k).some((v) => v !== 0)).sort();
  return { xs, keys, values: keys.map((k) => byKey.get(k)) };
}

function dataTable(caption, dim, s) {
  const totals = s.values.map((v) => v.reduce((a, b) => a + b, 0));
  const days = s.xs.map((t, i) => [t, i]).filter(([, i]) => s.values.some((v) => v[i] !== 0));
  return h("div", { class: "table-wrap" }, h("table", { class: "data-table" },
    h("caption", {}, caption),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"),
      s.keys.map((k) => h("th", { scope: "col", class: "num" }, `${DIMENSIONS[dim]}: ${label(dim, k)}`)))),
    h("tbody", {}, days.map(([t, i]) => h("tr", {}, h("th", { scope: "row" }, isoDay(new Date(t * 1000))),
      s.values.map((v) => h("td", { class: "num" }, fmt(v[i])))))),
    h("tfoot", {}, h("tr", {}, h("th", { scope: "row" }, "Total"), totals.map((v) => h("td", { class: "num" }, fmt(v)))))));
}

async function chart(host, title, id, dim, s) {
  const uPlot = await loadUPlot();
  const plot = h("div", { class: "chart", id, "aria-hidden": "true" });
  const figure = h("figure", { class: "card chart-card" },
    h("figcaption", {}, h("h2", {}, title)), plot,
    h("details", {}, h("summary", {}, `${title}: the data as a table`), dataTable(title, dim, s)));
  host.append(figure);
  const width = () => Math.max(260, plot.clientWidth || 600);
  const opts = {
    width: width(), height: 260,
    tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),  // the API's days are UTC days
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
    axes: [{ stroke: "#1a1d23", grid: { stroke: "#e3e6eb" } },
      { stroke: "#1a1d23", grid: { stroke: "#e3e6eb" }, values: (u, ticks) => ticks.map((v) => fmt(v)) }],
    series: [{ label: "Day", value: (u, t) => (t === null ? "—" : isoDay(new Date(t * 1000))) },
      ...s.keys.map((k, i) => ({ label: label(dim, k), stroke: COLORS[i % COLORS.length], width: 2,
        points: { show: true, size: 6 }, value: (u, v) => (v === null ? "—" : fmt(v)) }))],
  };
  const u = new uPlot(opts, [s.xs, ...s.values], plot);
  plot.uplot = u;  // the chart instance, for the tests to read what is plotted
  if (window.ResizeObserver) {
    const watch = new ResizeObserver(() => {
      if (!plot.isConnected) { watch.disconnect(); u.destroy(); return; }
      if (Math.abs(width() - u.width) > 8) u.setSize({ width: width(), height: 260 });
    });
    watch.observe(plot);
  }
  return u;
}

async function invoiceCard() {
  const now = new Date();
  const period = h("input", { type: "month", id: "invoice-period", value: now.toISOString().slice(0, 7),
    min: "2020-01" });
  const out = h("div", { id: "invoice", "aria-live": "polite" });
  const show = h("button", { type: "submit" }, "Show");
  const form = h("form", { class: "inline-form", id: "invoice-form" }, field("Month (UTC)", period), show);
  async function load() {
    replace(out, h("p", { class: "muted" }, "Loading…"));
    try {
      const inv = await get(`/v1/billing/invoices?period=${encodeURIComponent(period.value)}`);
      if (!inv.lines.length) {
        replace(out, emptyState(`No invoice lines for ${inv.period}: nothing was billed that month.`));
        return;
      }
      replace(out, h("div", { class: "table-wrap" }, h("table", { id: "invoice-lines" },
        h("caption", {}, `Invoice ${inv.period} (${inv.currency})`),
        h("thead", {}, h("tr", {}, ["Tier", "Item", "Quantity", "Amount"].map((t, i) => h("th", { scope: "col", class: i > 1 ? "num" : null }, t)))),
        h("tbody", {}, inv.lines.map((l) => h("tr", {}, h("td", {}, l.tier), h("td", {}, l.item),
          h("td", { class: "num" }, fmt(l.quantity)), h("td", { class: "num mono" }, l.amount)))),
        h("tfoot", {}, h("tr", {}, h("th", { scope: "row", colspan: "3" }, "Total"),
          h("td", { class: "num mono", id: "invoice-total" }, `${inv.total} ${inv.currency}`))))));
    } catch (err) {
      replace(out, errorBox(err));
    }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });
  await load();
  return h("section", { class: "card", "aria-labelledby": "invoice-h" }, h("h2", { id: "invoice-h" }, "Invoice"), form, out);
}

export async function usageView(main) {
  const today = new Date();
  const from = new Date(today.getTime() - 29 * DAY_S * 1000);
  const start = h("input", { type: "date", id: "usage-start", value: isoDay(from) });
  const end = h("input", { type: "date", id: "usage-end", value: isoDay(today) });
  const dim = h("select", { id: "usage-by" },
    Object.entries(DIMENSIONS).map(([v, t]) => h("option", { value: v }, t)));
  const status = h("div", { "aria-live": "polite" });
  const totals = h("dl", { class: "facts totals", id: "usage-totals" });
  const charts = h("div", { id: "usage-charts", class: "charts" });
  const form = h("form", { class: "card controls", id: "usage-form" },
    field("From (UTC day)", start), field("To (UTC day)", end), field("Break down by", dim),
    h("div", { class: "field end" }, h("button", { type: "submit", class: "primary" }, "Show")));

  async function load() {
    replace(status, h("p", { class: "muted" }, "Loading…"));
    let usage;
    try {
      const q = new URLSearchParams({ start: start.value, end: end.value, group_by: `day,${dim.value}` });
      usage = await get(`/v1/usage?${q}`);
    } catch (err) {
      replace(status, errorBox(err));
      return;
    }
    replace(status);
    const t = usage.totals;
    replace(totals,
      h("dt", {}, "Requests"), h("dd", { "data-total": "requests" }, fmt(t.requests)),
      h("dt", {}, "Rejected"), h("dd", { "data-total": "rejections" }, fmt(t.rejections)),
      h("dt", {}, "Prompt tokens"), h("dd", { "data-total": "prompt_tokens" }, fmt(t.prompt_tokens)),
      h("dt", {}, "Completion tokens"), h("dd", { "data-total": "completion_tokens" }, fmt(t.completion_tokens)),
      h("dt", {}, "Cost (USD)"), h("dd", { "data-total": "cost", class: "mono" }, t.cost));
    charts.dataset.requests = String(t.requests);
    charts.dataset.tokens = String(t.prompt_tokens + t.completion_tokens);
    replace(charts);
    if (!usage.data.length) {
      charts.append(emptyState(`No usage between ${usage.start} and ${usage.end}. Send a request from the chat, or pick other days.`));
      return;
    }
    const by = dim.value;
    try {
      await chart(charts, `Tokens per day by ${DIMENSIONS[by].toLowerCase()}`, "chart-tokens", by,
        series(usage.data, by, (r) => r.prompt_tokens + r.completion_tokens, usage.start, usage.end));
      await chart(charts, `Requests per day by ${DIMENSIONS[by].toLowerCase()}`, "chart-requests", by,
        series(usage.data, by, (r) => r.requests, usage.start, usage.end));
      charts.dataset.ready = `${usage.start}/${usage.end}/${by}`;
    } catch (err) {
      charts.append(errorBox({ code: "chart_unavailable", message: err.message }));
    }
  }
  form.addEventListener("submit", (ev) => { ev.preventDefault(); load(); });

  replace(main, h("section", { class: "usage" }, h("h1", {}, "Usage and billing"), form, status,
    h("section", { class: "card", "aria-labelledby": "totals-h" }, h("h2", { id: "totals-h" }, "Totals"), totals),
    charts));
  await load();
  if (hasScope("billing:read")) main.querySelector(".usage").append(await invoiceCard());
}
