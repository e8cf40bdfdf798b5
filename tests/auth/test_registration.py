"""Registration, email verification, the password policy, and answers that reveal no account."""

from __future__ import annotations

import pytest

from schemas.auth_events import AuthEventType
from tests.auth.harness import PASSWORD, AuthHarness, bearer, unique_email


async def test_register_verify_login_gives_owner_of_a_new_tenant(auth: AuthHarness) -> None:
    email = unique_email()
    tokens = await auth.signup(email, tenant_name="Acme")
    assert tokens["token_type"] == "Bearer"
    assert tokens["refresh_token"].startswith("lbr_")
    assert tokens["expires_in"] == auth.settings.auth_access_token_ttl_s
    me = (await auth.client.get("/v1/auth/me", headers=bearer(tokens["access_token"]))).json()
    assert me["user"]["email"] == email
    assert me["user"]["role"] == "owner"
    assert me["tier"] == auth.settings.auth_default_tier
    assert {"requests:write", "admin", "billing:read"} <= set(me["scopes"])


async def test_email_is_normalised_so_case_and_spaces_do_not_make_a_second_account(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    r = await auth.client.post("/v1/auth/register", json={"email": f"  {email.upper()} ", "password": "other pass 123"})
    assert r.status_code == 202
    assert len(auth.events.of(AuthEventType.REGISTRATION_ATTEMPT_EXISTING_ACCOUNT, email)) == 1
    await auth.login(email.upper())  # the original password still works, with any casing of the address


async def test_registering_a_taken_email_answers_exactly_like_a_new_one(auth: AuthHarness) -> None:
    taken = unique_email()
    await auth.signup(taken)
    fresh = await auth.client.post("/v1/auth/register", json={"email": unique_email(), "password": PASSWORD})
    again = await auth.client.post("/v1/auth/register", json={"email": taken, "password": PASSWORD})
    assert (fresh.status_code, fresh.content) == (again.status_code, again.content)
    assert fresh.headers.get("content-type") == again.headers.get("content-type")


async def test_login_answers_identically_for_unknown_email_wrong_password_and_unverified(auth: AuthHarness) -> None:
    known = unique_email()
    await auth.signup(known)
    unverified = unique_email()
    await auth.client.post("/v1/auth/register", json={"email": unverified, "password": PASSWORD})
    answers = [
        await auth.client.post("/v1/auth/login", json={"email": unique_email(), "password": PASSWORD}),
        await auth.client.post("/v1/auth/login", json={"email": known, "password": "wrong password!"}),
        await auth.client.post("/v1/auth/login", json={"email": unverified, "password": PASSWORD}),
    ]
    assert {(a.status_code, a.content) for a in answers} == {(answers[0].status_code, answers[0].content)}
    assert answers[0].status_code == 401
    assert answers[0].json()["error"]["code"] == "invalid_credentials"


async def test_verification_link_works_once(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    token = auth.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)
    assert (await auth.client.post("/v1/auth/verify-email", json={"token": token})).status_code == 204
    again = await auth.client.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "invalid_or_expired_token"


@pytest.mark.parametrize(
    ("password", "code"),
    [
        ("short", "password_too_short"),
        ("a" * 73, "password_too_long"),  # bcrypt 5 raises above 72 bytes: must be a 422, never a 500
        ("é" * 37, "password_too_long"),  # 37 characters but 74 bytes
        ("tab\tinside pass", "password_invalid_characters"),
    ],
)
async def test_password_policy_refusals_are_clear_422s(auth: AuthHarness, password: str, code: str) -> None:
    r = await auth.client.post("/v1/auth/register", json={"email": unique_email(), "password": password})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == code


async def test_password_equal_to_the_email_is_refused(auth: AuthHarness) -> None:
    email = unique_email()
    r = await auth.client.post("/v1/auth/register", json={"email": email, "password": email.upper()})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "password_equals_email"


async def test_exactly_72_bytes_is_accepted(auth: AuthHarness) -> None:
    email, password = unique_email(), "é" * 36  # 72 bytes
    await auth.signup(email, password)


async def test_over_long_password_at_login_change_and_reset_is_422_not_500(auth: AuthHarness) -> None:
    email = unique_email()
    tokens = await auth.signup(email)
    long = "x" * 100
    r = await auth.client.post("/v1/auth/login", json={"email": email, "password": long})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "password_too_long")
    r = await auth.client.post("/v1/auth/password/change", headers=bearer(tokens["access_token"]),
                               json={"current_password": PASSWORD, "new_password": long})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "password_too_long")
    r = await auth.client.post("/v1/auth/password/reset", json={"token": "lbt_" + "x" * 40, "new_password": long})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "password_too_long")


async def test_malformed_email_is_a_422(auth: AuthHarness) -> None:
    r = await auth.client.post("/v1/auth/register", json={"email": "not-an-email", "password": PASSWORD})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_email")


async def test_closed_registration_is_refused(make_settings) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.harness import running_auth

    async with running_auth(make_settings(auth_registration_open=False)) as auth:
        r = await auth.client.post("/v1/auth/register", json={"email": unique_email(), "password": PASSWORD})
        assert (r.status_code, r.json()["error"]["code"]) == (403, "registration_closed")


async def test_without_required_verification_the_account_signs_in_at_once(make_settings) -> None:  # type: ignore[no-untyped-def]
    from tests.auth.harness import running_auth

    async with running_auth(make_settings(auth_require_email_verification=False)) as auth:
        email = unique_email()
        r = await auth.client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert r.status_code == 202
        await auth.login(email)
        assert not auth.events.of(AuthEventType.EMAIL_VERIFICATION_REQUESTED)
