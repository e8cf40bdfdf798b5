"""The webhooks page in real headless Chromium against the real stack and dispatcher: create an endpoint (the
secret is shown once and signs the deliveries), a delivery that failed every attempt shows as failed with its
attempts, replay makes it succeed with the same webhook-id, rotate the secret, disable/enable, delete.

The console is served by a second gateway whose allow-list admits the loopback receiver (the session's main
gateway keeps the SSRF guard as production has it, docs/webhooks.md)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from lotabots.client import verify_webhook
from tests.console.conftest import Mailbox
from tests.console.test_console_browser import (
    PASSWORD,
    _email,
    _no_console_errors,
    _shot,
    _signed_in_as,
    _to_pro,
)
from tests.console.test_console_usage import page_shot
from tests.services import free_ports
from tests.stack import Stack, StackProcess
from tests.webhooks.receiver import Answer, Receiver

pytestmark = pytest.mark.integration

ALLOW_LOOPBACK = {"LOTABOTS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32"}
HOOK = "/console-hook"


def _wait(driver: Any, timeout: float = 30) -> WebDriverWait:
    """Also retries when a list re-rendered under the condition (the page replaces it after each action)."""
    return WebDriverWait(driver, timeout, ignored_exceptions=[StaleElementReferenceException])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def hook_console(stack: Stack) -> Iterator[str]:
    """A gateway (and so a console) that may send to loopback, and a dispatcher with a short schedule."""
    port = free_ports(1)[0]
    gateway = stack.spawn("gateway-console-hooks", "serve", "gateway",
                          extra_env={**ALLOW_LOOPBACK, "LOTABOTS_GATEWAY_PORT": str(port)})
    dispatcher: StackProcess = stack.spawn("webhooks-console", "worker", "webhooks", extra_env={
        **ALLOW_LOOPBACK, "LOTABOTS_WEBHOOK_RETRY_SCHEDULE_S": "0.5,1.5", "LOTABOTS_WEBHOOK_RETRY_JITTER": "0.1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"console webhook gateway not ready: {stack.tail('gateway-console-hooks')}")
        time.sleep(0.2)
    yield url
    dispatcher.stop()
    gateway.stop()


ROWS = """return [...document.querySelectorAll('#delivery-list tr[data-delivery-id]')]
  .map((r) => ({id: r.dataset.deliveryId, status: r.dataset.status, attempts: r.cells[3].textContent, text: r.textContent}));"""


def _delivery(driver: Any, status: str, attempts: int) -> dict[str, str] | None:
    """The delivery list's one row once it has exactly this status and attempt count (read in one snapshot);
    otherwise reload the list (the Filter button) for the next look."""
    rows = driver.execute_script(ROWS)
    if len(rows) == 1 and rows[0]["status"] == status and rows[0]["attempts"] == str(attempts):
        return dict(rows[0])
    driver.find_element(By.CSS_SELECTOR, "#delivery-filters button[type=submit]").click()
    return None


def test_webhook_endpoints_deliveries_and_replay_in_the_page(browser: Any, stack: Stack, mailbox: Mailbox,
                                                             tmp_path: Path, hook_console: str,
                                                             receiver: Receiver) -> None:
    email = _email("hooks")
    r = httpx.post(f"{hook_console}/v1/auth/register", json={"email": email, "password": PASSWORD}, timeout=30)
    assert r.status_code == 202
    token, tenant_id = mailbox.verification(email)
    _to_pro(stack, tenant_id)
    browser.get(f"{hook_console}/account/verify-email#token={token}")
    _signed_in_as(browser, email)
    browser.find_element(By.CSS_SELECTOR, "#nav a[href='/webhooks']").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "endpoint-list"), "No webhook endpoints yet"))
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "delivery-list"), "No deliveries yet"))

    # a private address is refused by the guard: the API's message and code
    browser.find_element(By.ID, "endpoint-url").send_keys("http://10.1.2.3/hook")
    browser.find_element(By.ID, "create-endpoint").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.CSS_SELECTOR, "#endpoint-form .error-code"),
                                                          "webhook_url_forbidden"))
    browser.get_log("browser")  # that 422 is expected

    # create: the secret is shown once
    receiver.script(HOOK, Answer(500), Answer(500), Answer(500), Answer(200))
    box = browser.find_element(By.ID, "endpoint-url")
    box.clear()
    box.send_keys(receiver.url(HOOK))
    browser.find_element(By.ID, "endpoint-description").send_keys("console test")
    browser.find_element(By.CSS_SELECTOR, "#endpoint-form input[value='succeeded']").click()
    browser.find_element(By.ID, "endpoint-all").click()
    browser.find_element(By.ID, "create-endpoint").click()
    secret = _wait(browser).until(EC.presence_of_element_located((By.ID, "new-secret"))).get_attribute("value")
    assert secret.startswith("whsec_") and browser.find_element(By.ID, "copy-secret").is_displayed()
    row = _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#endpoint-list tr[data-endpoint-id]")))
    endpoint_id = row.get_attribute("data-endpoint-id")
    assert receiver.url(HOOK) in row.text and "succeeded" in row.text and "enabled" in row.text
    assert secret not in browser.find_element(By.ID, "endpoint-list").text
    _shot(browser, tmp_path, "webhooks-created")

    # a request; its succeeded event fails three times: the log shows it failed after 3 attempts
    api = httpx.Client(base_url=hook_console, timeout=30)
    api.headers["Authorization"] = "Bearer " + api.post(
        "/v1/auth/login", json={"email": email, "password": PASSWORD}).json()["access_token"]
    r = api.post("/v1/requests", json={"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 3})
    assert r.status_code == 202, r.text
    request_id = r.json()["id"]
    row = _wait(browser, 240).until(lambda d: _delivery(d, "failed", 3))
    assert request_id in row["text"] and "500" in row["text"]
    delivery_id = row["id"]
    _wait(browser).until(EC.element_to_be_clickable(
        (By.XPATH, f"//tr[@data-delivery-id='{delivery_id}']//button[text()='Attempts']"))).click()
    log = _wait(browser).until(EC.presence_of_element_located((By.ID, "attempt-log")))
    assert [tr.find_elements(By.TAG_NAME, "td")[2].text for tr in log.find_elements(By.CSS_SELECTOR, "tbody tr")] == \
        ["500", "500", "500"]
    _shot(browser, tmp_path, "webhooks-failed")

    # replay: one more attempt, the same webhook-id, signed with the secret shown at creation
    _wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, f"button[data-replay='{delivery_id}']"))).click()
    _wait(browser, 60).until(lambda d: _delivery(d, "succeeded", 4))
    _wait(browser).until(lambda d: d.execute_script(  # the open attempt log follows the list
        "return [...document.querySelectorAll('#attempt-log tbody tr')].map((r) => r.cells[2].textContent)")
        == ["500", "500", "500", "200"])
    got = receiver.at(HOOK)
    assert len(got) == 4 and {g.webhook_id for g in got} == {delivery_id}
    event = verify_webhook(got[-1].headers, got[-1].body, secret)
    assert event["type"] == "request.succeeded" and event["data"]["id"] == request_id

    # rotate: a new secret, shown once; two live secrets during the overlap
    browser.find_element(By.CSS_SELECTOR, f"button[data-rotate='{endpoint_id}']").click()
    _wait(browser).until(lambda d: d.find_element(By.ID, "new-secret").get_attribute("value") not in ("", secret))
    assert browser.find_element(By.ID, "new-secret").get_attribute("value").startswith("whsec_")
    _wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"tr[data-endpoint-id='{endpoint_id}']"), "2 live"))

    # disable, enable
    browser.find_element(By.CSS_SELECTOR, f"button[data-toggle='{endpoint_id}']").click()
    _wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"tr[data-endpoint-id='{endpoint_id}'] .endpoint-state"), "disabled"))
    assert api.get(f"/v1/webhooks/endpoints/{endpoint_id}").json()["enabled"] is False
    browser.find_element(By.CSS_SELECTOR, f"button[data-toggle='{endpoint_id}']").click()
    _wait(browser).until(EC.text_to_be_present_in_element(
        (By.CSS_SELECTOR, f"tr[data-endpoint-id='{endpoint_id}'] .endpoint-state"), "enabled"))
    assert api.get(f"/v1/webhooks/endpoints/{endpoint_id}").json()["enabled"] is True
    browser.find_element(By.XPATH, "//button[text()='Done, hide it']").click()  # no secret in the screenshot
    _wait(browser).until(lambda d: not d.find_elements(By.ID, "new-secret"))
    page_shot(browser, tmp_path / "webhooks.png")

    # delete (two clicks)
    delete = browser.find_element(By.CSS_SELECTOR, f"button[data-delete='{endpoint_id}']")
    delete.click()
    assert delete.text == "Confirm delete"
    delete.click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "endpoint-list"), "No webhook endpoints yet"))
    assert api.get(f"/v1/webhooks/endpoints/{endpoint_id}").status_code == 404
    _no_console_errors(browser)
