"""Requests, approvals and autonomy pages in real headless Chromium against the real stack (gateway, Kafka,
PostgreSQL, the model, the mailer over SMTP): an Expert-level request shows in the approvals inbox and in the
navigation badge; edit-then-approve in the page; the API then says `succeeded` with the edited text and the
audit trail (in the page at once, and from the API) has the decision; the requests list filters by status and
the detail shows timings, usage, autonomy, output and audit; a Collaborator draft rejected from its detail
page ends `canceled`. The autonomy page sets the tenant levels, creates and deletes rules, and its resolver
answers as `GET /v1/autonomy/resolve` does. Screenshots go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select

from tests.console.conftest import SmtpMailbox
from tests.console.test_console_account import _only_refusals_logged
from tests.console.test_console_browser import _api_token, _no_console_errors, _shot, _wait, sign_up_in_page

pytestmark = pytest.mark.integration


def _client(stack: Any, email: str) -> httpx.Client:
    return httpx.Client(base_url=stack.gateway_url, timeout=60,
                        headers={"Authorization": f"Bearer {_api_token(stack, email)}"})


def _submit(client: httpx.Client, level: str, text: str) -> str:
    r = client.post("/v1/requests", json={"messages": [{"role": "user", "content": text}], "max_tokens": 16,
                                          "autonomy_level": level})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _until_status(client: httpx.Client, request_id: str, status: str, rounds: int = 30) -> dict[str, Any]:
    """Long-poll the API until the request reaches `status` (each call holds up to 10 s)."""
    body: dict[str, Any] = {}
    for _ in range(rounds):
        body = client.get(f"/v1/requests/{request_id}", params={"wait": 10}).json()
        if body["status"] == status:
            return body
    raise AssertionError(f"{request_id} never reached {status}: {body}")


def _badge(driver: Any) -> str:
    return str(driver.execute_script(
        "const b = document.getElementById('approvals-count'); return b ? (b.dataset.count || '') : null"))


def test_expert_request_edit_then_approve_in_the_inbox(browser: Any, stack: Any, mailbox: SmtpMailbox,
                                                     tmp_path: Path) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "approvals")
    client = _client(stack, email)
    expert = _submit(client, "expert", "Should we roll out the new billing plan this week?")
    collaborator = _submit(client, "collaborator", "Draft a two-line status update.")
    drafted = _until_status(client, expert, "awaiting_approval")
    _until_status(client, collaborator, "awaiting_approval")

    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/approvals']").click()
    card = _wait(browser, 60).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f"#approval-list li[data-request-id='{expert}']")))
    _wait(browser).until(lambda d: _badge(d) == "2")  # the navigation badge counts both
    assert browser.find_elements(By.CSS_SELECTOR, f"#approval-list li[data-request-id='{collaborator}']")
    draft = card.find_element(By.CSS_SELECTOR, f"textarea[data-edit-text='{expert}']")
    assert draft.get_attribute("value") == drafted["output"]["text"]  # the advice, as the API has it
    _shot(browser, tmp_path, "approvals")

    edited = "Decision: roll out to 10 % of tenants on Monday, the rest after a week without incidents."
    draft.clear()
    draft.send_keys(edited)
    card.find_element(By.CSS_SELECTOR, f"input[data-comment='{expert}']").send_keys("staged rollout")
    card.find_element(By.CSS_SELECTOR, f"button[data-edit='{expert}']").click()

    # the decision is in the page's audit trail at once, and the badge counts one
    _wait(browser, 60).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f"#last-decision[data-request-id='{expert}'] #audit-trail li[data-event='edited']")))
    assert browser.find_element(By.ID, "decided-status").text == "succeeded"
    final_shown = browser.find_element(By.CSS_SELECTOR, "#last-decision [data-final]").text
    assert final_shown == edited
    _wait(browser).until(lambda d: _badge(d) == "1")
    assert not browser.find_elements(By.CSS_SELECTOR, f"#approval-list li[data-request-id='{expert}']")
    _shot(browser, tmp_path, "approvals-decided")

    # the API agrees: succeeded with the edited text, and the audit has the decision by this user
    r = client.get(f"/v1/requests/{expert}").json()
    assert r["status"] == "succeeded" and r["output"]["text"] == edited
    assert r["autonomy"]["decision"]["kind"] == "edited"
    audit = client.get(f"/v1/requests/{expert}/audit").json()["data"]
    edits = [e for e in audit if e["event"] == "edited"]
    assert len(edits) == 1 and edits[0]["detail"]["final"] == edited
    assert edits[0]["detail"]["draft"] == drafted["output"]["text"]

    # the requests list, filtered by status, and the detail
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/requests']").click()
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, f"#request-list tr[data-request-id='{expert}']")))
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("awaiting_approval")
    _wait(browser).until(lambda d: [e.get_attribute("data-request-id") for e in
                                    d.find_elements(By.CSS_SELECTOR, "#request-list tr[data-request-id]")] == [collaborator])
    assert browser.current_url.endswith("/requests?status=awaiting_approval")
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("canceled")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "request-list"), "No canceled requests."))
    Select(browser.find_element(By.ID, "status-filter")).select_by_value("")
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#request-list tr[data-request-id]")) == 2)
    _shot(browser, tmp_path, "requests")
    browser.find_element(By.CSS_SELECTOR, f"#request-list tr[data-request-id='{expert}'] a").click()
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#audit-trail li[data-event='edited']")))
    assert browser.current_url.endswith(f"/requests/{expert}")
    assert browser.find_element(By.ID, "output-text").text == edited
    assert browser.find_element(By.ID, "autonomy-level").text == "Expert"
    assert browser.find_element(By.ID, "usage-total").text == str(r["usage"]["total_tokens"])
    shown_ms = browser.find_element(By.ID, "run-ms").text
    assert shown_ms.endswith(" ms") and float(shown_ms[:-3]) == r["timings"]["run_ms"]  # JS prints 1405.0 as 1405
    events = [e.get_attribute("data-event") for e in browser.find_elements(By.CSS_SELECTOR, "#audit-trail li")]
    assert events == [e["event"] for e in audit]
    _shot(browser, tmp_path, "request-detail")

    # the Collaborator draft, rejected from its detail page (opened by URL)
    browser.get(f"{stack.gateway_url}/requests/{collaborator}")
    _wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"button[data-reject='{collaborator}']"))).click()
    _wait(browser, 60).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, ".request-detail[data-status='canceled'] #audit-trail li[data-event='rejected']")))
    assert client.get(f"/v1/requests/{collaborator}").json()["status"] == "canceled"
    _wait(browser).until(lambda d: _badge(d) == "0")
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/approvals']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "approval-list"), "Nothing awaits a decision"))

    # a second decision on the same request is refused with the API's message and code
    r2 = client.post(f"/v1/requests/{expert}/approve")
    assert r2.status_code == 409 and r2.json()["error"]["code"] == "request_already_decided"

    # 375 px: the inbox and the detail do not overflow
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
    for path in (f"/requests/{expert}", "/requests", "/approvals"):
        browser.get(f"{stack.gateway_url}{path}")
        _wait(browser).until(lambda d: d.execute_script("return window.innerWidth") == 375)
        _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#audit-trail, #request-list table, #approval-list .empty")))
        assert browser.execute_script("return document.documentElement.scrollWidth") <= 375, path
    _shot(browser, tmp_path, "approvals-375px")
    browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    _no_console_errors(browser)


def test_autonomy_settings_rules_and_resolver(browser: Any, stack: Any, mailbox: SmtpMailbox, tmp_path: Path) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "autonomy")
    client = _client(stack, email)
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/autonomy']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "rule-list"), "No rules yet"))

    # tenant default and maximum
    Select(browser.find_element(By.ID, "tenant-default")).select_by_value("assisted")
    Select(browser.find_element(By.ID, "tenant-max")).select_by_value("expert")
    browser.find_element(By.ID, "save-tenant").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "tenant-levels"), "Last changed"))
    tenant = client.get("/v1/autonomy/policy").json()["tenant"]
    assert (tenant["default_level"], tenant["max_level"]) == ("assisted", "expert")

    # a default above the maximum: the API's refusal, shown with its code
    Select(browser.find_element(By.ID, "tenant-default")).select_by_value("agent")
    browser.find_element(By.ID, "save-tenant").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "autonomy-status"), "default_above_maximum"))

    # rules: a tenant (task, context) rule and one of my own for the task
    def add_rule(owner: str, task: str, context: str, level: str) -> None:
        Select(browser.find_element(By.ID, "rule-owner")).select_by_value(owner)
        browser.find_element(By.ID, "rule-task").send_keys(task)
        if context:
            browser.find_element(By.ID, "rule-context").send_keys(context)
        Select(browser.find_element(By.ID, "rule-level")).select_by_value(level)
        browser.find_element(By.ID, "add-rule").click()

    add_rule("", "triage", "production", "collaborator")
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#rule-list tr[data-scope='tenant:task+context']")))
    add_rule("me", "triage", "", "agent")
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#rule-list tr[data-scope='user:task']")))
    rules = client.get("/v1/autonomy/rules").json()["data"]
    assert sorted((r["scope"], r["task"], r["context"], r["level"]) for r in rules) == [
        ("tenant:task+context", "triage", "production", "collaborator"), ("user:task", "triage", None, "agent")]

    def resolve(task: str, context: str) -> tuple[str, str]:
        browser.find_element(By.ID, "resolve-task").clear()
        browser.find_element(By.ID, "resolve-task").send_keys(task)
        browser.find_element(By.ID, "resolve-context").clear()
        browser.find_element(By.ID, "resolve-context").send_keys(context)
        old = browser.find_elements(By.ID, "resolved-level")
        browser.find_element(By.ID, "resolve").click()
        if old:
            _wait(browser).until(EC.staleness_of(old[0]))
        level = _wait(browser).until(EC.presence_of_element_located((By.ID, "resolved-level")))
        return str(level.get_attribute("data-level")), str(
            browser.find_element(By.ID, "resolved-scope").get_attribute("data-scope"))

    # the tenant's (task, context) rule beats my task rule; my task rule applies elsewhere, capped at expert
    for task, context in (("triage", "production"), ("triage", "staging"), ("", "")):
        shown = resolve(task, context)
        api = client.get("/v1/autonomy/resolve", params={"task": task, "context": context}).json()
        assert shown == (api["level"], api["rule"]["scope"]), (task, context, api)
    assert resolve("triage", "production") == ("collaborator", "tenant:task+context")
    assert resolve("triage", "staging")[0] == "expert"
    assert browser.find_element(By.ID, "resolved-capped").text  # the page says the maximum capped the rule
    _shot(browser, tmp_path, "autonomy")

    # delete both rules (two clicks each)
    for scope in ("tenant:task+context", "user:task"):
        button = browser.find_element(By.CSS_SELECTOR, f"#rule-list tr[data-scope='{scope}'] button[data-delete-rule]")
        button.click()
        assert button.text == "Confirm delete"
        button.click()
        _wait(browser).until(lambda d, s=scope: not d.find_elements(By.CSS_SELECTOR, f"#rule-list tr[data-scope='{s}']"))
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "rule-list"), "No rules yet"))
    assert client.get("/v1/autonomy/rules").json()["data"] == []
    _only_refusals_logged(browser, ("/v1/autonomy/tenant",), (422,))
