"""The web console in real headless Chromium against the real stack (gateway, Kafka, PostgreSQL, the model):
sign up, the verification link of the mail that arrived over SMTP signs in, sign out, sign in; chat streams text progressively and ends
with the API's text; an API key made in the page works and can be revoked; a second tenant sees none of the
first one's requests. Screenshots go to the test's tmp dir."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.conftest import Mailbox, SmtpMailbox, tenant_of

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery"
_n = itertools.count()
WATCH_STREAM = """
window.__partials = [];
const transcript = document.getElementById('transcript');
new MutationObserver(() => {
  const el = transcript.querySelector('.msg.assistant.streaming .text');
  if (!el) return;
  const text = el.textContent;
  const seen = window.__partials;
  if (text && seen[seen.length - 1] !== text) seen.push(text);
}).observe(transcript, {subtree: true, childList: true, characterData: true});
"""


def _email(tag: str) -> str:
    return f"console-{tag}-{os.getpid()}-{next(_n)}-{int(time.time())}@example.com"


def _wait(driver: Any, timeout: float = 30) -> WebDriverWait:
    return WebDriverWait(driver, timeout)


def _shot(driver: Any, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / f"{name}.png"))


def _to_pro(stack: Any, tenant_id: str) -> None:
    """The stack runs a worker for the pro tier only; self-service sign-ups start on free."""
    from gateway.tenants import set_tenant_tier
    from lotabots.db import make_engine
    from lotabots.tiers import get_tier_config

    async def run() -> None:
        engine = make_engine(stack.env["LOTABOTS_DATABASE_URL"])
        try:
            assert await set_tenant_tier(engine, get_tier_config(), tenant_id, "pro")
        finally:
            await engine.dispose()

    asyncio.run(run())


def _signed_in_as(driver: Any, email: str) -> None:
    _wait(driver).until(EC.text_to_be_present_in_element((By.ID, "nav"), email))


def sign_up_in_page(driver: Any, stack: Any, mailbox: SmtpMailbox, tmp_path: Path, tag: str) -> str:
    """Sign up in the page, follow the link of the mail that arrived over SMTP (it signs in); returns the email."""
    email = _email(tag)
    driver.get(f"{stack.gateway_url}/signup")
    _wait(driver).until(EC.presence_of_element_located((By.NAME, "email"))).send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    _wait(driver).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Check your mail"))
    _shot(driver, tmp_path, f"{tag}-signed-up")
    # the verification mail, as it arrived over SMTP (the stack's mailer -> the development SMTP server)
    _, link = mailbox.link(email, "/account/verify-email")
    assert link.startswith(f"{stack.gateway_url}/account/verify-email#token="), link
    _to_pro(stack, tenant_of(stack, email))
    driver.get(link)  # follow the mailed link itself
    _signed_in_as(driver, email)
    assert "token" not in driver.current_url  # the one-time token left the address bar at once
    return email


def sign_out_then_in(driver: Any, stack: Any, email: str) -> None:
    driver.find_element(By.CSS_SELECTOR, "#nav a[href='/account']").click()
    _wait(driver).until(EC.element_to_be_clickable((By.ID, "signout"))).click()
    _wait(driver).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Signed out."))
    assert driver.get_cookie("lb_csrf") is None
    box = _wait(driver).until(EC.presence_of_element_located((By.NAME, "email")))
    box.send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD, Keys.ENTER)  # the keyboard submits
    _signed_in_as(driver, email)


def _api_token(stack: Any, email: str) -> str:
    r = httpx.post(f"{stack.gateway_url}/v1/auth/login", json={"email": email, "password": PASSWORD}, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["access_token"]


def _no_console_errors(driver: Any) -> None:
    bad = [e["message"] for e in driver.get_log("browser")
           if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert not bad, bad


def test_chat_streams_progressively_and_ends_with_the_api_text(browser: Any, stack: Any, mailbox: Mailbox,
                                                               tmp_path: Path) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "chat")
    sign_out_then_in(browser, stack, email)
    # the refresh cookie is HttpOnly, scoped to /v1/auth; the page holds no token in web storage
    jar = browser.execute_cdp_cmd("Network.getCookies", {"urls": [f"{stack.gateway_url}/v1/auth/refresh"]})
    refresh = next(c for c in jar["cookies"] if c["name"] == "lb_refresh")
    assert refresh["httpOnly"] and refresh["path"] == "/v1/auth" and refresh["sameSite"] == "Strict"
    assert browser.get_cookie("lb_refresh") is None  # not even visible on the page's own paths
    assert browser.execute_script("return window.localStorage.length + window.sessionStorage.length") == 0
    assert "lb_refresh" not in browser.execute_script("return document.cookie")

    _wait(browser).until(EC.presence_of_element_located((By.ID, "message")))
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "history"), "No requests yet"))
    _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    browser.find_element(By.ID, "max-tokens").clear()
    browser.find_element(By.ID, "max-tokens").send_keys("48")
    browser.execute_script(WATCH_STREAM)
    browser.find_element(By.ID, "message").send_keys("Write a short poem about the sea.")
    browser.find_element(By.ID, "send").click()
    done = _wait(browser, 180).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, ".msg.assistant[data-status='succeeded']")))
    _shot(browser, tmp_path, "chat-done")
    request_id = done.get_attribute("data-request-id")
    shown = browser.execute_script("return arguments[0].querySelector('.text').textContent", done)
    partials = browser.execute_script("return window.__partials")

    r = httpx.get(f"{stack.gateway_url}/v1/requests/{request_id}", timeout=30,
                  headers={"Authorization": f"Bearer {_api_token(stack, email)}"})
    assert r.status_code == 200, r.text
    final = r.json()
    assert final["status"] == "succeeded"
    assert shown == final["output"]["text"] and shown
    distinct = [p for p in dict.fromkeys(partials) if p != shown]
    assert len(distinct) >= 2, f"partial texts seen before completion: {partials!r}"
    assert all(shown.startswith(p) for p in distinct), partials  # the text only grew (no restart)

    # the history lists the conversation; reopening it shows both turns
    item = _wait(browser).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f"#history [data-request-ids~='{request_id}']")))
    assert item.get_attribute("data-conversation") == final["conversation_id"]

    # a reload restores the session from the HttpOnly cookie (the access token lived only in memory)
    browser.refresh()
    _signed_in_as(browser, email)
    _wait(browser).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f"#history [data-request-ids~='{request_id}']"))).click()
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .msg")) == 2)

    # 375 px wide: nothing overflows sideways
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True})
    time.sleep(0.3)
    assert browser.execute_script("return document.documentElement.scrollWidth") <= 375
    _shot(browser, tmp_path, "chat-375px")
    _no_console_errors(browser)


def test_api_key_made_in_the_page_works_and_revokes(browser: Any, stack: Any, mailbox: Mailbox,
                                                    tmp_path: Path) -> None:
    sign_up_in_page(browser, stack, mailbox, tmp_path, "keys")
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/keys']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "key-list"), "No API keys yet"))
    browser.find_element(By.ID, "key-name").send_keys("ci key")
    browser.find_element(By.ID, "create-key").click()
    key = _wait(browser).until(EC.presence_of_element_located((By.ID, "new-key"))).get_attribute("value")
    assert key.startswith("lbk_")
    assert browser.find_element(By.ID, "copy-key").is_displayed()
    row = _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#key-list tr[data-key-id]")))
    assert "ci key" in row.text and key.split("_")[1] in row.text
    assert key not in browser.find_element(By.ID, "key-list").text  # the list shows the prefix only
    _shot(browser, tmp_path, "keys-created")

    r = httpx.get(f"{stack.gateway_url}/v1/requests", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["data"] == []

    revoke = row.find_element(By.CSS_SELECTOR, "button[data-revoke]")
    revoke.click()
    assert revoke.text == "Confirm revoke"
    revoke.click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "key-list"), "No API keys yet"))
    # revoked: refused once the gateway's 5 s API-key cache lets go (docs/auth.md, known limits)
    deadline = time.monotonic() + 15
    while True:
        r = httpx.get(f"{stack.gateway_url}/v1/requests", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        if r.status_code == 401 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert r.status_code == 401, r.text
    _no_console_errors(browser)


def test_a_second_tenant_never_sees_the_first_ones_requests(browser: Any, stack: Any, mailbox: Mailbox,
                                                            tmp_path: Path) -> None:
    # tenant A: a request through the API
    email_a = _email("tenant-a")
    r = httpx.post(f"{stack.gateway_url}/v1/auth/register", json={"email": email_a, "password": PASSWORD}, timeout=30)
    assert r.status_code == 202
    token, tenant_a = mailbox.verification(email_a)
    _to_pro(stack, tenant_a)
    assert httpx.post(f"{stack.gateway_url}/v1/auth/verify-email", json={"token": token}, timeout=30).status_code == 204
    a = {"Authorization": f"Bearer {_api_token(stack, email_a)}"}
    r = httpx.post(f"{stack.gateway_url}/v1/requests", headers=a, timeout=30,
                   json={"messages": [{"role": "user", "content": "tenant A secret question"}], "max_tokens": 4,
                         "conversation_id": "tenant-a-conversation"})
    assert r.status_code == 202, r.text
    a_request = r.json()["id"]

    # tenant B in the page: its history is empty, and A's request is nowhere in the UI
    sign_up_in_page(browser, stack, mailbox, tmp_path, "tenant-b")
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "history"), "No requests yet"))
    page = browser.page_source
    assert a_request not in page and "tenant A secret question" not in page and "tenant-a-conversation" not in page
    _shot(browser, tmp_path, "tenant-b-empty-history")
    _no_console_errors(browser)
