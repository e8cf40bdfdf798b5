"""Password pages in real headless Chromium against the real stack, with the mails arriving over real SMTP
(the stack's mailer -> the development SMTP server): forgot password -> the reset mail -> follow its link
(the token leaves the address bar at once) -> a new password -> every old session is signed out (an old
refresh token and an old access token are refused) and the new password signs in; change password on
/account; an invitation mail's link lands on the accept-invitation page, which sets the invitee's password;
a locked-out sign-in shows the API's code and the retry time. Screenshots go to the test's tmp dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC

from tests.console.conftest import SmtpMailbox
from tests.console.test_console_browser import (
    PASSWORD,
    _email,
    _no_console_errors,
    _shot,
    _signed_in_as,
    _wait,
    sign_up_in_page,
)

pytestmark = pytest.mark.integration

NEW_PASSWORD = "a brand new passphrase"
THIRD_PASSWORD = "yet another passphrase"


def _only_refusals_logged(driver: Any, paths: tuple[str, ...], statuses: tuple[int, ...]) -> None:
    """No CSP violation or script error; the only SEVERE entries are the browser's own notes of the API
    refusals the test provoked (Chromium logs every 4xx answer to fetch)."""
    bad = [e["message"] for e in driver.get_log("browser")
           if (e["level"] == "SEVERE" or "Content Security Policy" in e["message"])
           and not (any(p in e["message"] for p in paths) and any(f"status of {s}" in e["message"] for s in statuses))]
    assert not bad, bad


def _login(stack: Any, email: str, password: str) -> httpx.Response:
    return httpx.post(f"{stack.gateway_url}/v1/auth/login", json={"email": email, "password": password}, timeout=30)


def _sign_out_in_page(driver: Any) -> None:
    driver.find_element(By.CSS_SELECTOR, "#nav a[href='/account']").click()
    _wait(driver).until(EC.element_to_be_clickable((By.ID, "signout"))).click()
    _wait(driver).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Signed out."))


def _sign_in_in_page(driver: Any, email: str, password: str) -> None:
    _wait(driver).until(EC.presence_of_element_located((By.NAME, "email"))).send_keys(email)
    driver.find_element(By.NAME, "password").send_keys(password, Keys.ENTER)


def _set_password(driver: Any, password: str) -> None:
    box = _wait(driver).until(EC.presence_of_element_located((By.NAME, "new_password")))
    box.send_keys(password)
    driver.find_element(By.NAME, "new_password_again").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "#set-password-form button[type=submit]").click()


def test_forgot_password_mail_reset_signs_out_old_sessions(browser: Any, stack: Any, mailbox: SmtpMailbox,
                                                           tmp_path: Path) -> None:
    email = sign_up_in_page(browser, stack, mailbox, tmp_path, "reset")
    # an old session elsewhere (an API client): its refresh and access tokens
    old = _login(stack, email, PASSWORD).json()
    assert httpx.get(f"{stack.gateway_url}/v1/auth/me", timeout=30,
                     headers={"Authorization": f"Bearer {old['access_token']}"}).status_code == 200
    _sign_out_in_page(browser)

    # forgot password, from the sign-in page
    _wait(browser).until(EC.element_to_be_clickable((By.CSS_SELECTOR, "main a[href='/account/forgot-password']"))).click()
    _wait(browser).until(EC.presence_of_element_located((By.CSS_SELECTOR, "#forgot-form input[name=email]"))).send_keys(email)
    browser.find_element(By.CSS_SELECTOR, "#forgot-form button[type=submit]").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "forgot-form-status"), "Check your mail"))
    _shot(browser, tmp_path, "forgot-password")

    # the reset mail arrived over SMTP; its link opens the page, which drops the token from the address bar
    _, link = mailbox.link(email, "/account/reset-password")
    assert link.startswith(f"{stack.gateway_url}/account/reset-password#token="), link
    browser.get(link)
    _wait(browser).until(EC.presence_of_element_located((By.NAME, "new_password")))
    assert "token" not in browser.current_url
    assert browser.execute_script("return location.hash") == ""
    _shot(browser, tmp_path, "reset-password")
    _set_password(browser, NEW_PASSWORD)
    _wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "every session was signed out"))
    assert browser.current_url.endswith("/signin")

    # old sessions are over: the old refresh token is refused at once, the old access token as soon as the
    # gateway's revocation poll sees the revoked session (docs/auth.md, auth_revocation_poll_s)
    r = httpx.post(f"{stack.gateway_url}/v1/auth/refresh", json={"refresh_token": old["refresh_token"]}, timeout=30)
    assert r.status_code == 401, r.text
    _wait(browser, 30).until(lambda d: httpx.get(
        f"{stack.gateway_url}/v1/requests", timeout=30,
        headers={"Authorization": f"Bearer {old['access_token']}"}).status_code == 401)
    assert _login(stack, email, PASSWORD).status_code == 401  # the old password is gone

    # the new password signs in (in the page)
    _sign_in_in_page(browser, email, NEW_PASSWORD)
    _signed_in_as(browser, email)

    # the same link a second time: the API's code, shown
    browser.get(link)
    _set_password(browser, THIRD_PASSWORD)
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "set-password-form-status"), "invalid_or_expired_token"))

    # change password on /account (the signed-in session stays, the new password works)
    browser.get(f"{stack.gateway_url}/account")
    _signed_in_as(browser, email)
    _wait(browser).until(EC.presence_of_element_located((By.ID, "current-password"))).send_keys("not the password")
    browser.find_element(By.ID, "new-password").send_keys(THIRD_PASSWORD)
    browser.find_element(By.ID, "new-password-again").send_keys(THIRD_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#change-password-form button[type=submit]").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "change-password-form-status"), "current_password_incorrect"))
    current = browser.find_element(By.ID, "current-password")
    current.clear()
    current.send_keys(NEW_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#change-password-form button[type=submit]").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "change-password-form-status"), "Password changed"))
    _shot(browser, tmp_path, "account-change-password")
    assert _login(stack, email, NEW_PASSWORD).status_code == 401
    assert _login(stack, email, THIRD_PASSWORD).status_code == 200
    _only_refusals_logged(browser, ("/v1/auth/password/reset", "/v1/auth/password/change"), (400, 403))


def test_invitation_link_sets_a_password(browser: Any, stack: Any, mailbox: SmtpMailbox, tmp_path: Path) -> None:
    owner = sign_up_in_page(browser, stack, mailbox, tmp_path, "inviter")
    token = _login(stack, owner, PASSWORD).json()["access_token"]
    invitee = _email("invitee")
    r = httpx.post(f"{stack.gateway_url}/v1/users", json={"email": invitee, "role": "member"}, timeout=30,
                   headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 201, r.text
    _sign_out_in_page(browser)

    _, link = mailbox.link(invitee, "/account/accept-invitation")
    assert link.startswith(f"{stack.gateway_url}/account/accept-invitation#token="), link
    browser.get(link)
    _wait(browser).until(EC.presence_of_element_located((By.NAME, "new_password")))
    assert "token" not in browser.current_url
    _shot(browser, tmp_path, "accept-invitation")
    # two different passwords: said in the page, nothing sent
    browser.find_element(By.NAME, "new_password").send_keys(NEW_PASSWORD)
    browser.find_element(By.NAME, "new_password_again").send_keys(NEW_PASSWORD + "x")
    browser.find_element(By.CSS_SELECTOR, "#set-password-form button[type=submit]").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.ID, "set-password-form-status"), "passwords_differ"))
    again = browser.find_element(By.NAME, "new_password_again")
    again.clear()
    again.send_keys(NEW_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "#set-password-form button[type=submit]").click()
    _wait(browser).until(EC.text_to_be_present_in_element((By.TAG_NAME, "main"), "Your password is set"))
    _sign_in_in_page(browser, invitee, NEW_PASSWORD)
    _signed_in_as(browser, invitee)
    _no_console_errors(browser)


def test_lockout_shows_the_code_and_the_retry_time(browser: Any, stack: Any, tmp_path: Path) -> None:
    # an address with no account: failures count per account key all the same (existence-blind)
    email = _email("locked")
    browser.get(f"{stack.gateway_url}/signin")
    for _ in range(5):
        _wait(browser).until(EC.presence_of_element_located((By.NAME, "email")))
        box = browser.find_element(By.NAME, "email")
        box.clear()
        box.send_keys(email)
        password = browser.find_element(By.NAME, "password")
        password.clear()
        password.send_keys("wrong password!", Keys.ENTER)
        _wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "main .error"))
        if "too_many_attempts" in browser.find_element(By.CSS_SELECTOR, "main .error").text:
            break
        # the next attempt only after this one's answer was replaced (the form clears its status on submit)
        old = browser.find_element(By.CSS_SELECTOR, "main .error")
        browser.execute_script("arguments[0].remove()", old)
    error = browser.find_element(By.CSS_SELECTOR, "main .error")
    assert "too_many_attempts" in error.text, error.text
    retry = int(error.find_element(By.CSS_SELECTOR, ".retry-after").get_attribute("data-retry-after"))
    r = _login(stack, email, "wrong password!")
    assert r.status_code == 429
    api_retry = int(r.headers["Retry-After"])
    assert 0 < api_retry <= retry <= 900 + 1  # the page shows the API's figure (the clock moved on since)
    assert "Try again in" in error.text
    _shot(browser, tmp_path, "signin-locked")
    _only_refusals_logged(browser, ("/v1/auth/login",), (401, 429))
