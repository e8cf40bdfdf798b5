"""The chat's cancel and its per-conversation history, in real headless Chromium against the real stack:
cancel a running streamed request (the API then says `canceled`); a follow-up in the same conversation sends
the history with the same `conversation_id`; a new conversation is listed apart, and reopening the first
shows its turns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC

from tests.console.conftest import SmtpMailbox
from tests.console.test_console_browser import _api_token, _no_console_errors, _shot, _wait, sign_up_in_page

pytestmark = pytest.mark.integration


def _send(driver: Any, text: str, max_tokens: int) -> None:
    box = driver.find_element(By.ID, "max-tokens")
    box.clear()
    box.send_keys(str(max_tokens))
    driver.find_element(By.ID, "message").send_keys(text)
    _wait(driver).until(EC.element_to_be_clickable((By.ID, "send"))).click()


def _assistant(driver: Any, n: int, status: str, timeout: float = 180) -> Any:
    """The n-th (1-based) assistant message once it has `status`."""
    return _wait(driver, timeout).until(lambda d: next(iter(
        e for i, e in enumerate(d.find_elements(By.CSS_SELECTOR, "#transcript .msg.assistant"), 1)
        if i == n and e.get_attribute("data-status") == status), None))


def test_cancel_and_conversation_history(browser: Any, stack: Any, mailbox: SmtpMailbox, tmp_path: Path) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "chat-history")
    api = httpx.Client(base_url=stack.gateway_url, timeout=60,
                       headers={"Authorization": f"Bearer {_api_token(stack, email)}"})
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "history"), "No requests yet"))
    _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model option"))
    conversation = browser.find_element(By.ID, "conversation-id").text

    # a long reply, canceled once its first tokens are on screen
    _send(browser, "Tell me a long story about a lighthouse keeper.", 1024)
    _wait(browser, 180).until(lambda d: d.find_elements(
        By.CSS_SELECTOR, ".msg.assistant.streaming .text") and d.find_element(
        By.CSS_SELECTOR, ".msg.assistant.streaming .text").text.strip())
    _wait(browser).until(EC.element_to_be_clickable((By.ID, "cancel"))).click()
    canceled = _assistant(browser, 1, "canceled")
    first_id = canceled.get_attribute("data-request-id")
    partial = browser.execute_script("return arguments[0].querySelector('.text').textContent", canceled)
    assert "Canceled" in canceled.text
    r = api.get(f"/v1/requests/{first_id}").json()
    assert r["status"] == "canceled" and r["conversation_id"] == conversation
    _shot(browser, tmp_path, "chat-canceled")

    # a follow-up in the same conversation carries the history, the same conversation id
    _send(browser, "Now in one sentence.", 8)
    second_id = _assistant(browser, 2, "succeeded").get_attribute("data-request-id")
    second = api.get(f"/v1/requests/{second_id}").json()
    assert second["conversation_id"] == conversation
    sent = second["input"]["messages"]
    assert sent[0]["content"] == "Tell me a long story about a lighthouse keeper."
    assert sent[-1]["content"] == "Now in one sentence."
    if partial:
        assert sent[1] == {"role": "assistant", "content": partial}

    # a new conversation is listed apart
    browser.find_element(By.ID, "new-conversation").click()
    _wait(browser).until(lambda d: d.find_element(By.ID, "conversation-id").text != conversation)
    _send(browser, "A different topic: name a colour.", 8)
    third_id = _assistant(browser, 1, "succeeded").get_attribute("data-request-id")
    assert api.get(f"/v1/requests/{third_id}").json()["conversation_id"] != conversation
    item = _wait(browser).until(EC.presence_of_element_located(
        (By.CSS_SELECTOR, f"#history [data-conversation='{conversation}']")))
    _wait(browser).until(lambda d: set(d.find_element(
        By.CSS_SELECTOR, f"#history [data-conversation='{conversation}']").get_attribute("data-request-ids").split())
        == {first_id, second_id})
    assert len(browser.find_elements(By.CSS_SELECTOR, "#history .history-item")) == 2

    # reopening the first conversation shows its turns (the newest request's input and its reply)
    item = browser.find_element(By.CSS_SELECTOR, f"#history [data-conversation='{conversation}']")
    item.click()
    _wait(browser).until(lambda d: d.find_element(By.ID, "conversation-id").text == conversation)
    expected = len(sent) + (1 if second["output"] and second["output"]["text"] else 0)
    _wait(browser).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#transcript .msg")) == expected)
    _shot(browser, tmp_path, "chat-history")
    _no_console_errors(browser)
