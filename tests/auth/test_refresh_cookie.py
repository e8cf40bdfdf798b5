"""Cookie mode for the web console: the refresh token in an HttpOnly SameSite=Strict cookie, the refresh
route guarded by a double-submit CSRF header, logout clearing the cookies, verify-email signing in; and
API clients (no cookie-mode header) keep the token response unchanged."""

from __future__ import annotations

import httpx

from schemas.auth_events import AuthEventType
from tests.auth.harness import PASSWORD, AuthHarness, bearer, unique_email

COOKIE_MODE = {"LotaBots-Refresh-Cookie": "1"}


async def _register(auth: AuthHarness, client: httpx.AsyncClient) -> tuple[str, str]:
    email = unique_email("cookie")
    r = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert r.status_code == 202, r.text
    return email, auth.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)


def _set_cookies(r: httpx.Response) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in r.headers.get_list("set-cookie")}


def _client(auth: AuthHarness, scheme: str = "http") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(auth.app, client=("10.9.8.7", 40000)),
                             base_url=f"{scheme}://auth.test")


async def test_login_in_cookie_mode_keeps_the_refresh_token_out_of_the_body(auth: AuthHarness) -> None:
    async with _client(auth) as client:
        email, token = await _register(auth, client)
        assert (await client.post("/v1/auth/verify-email", json={"token": token})).status_code == 204
        r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=COOKIE_MODE)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "refresh_token" not in body and body["access_token"] and body["refresh_cookie"] == "lb_refresh"
        assert r.headers["cache-control"] == "no-store"
        cookies = _set_cookies(r)
        refresh = cookies["lb_refresh"].lower()
        assert "httponly" in refresh and "samesite=strict" in refresh and "path=/v1/auth" in refresh
        assert "secure" not in refresh  # plain http (127.0.0.1): a Secure cookie would never come back
        csrf = cookies["lb_csrf"].lower()
        assert "httponly" not in csrf and "samesite=strict" in csrf and "path=/" in csrf

        # refresh with the cookie: the CSRF header must equal the lb_csrf cookie
        no_header = await client.post("/v1/auth/refresh", headers=COOKIE_MODE)
        assert no_header.status_code == 403 and no_header.json()["error"]["code"] == "csrf_failed"
        wrong = await client.post("/v1/auth/refresh", headers={**COOKIE_MODE, "X-CSRF-Token": "guess"})
        assert wrong.status_code == 403 and wrong.json()["error"]["code"] == "csrf_failed"
        old_refresh = client.cookies.get("lb_refresh")
        r = await client.post("/v1/auth/refresh", headers={**COOKIE_MODE, "X-CSRF-Token": client.cookies["lb_csrf"]})
        assert r.status_code == 200, r.text
        assert "refresh_token" not in r.json()
        assert client.cookies.get("lb_refresh") not in (None, old_refresh)  # rotated
        access = r.json()["access_token"]
        assert (await client.get("/v1/auth/me", headers=bearer(access))).status_code == 200

        # the spent cookie value replayed (stolen) is reuse: the family is revoked, as in body mode
        replay = await auth.client.post("/v1/auth/refresh", json={"refresh_token": old_refresh})
        assert replay.json()["error"]["code"] == "refresh_token_reused"


async def test_logout_clears_the_cookies(auth: AuthHarness) -> None:
    async with _client(auth) as client:
        email, token = await _register(auth, client)
        await client.post("/v1/auth/verify-email", json={"token": token})
        r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD}, headers=COOKIE_MODE)
        access = r.json()["access_token"]
        r = await client.post("/v1/auth/logout", headers=bearer(access))
        assert r.status_code == 204
        cleared = _set_cookies(r)
        assert "max-age=0" in cleared["lb_refresh"].lower() and "max-age=0" in cleared["lb_csrf"].lower()
        assert "lb_refresh" not in client.cookies
        # no cookie left: a refresh is refused (the CSRF check comes first)
        r = await client.post("/v1/auth/refresh", headers={**COOKIE_MODE, "X-CSRF-Token": "x"})
        assert r.status_code == 403


async def test_cookie_refresh_without_a_cookie_is_invalid_refresh_token(auth: AuthHarness) -> None:
    async with _client(auth) as client:
        client.cookies.set("lb_csrf", "abc", domain="auth.test")
        r = await client.post("/v1/auth/refresh", headers={"X-CSRF-Token": "abc"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_refresh_token"


async def test_cookies_are_secure_over_https(auth: AuthHarness) -> None:
    async with _client(auth, "https") as client:
        email, token = await _register(auth, client)
        r = await client.post("/v1/auth/verify-email", json={"token": token}, headers=COOKIE_MODE)
        assert r.status_code == 200, r.text  # cookie mode: verifying the address signs the person in
        assert "refresh_token" not in r.json() and r.json()["access_token"]
        cookies = _set_cookies(r)
        assert "; secure" in cookies["lb_refresh"].lower() and "; secure" in cookies["lb_csrf"].lower()
        me = await client.get("/v1/auth/me", headers=bearer(r.json()["access_token"]))
        assert me.json()["user"]["email"] == email and me.json()["user"]["email_verified"] is True


async def test_api_clients_keep_the_json_contract(auth: AuthHarness) -> None:
    email = unique_email()
    tokens = await auth.signup(email)
    assert tokens["refresh_token"].startswith("lbr_")
    r = await auth.client.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 200 and r.json()["refresh_token"].startswith("lbr_")
    assert not r.headers.get_list("set-cookie")
    # a second verification with a spent token still fails the same way in both modes
    token = auth.events.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)
    for headers in ({}, COOKIE_MODE):
        r = await auth.client.post("/v1/auth/verify-email", json={"token": token}, headers=headers)
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_or_expired_token"
