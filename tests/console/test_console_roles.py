"""Roles and tenants in the console, real headless Chromium against the real stack: an owner invites a member on
the Team page; the member's navigation has no admin or finance pages, opening them by URL says
insufficient_role, and the API refuses anyway; the owner changes the member's role and disables them in the
page. A second tenant's usage and webhooks pages show none of the first tenant's data."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.console.conftest import Mailbox
from tests.console.test_console_browser import (
    PASSWORD,
    _api_token,
    _email,
    _no_console_errors,
    _shot,
    _signed_in_as,
    _to_pro,
    _wait,
    sign_up_in_page,
)
from tests.console.test_console_usage import make_usage, page_shot
from tests.usage_pipeline import UsagePipeline

pytestmark = pytest.mark.integration

ADMIN_PAGES = ("/keys", "/team", "/finance")


def invitation_token(stack: Any, email: str, timeout_s: float = 60) -> str:
    """The token of the newest invitation mail to `email` (on `auth.events`, as the mailer reads it)."""
    from aiokafka import AIOKafkaConsumer

    from schemas.auth_events import AuthEvent, AuthEventType
    from schemas.topics import AUTH_EVENTS

    async def find() -> str:
        consumer = AIOKafkaConsumer(AUTH_EVENTS, bootstrap_servers=stack.env["LOTABOTS_KAFKA_BOOTSTRAP"],
                                    auto_offset_reset="earliest", enable_auto_commit=False, group_id=None)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                for messages in (await consumer.getmany(timeout_ms=500)).values():
                    for m in messages:
                        event = AuthEvent.model_validate_json(m.value)
                        if event.type == AuthEventType.USER_INVITED and event.email == email and event.link:
                            return event.link.rsplit("token=", 1)[1]
            raise AssertionError(f"no invitation mail for {email}")
        finally:
            await consumer.stop()

    return asyncio.run(find())


def _sign_out(driver: Any) -> None:
    driver.find_element(By.CSS_SELECTOR, "#nav a[href='/account']").click()
    _wait(driver).until(EC.element_to_be_clickable((By.ID, "signout"))).click()
    _wait(driver).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Signed out."))


def _sign_in(driver: Any, email: str) -> None:
    _wait(driver).until(EC.presence_of_element_located((By.NAME, "email"))).send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD, Keys.ENTER)
    _signed_in_as(driver, email)


def _until(driver: Any, condition: Any, timeout: float = 30) -> Any:
    """WebDriverWait that also retries when the list re-rendered under the condition (a stale element)."""
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException]).until(condition)


def _row(driver: Any, container: str, email: str) -> Any:
    return _until(driver, lambda d: next((r for r in d.find_elements(By.CSS_SELECTOR, f"#{container} tr[data-user-id]")
                                          if email in r.text), None))


def test_a_member_cannot_reach_admin_or_finance_pages(browser: Any, stack: Any, mailbox: Mailbox,
                                                      tmp_path: Path, usage_pipeline: UsagePipeline) -> None:
    owner = sign_up_in_page(browser, stack, mailbox, tmp_path, "owner")
    nav = {a.get_attribute("pathname") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")}
    assert {"/chat", "/keys", "/webhooks", "/usage", "/finance", "/team", "/account"} <= nav

    # the owner invites a member on the Team page
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/team']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "invite-list"), "No pending invitations"))
    member = _email("member")
    browser.find_element(By.ID, "invite-email").send_keys(member)
    Select(browser.find_element(By.ID, "invite-role")).select_by_value("member")
    browser.find_element(By.ID, "invite").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "invite-form"), f"Invitation mailed to {member}"))
    assert "member" in _row(browser, "invite-list", member).text
    assert owner in _row(browser, "user-list", owner).text
    page_shot(browser, tmp_path / "team.png")

    # the invitee sets a password with the mailed token (the accept-invitation flow of the API)
    token = invitation_token(stack, member)
    r = httpx.post(f"{stack.gateway_url}/v1/auth/password/reset", json={"token": token, "new_password": PASSWORD},
                   timeout=30)
    assert r.status_code == 204, r.text

    _sign_out(browser)
    _sign_in(browser, member)
    nav = {a.get_attribute("pathname") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")}
    assert not nav & set(ADMIN_PAGES), nav  # navigation hides what a member cannot use
    assert {"/chat", "/usage", "/webhooks", "/account"} <= nav
    for path in ADMIN_PAGES:  # opened by URL: the page says so
        browser.get(f"{stack.gateway_url}{path}")
        _signed_in_as(browser, member)
        _wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main .error-code"), "insufficient_role"))
        assert "Not available" in browser.find_element(By.TAG_NAME, "h1").text
    _shot(browser, tmp_path, "member-finance-refused")
    # a member's usage page has no invoice (billing:read), and the webhooks page no endpoint form (admin)
    browser.get(f"{stack.gateway_url}/usage")
    _wait(browser).until(EC.presence_of_element_located((By.ID, "usage-totals")))
    try:
        _wait(browser, 60).until(lambda d: d.find_element(By.ID, "usage-charts").get_attribute("data-requests") is not None)
    except Exception:
        raise AssertionError(browser.find_element(By.TAG_NAME, "main").text + repr(browser.get_log("browser"))) from None
    assert not browser.find_elements(By.ID, "invoice-form")
    browser.get(f"{stack.gateway_url}/webhooks")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "endpoint-list"), "No webhook endpoints yet"))
    assert not browser.find_elements(By.ID, "endpoint-form")

    # the API refuses a member anyway
    m = {"Authorization": f"Bearer {_api_token(stack, member)}"}
    for method, path, kw in (("GET", "/v1/users", {}), ("GET", "/v1/api-keys", {}),
                             ("POST", "/v1/analytics/sql", {"json": {"sql": "SELECT 1"}}),
                             ("GET", "/v1/billing/invoices", {"params": {"period": "2026-01"}}),
                             ("POST", "/v1/webhooks/endpoints", {"json": {"url": "https://example.com/h"}})):
        r = httpx.request(method, f"{stack.gateway_url}{path}", headers=m, timeout=30, **kw)
        assert r.status_code == 403 and r.json()["error"]["code"] in ("insufficient_scope", "insufficient_role"), (path, r.text)
    _no_console_errors(browser)

    # the owner makes the member finance, then disables them, in the page
    _sign_out(browser)
    _sign_in(browser, owner)
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/team']").click()
    row = _row(browser, "user-list", member)
    user_id = row.get_attribute("data-user-id")
    Select(row.find_element(By.CSS_SELECTOR, "select[data-role-of]")).select_by_value("finance")
    row.find_element(By.CSS_SELECTOR, "button[data-save-role]").click()
    o = {"Authorization": f"Bearer {_api_token(stack, owner)}"}
    _wait(browser).until(lambda d: httpx.get(f"{stack.gateway_url}/v1/users/{user_id}", headers=o,
                                             timeout=30).json()["role"] == "finance")
    _until(browser, lambda d: Select(_row(d, "user-list", member).find_element(
        By.CSS_SELECTOR, "select[data-role-of]")).first_selected_option.text == "finance")

    # as finance: usage (with the invoice) and finance SQL, no chat, keys, webhooks or team
    _sign_out(browser)
    _sign_in(browser, member)
    _wait(browser).until(EC.presence_of_element_located((By.ID, "usage-totals")))  # finance's home is /usage
    nav = {a.get_attribute("pathname") for a in browser.find_elements(By.CSS_SELECTOR, "#nav a")}
    assert nav == {"/usage", "/finance", "/account"}, nav
    _wait(browser, 60).until(EC.presence_of_element_located((By.ID, "invoice-form")))
    for path in ("/chat", "/keys", "/team", "/webhooks"):
        browser.get(f"{stack.gateway_url}{path}")
        _signed_in_as(browser, member)
        _wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "main .error-code"), "insufficient_role"))
    _no_console_errors(browser)
    _sign_out(browser)
    _sign_in(browser, owner)
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/team']").click()
    # an admin-forced reset: two clicks; the password stops working, the user stays a user (not an invitation)
    reset = _row(browser, "user-list", member).find_element(By.CSS_SELECTOR, "button[data-force-reset]")
    reset.click()
    assert reset.text == "Confirm reset"
    reset.click()
    _until(browser, lambda d: _row(d, "user-list", member).find_element(By.CLASS_NAME, "user-state").text
           == "password reset pending")
    assert httpx.get(f"{stack.gateway_url}/v1/users/{user_id}", headers=o, timeout=30).json()["password_set"] is False
    r = httpx.post(f"{stack.gateway_url}/v1/auth/login", json={"email": member, "password": PASSWORD}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    disable = _row(browser, "user-list", member).find_element(By.CSS_SELECTOR, "button[data-disable]")
    disable.click()
    assert disable.text == "Confirm disable"  # two clicks: no accidental disabling
    disable.click()
    _until(browser, lambda d: _row(d, "user-list", member).find_element(By.CLASS_NAME, "user-state").text == "disabled")
    assert httpx.get(f"{stack.gateway_url}/v1/users/{user_id}", headers=o, timeout=30).json()["active"] is False
    r = httpx.post(f"{stack.gateway_url}/v1/auth/login", json={"email": member, "password": PASSWORD}, timeout=30)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    # no owner can disable themselves in the page (a tenant keeps its owner)
    assert not _row(browser, "user-list", owner).find_elements(By.CSS_SELECTOR, "button[data-disable]")
    _no_console_errors(browser)


def test_a_second_tenant_sees_none_of_the_first_ones_usage_or_webhooks(browser: Any, stack: Any,
                                                                      mailbox: Mailbox, tmp_path: Path,
                                                                      usage_pipeline: UsagePipeline) -> None:
    # tenant A: billed requests through the API
    email_a = _email("usage-a")
    r = httpx.post(f"{stack.gateway_url}/v1/auth/register", json={"email": email_a, "password": PASSWORD}, timeout=30)
    assert r.status_code == 202
    token, tenant_a = mailbox.verification(email_a)
    _to_pro(stack, tenant_a)
    assert httpx.post(f"{stack.gateway_url}/v1/auth/verify-email", json={"token": token}, timeout=30).status_code == 204
    a = httpx.Client(base_url=stack.gateway_url, timeout=30,
                     headers={"Authorization": f"Bearer {_api_token(stack, email_a)}"})
    done = make_usage(a, 1, conversation="tenant-a-usage-conversation")

    # tenant B in the page: no usage, no deliveries, nothing of A's anywhere
    sign_up_in_page(browser, stack, mailbox, tmp_path, "usage-b")
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/usage']").click()
    _wait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "usage-charts"), "No usage between"))
    shown = {dd.get_attribute("data-total"): dd.text for dd in browser.find_elements(By.CSS_SELECTOR, "#usage-totals dd")}
    assert shown["requests"] == "0" and shown["prompt_tokens"] == "0" and shown["completion_tokens"] == "0"
    _wait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "invoice"), "No invoice lines"))
    page = browser.page_source
    assert tenant_a not in page and done[0]["id"] not in page
    _shot(browser, tmp_path, "tenant-b-usage")

    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/finance']").click()
    _wait(browser).until(EC.presence_of_element_located((By.ID, "run-sql"))).click()
    _wait(browser, 60).until(EC.text_to_be_present_in_element((By.ID, "sql-status"), "0 rows"))
    assert tenant_a not in browser.page_source

    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/webhooks']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "delivery-list"), "No deliveries yet"))
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "endpoint-list"), "No webhook endpoints yet"))
    page = browser.page_source
    assert tenant_a not in page and done[0]["id"] not in page and "tenant-a-usage-conversation" not in page
    _no_console_errors(browser)
