"""Usage, invoices and finance SQL in real headless Chromium against the real stack and usage pipeline: the
charts plot exactly what GET /v1/usage bills (read back from the uPlot instances in the page), for each
breakdown; the invoice lines are the API's; the finance SQL page shows the API's rows and its CSV download
holds them. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import csv
import io
import time
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from tests.console.conftest import Mailbox
from tests.console.test_console_browser import _api_token, _no_console_errors, _shot, _wait, sign_up_in_page
from tests.usage_pipeline import UsagePipeline

pytestmark = pytest.mark.integration

PLOTTED = """
const read = (id) => {
  const el = document.getElementById(id);
  if (!el || !el.uplot) return null;
  const u = el.uplot;
  return {labels: u.series.slice(1).map((s) => s.label), x: u.data[0], series: u.data.slice(1)};
};
return {tokens: read('chart-tokens'), requests: read('chart-requests')};
"""


def page_shot(driver: Any, path: Path) -> None:
    """A screenshot of the whole page, below the fold included (CDP), for the docs."""
    import base64

    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": {
        "x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 2400), "scale": 1}})
    path.write_bytes(base64.b64decode(shot["data"]))


def wait_terminal(client: httpx.Client, request_id: str, timeout: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/v1/requests/{request_id}").json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"{request_id} not terminal")


def billed_usage(client: httpx.Client, requests: int, prompt: int, completion: int,
                 timeout: float = 120) -> dict[str, Any]:
    """GET /v1/usage until it bills exactly these totals (requests count at admission, tokens when each
    inference fact lands: a count alone can hold with a fact missing)."""
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = client.get("/v1/usage", params={"group_by": "day"})
        assert r.status_code == 200, r.text
        body = r.json()
        t = body["totals"]
        if (t["requests"], t["prompt_tokens"], t["completion_tokens"]) == (requests, prompt, completion):
            return body
        time.sleep(0.5)
    raise AssertionError(f"usage never billed {requests} requests, {prompt}+{completion} tokens: {body}")


def make_usage(client: httpx.Client, n: int = 2, conversation: str | None = None) -> list[dict[str, Any]]:
    """n finished requests and their usage, once billed exactly."""
    done = []
    for i in range(n):
        body: dict[str, Any] = {"messages": [{"role": "user", "content": f"Say hello {i}."}], "max_tokens": 3}
        if conversation:
            body["conversation_id"] = conversation
        r = client.post("/v1/requests", json=body)
        assert r.status_code == 202, r.text
        done.append(wait_terminal(client, r.json()["id"]))
    prompt = sum(d["usage"]["prompt_tokens"] for d in done)
    completion = sum(d["usage"]["completion_tokens"] for d in done)
    billed_usage(client, n, prompt, completion)
    return done


def _sums(plotted: dict[str, Any]) -> tuple[int, int]:
    return (sum(sum(v) for v in plotted["tokens"]["series"]), sum(sum(v) for v in plotted["requests"]["series"]))


def _label(dim: str, value: str) -> str:
    return value if value else ("(no model: admission)" if dim == "model" else "(not recorded)")


def test_usage_charts_plot_what_the_api_bills(browser: Any, stack: Any, mailbox: Mailbox, tmp_path: Path,
                                              usage_pipeline: UsagePipeline) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "usage")
    client = httpx.Client(base_url=stack.gateway_url, timeout=30,
                          headers={"Authorization": f"Bearer {_api_token(stack, email)}"})
    done = make_usage(client, 2)

    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/usage']").click()
    for dim in ("model", "tier", "autonomy_level"):
        Select(_wait(browser).until(EC.presence_of_element_located((By.ID, "usage-by")))).select_by_value(dim)
        browser.find_element(By.CSS_SELECTOR, "#usage-form button[type=submit]").click()
        start = browser.find_element(By.ID, "usage-start").get_attribute("value")
        end = browser.find_element(By.ID, "usage-end").get_attribute("value")
        _wait(browser, 60).until(EC.text_to_be_present_in_element_attribute(
            (By.ID, "usage-charts"), "data-ready", f"{start}/{end}/{dim}"))
        api = client.get("/v1/usage", params={"start": start, "end": end, "group_by": f"day,{dim}"}).json()
        t = api["totals"]
        assert (t["requests"], t["prompt_tokens"] + t["completion_tokens"]) == \
            (2, sum(d["usage"]["prompt_tokens"] + d["usage"]["completion_tokens"] for d in done))
        plotted = browser.execute_script(PLOTTED)
        # what is drawn adds up to what is billed, series by series
        assert _sums(plotted) == (t["prompt_tokens"] + t["completion_tokens"], t["requests"]), plotted
        for metric, key in (("tokens", lambda r: r["prompt_tokens"] + r["completion_tokens"]),
                            ("requests", lambda r: r["requests"])):
            want: dict[str, int] = {}
            for row in api["data"]:
                want[_label(dim, row[dim])] = want.get(_label(dim, row[dim]), 0) + key(row)
            got = dict(zip(plotted[metric]["labels"], (sum(v) for v in plotted[metric]["series"]), strict=True))
            assert got == {k: v for k, v in want.items() if v}, (dim, metric, got, want)
            # one point per UTC day of the range, zeros included
            assert len(plotted[metric]["x"]) == (date.fromisoformat(end) - date.fromisoformat(start)).days + 1
        shown = {dd.get_attribute("data-total"): dd.text for dd in browser.find_elements(By.CSS_SELECTOR, "#usage-totals dd")}
        assert shown["requests"] == f"{t['requests']:,}" and shown["prompt_tokens"] == f"{t['prompt_tokens']:,}"
        # the chart draws on a canvas with non-blank pixels
        assert browser.execute_script(
            "const c = document.querySelector('#chart-tokens canvas'); return c && c.width > 0 && c.height > 0")
    page_shot(browser, tmp_path / "usage.png")

    # the month's invoice lines are the API's (an owner holds billing:read)
    period = time.strftime("%Y-%m", time.gmtime())
    invoice = client.get("/v1/billing/invoices", params={"period": period}).json()
    total = _wait(browser, 60).until(EC.presence_of_element_located((By.ID, "invoice-total")))
    assert total.text == f"{invoice['total']} {invoice['currency']}"
    rows = browser.find_elements(By.CSS_SELECTOR, "#invoice-lines tbody tr")
    assert [[td.text for td in r.find_elements(By.TAG_NAME, "td")] for r in rows] == \
        [[line["tier"], line["item"], f"{line['quantity']:,}", line["amount"]] for line in invoice["lines"]]

    # 375 px wide: the charts shrink, nothing overflows sideways
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
    _wait(browser).until(lambda d: d.execute_script(
        "return document.getElementById('chart-tokens').uplot.width <= 375"))
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 375
    _shot(browser, tmp_path, "usage-375px")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _no_console_errors(browser)


def test_finance_sql_page_shows_the_rows_and_downloads_them_as_csv(browser: Any, stack: Any, mailbox: Mailbox,
                                                                   tmp_path: Path,
                                                                   usage_pipeline: UsagePipeline) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "finance")
    client = httpx.Client(base_url=stack.gateway_url, timeout=30,
                          headers={"Authorization": f"Bearer {_api_token(stack, email)}"})
    make_usage(client, 1)
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/finance']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "sql-result"), "Run a query"))
    sql = browser.find_element(By.ID, "sql").get_attribute("value")
    browser.find_element(By.ID, "run-sql").click()
    table = _wait(browser, 60).until(EC.presence_of_element_located((By.ID, "sql-table")))
    api = client.post("/v1/analytics/sql", json={"sql": sql}).json()
    assert [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")] == api["columns"]
    shown = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert shown == [["NULL" if v is None else str(v) for v in row] for row in api["rows"]] and shown
    _shot(browser, tmp_path, "finance")
    # the download holds the same rows as CSV
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    assert browser.find_element(By.ID, "sql-csv").get_attribute("download") == "lotabots-usage.csv"
    browser.find_element(By.ID, "sql-csv").click()
    saved = downloads / "lotabots-usage.csv"
    _wait(browser).until(lambda d: saved.exists() and not list(downloads.glob("*.crdownload")))
    parsed = list(csv.reader(io.StringIO(saved.read_text())))
    assert parsed[0] == api["columns"]
    assert parsed[1:] == [["" if v is None else str(v) for v in row] for row in api["rows"]]
    _no_console_errors(browser)

    # a refused statement shows the API's message and code (the browser logs the 403 it was answered)
    box = browser.find_element(By.ID, "sql")
    box.clear()
    box.send_keys("SELECT * FROM system.tables")
    browser.find_element(By.ID, "run-sql").click()
    _wait(browser, 60).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#sql-status .error-code"),
                                                              "database_not_allowed"))
    logged = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE" or "Content Security" in e["message"]]
    assert all("/v1/analytics/sql" in m and "403" in m for m in logged), logged
