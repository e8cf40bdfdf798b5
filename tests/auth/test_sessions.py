"""Refresh rotation, reuse detection (family revoked), logout and logout everywhere."""

from __future__ import annotations

from schemas.auth_events import AuthEventType
from tests.auth.harness import AuthHarness, bearer, unique_email


async def _refresh(auth: AuthHarness, token: str):  # type: ignore[no-untyped-def]
    return await auth.client.post("/v1/auth/refresh", json={"refresh_token": token})


async def _me(auth: AuthHarness, access: str) -> int:
    return (await auth.client.get("/v1/auth/me", headers=bearer(access))).status_code


async def test_refresh_rotates_the_token_every_time(auth: AuthHarness) -> None:
    first = await auth.signup(unique_email())
    r = await _refresh(auth, first["refresh_token"])
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert r.headers["cache-control"] == "no-store"
    assert await _me(auth, second["access_token"]) == 200
    r = await _refresh(auth, second["refresh_token"])
    assert r.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_whole_family(auth: AuthHarness) -> None:
    first = await auth.signup(unique_email())
    second = (await _refresh(auth, first["refresh_token"])).json()
    third = (await _refresh(auth, second["refresh_token"])).json()

    stolen = await _refresh(auth, first["refresh_token"])  # an attacker replays the first token
    assert stolen.status_code == 401
    assert stolen.json()["error"]["code"] == "refresh_token_reused"

    # Every descendant is dead: the latest refresh token and the access tokens of the session.
    latest = await _refresh(auth, third["refresh_token"])
    assert (latest.status_code, latest.json()["error"]["code"]) == (401, "invalid_refresh_token")
    assert await _me(auth, third["access_token"]) == 401
    assert auth.events.of(AuthEventType.REFRESH_TOKEN_REUSE_DETECTED)


async def test_reuse_in_one_session_leaves_other_sessions_alone(auth: AuthHarness) -> None:
    email = unique_email()
    laptop = await auth.signup(email)
    phone = await auth.login(email)
    await _refresh(auth, laptop["refresh_token"])
    await _refresh(auth, laptop["refresh_token"])  # reuse: laptop's family revoked
    assert (await _refresh(auth, phone["refresh_token"])).status_code == 200


async def test_unknown_and_expired_refresh_tokens_are_refused(auth: AuthHarness) -> None:
    assert (await _refresh(auth, "lbr_" + "A" * 43)).status_code == 401
    tokens = await auth.signup(unique_email())
    auth.clock.advance(auth.settings.auth_refresh_token_ttl_s + 1)
    r = await _refresh(auth, tokens["refresh_token"])
    assert (r.status_code, r.json()["error"]["code"]) == (401, "invalid_refresh_token")


async def test_logout_ends_this_session_only(auth: AuthHarness) -> None:
    email = unique_email()
    one = await auth.signup(email)
    two = await auth.login(email)
    r = await auth.client.post("/v1/auth/logout", headers=bearer(one["access_token"]))
    assert r.status_code == 204
    assert await _me(auth, one["access_token"]) == 401
    assert (await _refresh(auth, one["refresh_token"])).status_code == 401
    assert await _me(auth, two["access_token"]) == 200
    assert (await _refresh(auth, two["refresh_token"])).status_code == 200


async def test_logout_everywhere_ends_every_session(auth: AuthHarness) -> None:
    email = unique_email()
    sessions = [await auth.signup(email), await auth.login(email), await auth.login(email)]
    r = await auth.client.post("/v1/auth/logout-all", headers=bearer(sessions[1]["access_token"]))
    assert r.json() == {"revoked_sessions": 3}
    for s in sessions:
        assert await _me(auth, s["access_token"]) == 401
        assert (await _refresh(auth, s["refresh_token"])).status_code == 401


async def test_logout_needs_a_user_token_not_an_api_key(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    key = (await auth.client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(owner["access_token"]))).json()
    r = await auth.client.post("/v1/auth/logout", headers=bearer(key["key"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "user_session_required")


async def test_refresh_picks_up_a_role_change(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    member = await auth.invite_and_join(owner["access_token"], unique_email(), "member")
    assert "admin" not in member["scope"].split()
    me = (await auth.client.get("/v1/auth/me", headers=bearer(member["access_token"]))).json()
    r = await auth.client.patch(f"/v1/users/{me['user']['id']}", json={"role": "admin"},
                                headers=bearer(owner["access_token"]))
    assert r.status_code == 200, r.text
    # A role change ends the user's sessions (old tokens carry the old role); signing in again gives the new one.
    assert await _me(auth, member["access_token"]) == 401
    again = await auth.login(me["user"]["email"])
    assert "admin" in again["scope"].split()
