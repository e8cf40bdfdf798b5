"""Secrets never reach the logs: every log record (DEBUG, SQL statements with parameters included) emitted
during register, verify, login, refresh, reset, password change and API-key creation is searched."""

from __future__ import annotations

import logging

import pytest

from schemas.auth_events import AuthEventType
from tests.auth.harness import PASSWORD, AuthHarness, bearer, running_auth, unique_email


def _all_logged(caplog: pytest.LogCaptureFixture) -> str:
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_text:
            parts.append(record.exc_text)
    return "\n".join(parts)


async def _every_secret_flow(auth: AuthHarness) -> list[str]:
    """Drive every flow that handles a secret; return the secrets it handled."""
    email, second, third = unique_email(), "second secret passphrase", "third secret passphrase"
    r = await auth.client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202
    verify_token = auth.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)
    await auth.client.post("/v1/auth/verify-email", json={"token": verify_token})
    await auth.client.post("/v1/auth/login", json={"email": email, "password": "a wrong passphrase"})
    first = await auth.login(email)
    refreshed = (await auth.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})).json()
    await auth.client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})  # reuse: warns
    await auth.client.post("/v1/auth/password/reset-request", json={"email": email})
    reset_token = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)
    r = await auth.client.post("/v1/auth/password/reset", json={"token": reset_token, "new_password": second})
    assert r.status_code == 204
    signed_in = await auth.login(email, second)
    r = await auth.client.post("/v1/auth/password/change", headers=bearer(signed_in["access_token"]),
                               json={"current_password": second, "new_password": third})
    assert r.status_code == 200
    created = (await auth.client.post("/v1/api-keys", json={"name": "ci"},
                                      headers=bearer(signed_in["access_token"]))).json()
    await auth.client.get("/v1/auth/me", headers=bearer(created["key"]))
    invitee = unique_email()
    await auth.client.post("/v1/users", json={"email": invitee}, headers=bearer(signed_in["access_token"]))
    invite_token = auth.events.token(AuthEventType.USER_INVITED, invitee)
    return [PASSWORD, second, third, verify_token, reset_token, invite_token, created["key"],
            first["refresh_token"], refreshed["refresh_token"], signed_in["refresh_token"],
            first["access_token"], signed_in["access_token"]]


async def test_no_secret_appears_in_any_log_record(auth: AuthHarness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # SQL and its bound parameters too
    secrets = await _every_secret_flow(auth)
    logged = _all_logged(caplog)
    assert "auth_sessions" in logged  # the capture really saw SQL with its parameters
    leaked = [s[:8] + "..." for s in secrets if s in logged]
    assert leaked == []


async def test_development_mail_links_are_logged_only_when_enabled(make_settings,  # type: ignore[no-untyped-def]
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with running_auth(make_settings(auth_log_email_links=True)) as auth:
        email = unique_email()
        await auth.client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        token = auth.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)
        assert token in caplog.text  # a developer without a mailer can follow the link
        assert PASSWORD not in caplog.text
