"""Accessibility of every console page: axe-core (vendored, tests/console/vendor/, pinned by
scripts/vendor_console.sh) runs in the page in real headless Chromium against the real stack, signed out
and signed in as an owner with data on the pages (a key, an invitation, billed usage with its charts, a
query result). Zero serious or critical violations on each page the gateway serves (`PAGES`, so pages added
later are checked too), and at 375 px nothing overflows sideways. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from gateway.routers.console import PAGES
from tests.console.conftest import Mailbox
from tests.console.test_console_browser import (
    _api_token,
    _email,
    _no_console_errors,
    _shot,
    _wait,
    sign_up_in_page,
)
from tests.console.test_console_usage import make_usage
from tests.usage_pipeline import UsagePipeline

pytestmark = pytest.mark.integration

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
RUN_AXE = """
const done = arguments[arguments.length - 1];
axe.run(document, {resultTypes: ['violations']})
  .then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact, help: v.help,
    nodes: v.nodes.slice(0, 5).map((n) => n.target.join(' ') + ' :: ' + (n.failureSummary || ''))}))))
  .catch((e) => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));
"""
# the page has settled: a heading, and nothing still loading or running
SETTLED = """
const main = document.getElementById('main');
if (!main || !main.querySelector('h1')) return false;
const text = main.textContent;
if (text.includes('Loading…') || text.includes('Running…') || text.includes('Verifying…')) return false;
const charts = document.getElementById('usage-charts');
return !charts || charts.dataset.ready !== undefined || !!charts.querySelector('.empty, .error');
"""
SEVERE = ("serious", "critical")


def _audit(driver: Any, tmp_path: Path, label: str, report: dict[str, Any]) -> list[dict[str, Any]]:
    _wait(driver, 60).until(lambda d: d.execute_script(SETTLED))
    if not driver.execute_script("return typeof window.axe !== 'undefined'"):
        driver.execute_script(AXE)  # WebDriver-injected script: the page's CSP does not apply to it
    violations = driver.execute_async_script(RUN_AXE)
    _shot(driver, tmp_path, f"a11y-{label}")
    report[label] = violations  # every impact, kept as an artifact (axe-report.json)
    return [{**v, "page": label} for v in violations if v["impact"] in SEVERE]


def _pages() -> list[str]:
    return [p for p in PAGES if p != "/"]


def test_every_page_has_no_serious_or_critical_axe_violations(browser: Any, stack: Any, mailbox: Mailbox,
                                                              tmp_path: Path, usage_pipeline: UsagePipeline) -> None:
    browser.set_script_timeout(120)
    found: list[dict[str, Any]] = []
    report: dict[str, Any] = {}
    checked: list[str] = []

    # signed out: every page that shows itself to a visitor (the others send them to sign in)
    for path in _pages():
        browser.get(f"{stack.gateway_url}{path}")
        _wait(browser, 60).until(lambda d: d.execute_script(SETTLED))
        here = browser.execute_script("return location.pathname")
        if here != path:
            continue
        found += _audit(browser, tmp_path, f"out{path.replace('/', '-')}", report)
        checked.append(f"signed out {path}")

    # signed in as an owner, with something on every list
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "a11y")
    client = httpx.Client(base_url=stack.gateway_url, timeout=30,
                          headers={"Authorization": f"Bearer {_api_token(stack, email)}"})
    assert client.post("/v1/api-keys", json={"name": "a11y", "scopes": ["requests:read"]}).status_code == 201
    assert client.post("/v1/users", json={"email": _email("a11y-invitee"), "role": "member"}).status_code == 201
    make_usage(client, 1)
    for path in _pages():
        browser.get(f"{stack.gateway_url}{path}")
        _wait(browser, 60).until(lambda d: d.execute_script(SETTLED))
        here = browser.execute_script("return location.pathname")
        if here != path and f"signed out {path}" in checked:
            continue
        if here == "/finance":
            browser.find_element(By.ID, "run-sql").click()
            _wait(browser, 60).until(EC.presence_of_element_located((By.ID, "sql-table")))
        if here == "/usage":
            _wait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart-tokens canvas"))
            _wait(browser).until(EC.presence_of_element_located((By.ID, "invoice-lines")))
        found += _audit(browser, tmp_path, f"in{path.replace('/', '-')}", report)
        checked.append(f"signed in {path}")

        # 375 px: the same page, nothing overflows sideways
        browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
        _wait(browser).until(lambda d: d.execute_script("return window.innerWidth") == 375)
        width = browser.execute_script("return document.documentElement.scrollWidth")
        _shot(browser, tmp_path, f"a11y-in{path.replace('/', '-')}-375px")
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        assert width <= 375, f"{path} overflows at 375 px: {width}"

    (tmp_path / "axe-report.json").write_text(json.dumps(report, indent=1))
    assert {"signed out /signin", "signed out /signup", "signed in /chat", "signed in /keys", "signed in /account",
            "signed in /usage", "signed in /webhooks", "signed in /team", "signed in /finance"} <= set(checked), checked
    assert not found, "\n".join(f"{v['page']}: {v['impact']} {v['id']} ({v['help']}): {v['nodes']}" for v in found)
    _no_console_errors(browser)
