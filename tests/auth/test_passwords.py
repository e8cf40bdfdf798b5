"""Password change, self-service reset, admin-forced reset, and invitations."""

from __future__ import annotations

from schemas.auth_events import AuthEventType, PasswordResetReason
from tests.auth.harness import PASSWORD, AuthHarness, bearer, unique_email

NEW = "a brand new passphrase"


async def _status(auth: AuthHarness, access: str) -> int:
    return (await auth.client.get("/v1/auth/me", headers=bearer(access))).status_code


async def _login_status(auth: AuthHarness, email: str, password: str) -> int:
    return (await auth.client.post("/v1/auth/login", json={"email": email, "password": password})).status_code


async def test_change_needs_the_current_password_and_ends_other_sessions(auth: AuthHarness) -> None:
    email = unique_email()
    here = await auth.signup(email)
    elsewhere = await auth.login(email)
    wrong = await auth.client.post("/v1/auth/password/change", headers=bearer(here["access_token"]),
                                   json={"current_password": "not my password", "new_password": NEW})
    assert (wrong.status_code, wrong.json()["error"]["code"]) == (403, "current_password_incorrect")

    r = await auth.client.post("/v1/auth/password/change", headers=bearer(here["access_token"]),
                               json={"current_password": PASSWORD, "new_password": NEW})
    assert r.status_code == 200, r.text
    assert r.json()["revoked_sessions"] == 1
    assert await _status(auth, here["access_token"]) == 200  # this session survives
    assert await _status(auth, elsewhere["access_token"]) == 401
    assert await _login_status(auth, email, PASSWORD) == 401
    assert await _login_status(auth, email, NEW) == 200


async def test_change_applies_the_policy_to_the_new_password(auth: AuthHarness) -> None:
    email = unique_email()
    tokens = await auth.signup(email)
    r = await auth.client.post("/v1/auth/password/change", headers=bearer(tokens["access_token"]),
                               json={"current_password": PASSWORD, "new_password": email})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "password_equals_email")


async def test_reset_link_sets_a_new_password_once_and_ends_every_session(auth: AuthHarness) -> None:
    email = unique_email()
    session = await auth.signup(email)
    assert (await auth.client.post("/v1/auth/password/reset-request", json={"email": email})).status_code == 202
    event = auth.events.of(AuthEventType.PASSWORD_RESET_REQUESTED, email)[-1]
    assert event.reason == PasswordResetReason.USER_REQUEST
    assert event.link is not None and event.link.startswith("https://app.lotabots.test/account/reset-password#token=")
    token = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)

    r = await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW})
    assert r.status_code == 204, r.text
    assert await _status(auth, session["access_token"]) == 401
    assert await _login_status(auth, email, PASSWORD) == 401
    assert await _login_status(auth, email, NEW) == 200
    again = await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": "yet another one"})
    assert (again.status_code, again.json()["error"]["code"]) == (400, "invalid_or_expired_token")


async def test_reset_link_expires(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    await auth.client.post("/v1/auth/password/reset-request", json={"email": email})
    token = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)
    auth.clock.advance(auth.settings.auth_reset_token_ttl_s + 1)
    r = await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW})
    assert r.status_code == 400
    assert await _login_status(auth, email, PASSWORD) == 200


async def test_a_newer_reset_link_supersedes_the_older_one(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    await auth.client.post("/v1/auth/password/reset-request", json={"email": email})
    old = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)
    await auth.client.post("/v1/auth/password/reset-request", json={"email": email})
    new = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)
    assert (await auth.client.post("/v1/auth/password/reset", json={"token": old, "new_password": NEW})).status_code == 400
    assert (await auth.client.post("/v1/auth/password/reset", json={"token": new, "new_password": NEW})).status_code == 204


async def test_reset_lifts_a_lockout(auth: AuthHarness) -> None:
    email = unique_email()
    await auth.signup(email)
    for _ in range(auth.settings.auth_lockout_threshold):
        await auth.client.post("/v1/auth/login", json={"email": email, "password": "wrong password"})
    assert await _login_status(auth, email, PASSWORD) == 429
    await auth.client.post("/v1/auth/password/reset-request", json={"email": email})
    token = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, email)
    await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW})
    assert await _login_status(auth, email, NEW) == 200


async def test_admin_forced_reset_stops_the_password_and_sessions_and_mails_a_link(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    member_email = unique_email()
    member = await auth.invite_and_join(owner["access_token"], member_email, "member")
    member_id = (await auth.client.get("/v1/auth/me", headers=bearer(member["access_token"]))).json()["user"]["id"]

    r = await auth.client.post(f"/v1/users/{member_id}/password-reset", headers=bearer(owner["access_token"]))
    assert r.status_code == 202, r.text
    assert await _status(auth, member["access_token"]) == 401
    assert await _login_status(auth, member_email, PASSWORD) == 401
    event = auth.events.of(AuthEventType.PASSWORD_RESET_REQUESTED, member_email)[-1]
    assert event.reason == PasswordResetReason.ADMIN_FORCED
    token = auth.events.token(AuthEventType.PASSWORD_RESET_REQUESTED, member_email)
    assert (await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": NEW})).status_code == 204
    assert await _login_status(auth, member_email, NEW) == 200


async def test_members_cannot_force_resets_and_admins_cannot_force_an_owner(auth: AuthHarness) -> None:
    owner_email = unique_email()
    owner = await auth.signup(owner_email)
    owner_id = (await auth.client.get("/v1/auth/me", headers=bearer(owner["access_token"]))).json()["user"]["id"]
    member = await auth.invite_and_join(owner["access_token"], unique_email(), "member")
    admin = await auth.invite_and_join(owner["access_token"], unique_email(), "admin")
    r = await auth.client.post(f"/v1/users/{owner_id}/password-reset", headers=bearer(member["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
    r = await auth.client.post(f"/v1/users/{owner_id}/password-reset", headers=bearer(admin["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "owner_required")


async def test_invited_user_sets_a_password_through_the_link_and_gets_the_invited_role(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    email = unique_email()
    r = await auth.client.post("/v1/users", json={"email": email, "role": "finance"},
                               headers=bearer(owner["access_token"]))
    assert r.status_code == 201
    assert r.json()["password_set"] is False
    assert await _login_status(auth, email, PASSWORD) == 401  # no password until the link is used
    token = auth.events.token(AuthEventType.USER_INVITED, email)
    assert (await auth.client.post("/v1/auth/password/reset", json={"token": token, "new_password": PASSWORD})).status_code == 204
    tokens = await auth.login(email)
    assert set(tokens["scope"].split()) == {"usage:read", "billing:read"}
