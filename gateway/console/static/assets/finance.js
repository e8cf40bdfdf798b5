// Finance SQL: one SELECT over lotabots_usage (POST /v1/analytics/sql; the API confines it to the caller's
// tenant and refuses anything but a read), a results table and a CSV download of the rows.
import { post } from "./api.js";
import { emptyState, errorBox, field, h, replace } from "./dom.js";

const EXAMPLE = `SELECT day, tier, model, sum(requests) AS requests,
       sum(prompt_tokens + completion_tokens) AS tokens, sum(cost) AS cost
FROM lotabots_usage.usage_daily
GROUP BY day, tier, model
ORDER BY day`;

// RFC 4180: quote a field holding a comma, quote or line break; double the quotes inside
export function csvField(value) {
  if (value === null || value === undefined) return "";
  const text = typeof value === "object" ? JSON.stringify(value) : String(value);
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

export function toCsv(columns, rows) {
  return [columns, ...rows].map((r) => r.map(csvField).join(",")).join("\r\n") + "\r\n";
}

export function financeView(main) {
  const sql = h("textarea", { id: "sql", rows: "7", spellcheck: "false", class: "mono" });
  sql.value = EXAMPLE;
  const run = h("button", { type: "submit", class: "primary", id: "run-sql" }, "Run");
  const status = h("div", { "aria-live": "polite", id: "sql-status" });
  const out = h("div", { id: "sql-result" });
  let url = null;
  const form = h("form", { class: "card", id: "sql-form" },
    field("SQL (one SELECT over lotabots_usage)", sql, "Ctrl+Enter runs it. Only your tenant's rows are visible; at most 10 000 rows."),
    h("div", { class: "row" }, run), status);

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    run.disabled = true;
    replace(status, h("p", { class: "muted" }, "Running…"));
    try {
      const result = await post("/v1/analytics/sql", { sql: sql.value });
      replace(status, h("p", { class: "muted", role: "status" },
        `${result.row_count} row${result.row_count === 1 ? "" : "s"} in ${result.elapsed_ms} ms.`));
      show(result);
    } catch (err) {
      replace(status, errorBox(err));
      replace(out);
    } finally {
      run.disabled = false;
    }
  });
  sql.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) { ev.preventDefault(); form.requestSubmit(); }
  });

  function show(result) {
    if (url) URL.revokeObjectURL(url);
    url = URL.createObjectURL(new Blob([toCsv(result.columns, result.rows)], { type: "text/csv" }));
    const download = h("a", { href: url, download: "lotabots-usage.csv", class: "button", id: "sql-csv" }, "Download CSV");
    if (!result.rows.length) {
      replace(out, h("div", { class: "row" }, download), emptyState("The query returned no rows."));
      return;
    }
    replace(out, h("div", { class: "row" }, download), h("div", { class: "table-wrap" }, h("table", { id: "sql-table" },
      h("caption", { class: "sr-only" }, "Query results"),
      h("thead", {}, h("tr", {}, result.columns.map((c, i) => h("th", { scope: "col", title: result.types ? result.types[i] : null }, c)))),
      h("tbody", {}, result.rows.map((r) => h("tr", {}, r.map((v) => h("td", { class: "mono" },
        v === null ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v)))))))));
  }

  replace(main, h("section", { class: "finance" }, h("h1", {}, "Finance SQL"), form,
    h("section", { "aria-labelledby": "result-h" }, h("h2", { id: "result-h" }, "Result"), out)));
  replace(out, emptyState("Run a query to see its rows here."));
}
