"""Route authorization: 401 with a challenge, 403 for missing scope or role, 404 across tenants, tier admin."""

from __future__ import annotations

import pytest

from tests.auth.harness import AuthHarness, bearer, unique_email


async def _user_id(auth: AuthHarness, access: str) -> str:
    return (await auth.client.get("/v1/auth/me", headers=bearer(access))).json()["user"]["id"]


@pytest.mark.parametrize("header", [None, "Bearer", "Basic dXNlcjpwYXNz", "Bearer not-a-credential",
                                    "Bearer lbk_000000000000_" + "x" * 43])
async def test_missing_or_invalid_credentials_are_401_with_a_challenge(auth: AuthHarness, header: str | None) -> None:
    r = await auth.client.get("/v1/users", headers={"Authorization": header} if header else {})
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthenticated"
    assert r.headers["www-authenticate"].startswith('Bearer realm="lotabots"')


async def test_insufficient_scope_is_403(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    member = await auth.invite_and_join(owner["access_token"], unique_email(), "member")
    r = await auth.client.get("/v1/users", headers=bearer(member["access_token"]))
    assert r.status_code == 403
    assert r.json()["error"] == {"code": "insufficient_scope", "message": "this call needs the 'admin' scope",
                                 "details": {"required_scope": "admin"}}


async def test_users_of_another_tenant_are_404(auth: AuthHarness) -> None:
    alice = await auth.signup(unique_email())
    bob = await auth.signup(unique_email())
    bob_id = await _user_id(auth, bob["access_token"])
    for method, path, body in [("GET", f"/v1/users/{bob_id}", None), ("PATCH", f"/v1/users/{bob_id}", {"role": "member"}),
                               ("DELETE", f"/v1/users/{bob_id}", None),
                               ("POST", f"/v1/users/{bob_id}/password-reset", None)]:
        r = await auth.client.request(method, path, json=body, headers=bearer(alice["access_token"]))
        assert (r.status_code, r.json()["error"]["code"]) == (404, "user_not_found"), (method, path)
    listed = (await auth.client.get("/v1/users", headers=bearer(alice["access_token"]))).json()["data"]
    assert bob_id not in {u["id"] for u in listed}
    assert (await auth.client.get("/v1/auth/me", headers=bearer(bob["access_token"]))).status_code == 200


async def test_only_owners_grant_owner_and_the_last_owner_stays(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    owner_id = await _user_id(auth, owner["access_token"])
    admin = await auth.invite_and_join(owner["access_token"], unique_email(), "admin")
    admin_id = await _user_id(auth, admin["access_token"])

    r = await auth.client.post("/v1/users", json={"email": unique_email(), "role": "owner"},
                               headers=bearer(admin["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "owner_required")
    r = await auth.client.patch(f"/v1/users/{owner_id}", json={"role": "member"}, headers=bearer(admin["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "owner_required")
    r = await auth.client.patch(f"/v1/users/{owner_id}", json={"role": "admin"}, headers=bearer(owner["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "last_owner")
    r = await auth.client.patch(f"/v1/users/{admin_id}", json={"role": "owner"}, headers=bearer(owner["access_token"]))
    assert r.status_code == 200 and r.json()["role"] == "owner"


async def test_removed_user_loses_sessions_and_cannot_sign_in(auth: AuthHarness) -> None:
    owner = await auth.signup(unique_email())
    email = unique_email()
    member = await auth.invite_and_join(owner["access_token"], email, "member")
    member_id = await _user_id(auth, member["access_token"])
    assert (await auth.client.delete(f"/v1/users/{member_id}", headers=bearer(owner["access_token"]))).status_code == 204
    assert (await auth.client.get("/v1/auth/me", headers=bearer(member["access_token"]))).status_code == 401
    assert (await auth.client.post("/v1/auth/refresh", json={"refresh_token": member["refresh_token"]})).status_code == 401
    r = await auth.client.post("/v1/auth/login", json={"email": email, "password": "correct horse battery"})
    assert r.status_code == 401
    users = (await auth.client.get("/v1/users", headers=bearer(owner["access_token"]))).json()["data"]
    assert {u["id"]: u["active"] for u in users}[member_id] is False


async def test_inviting_an_existing_email_is_a_409(auth: AuthHarness) -> None:
    taken = unique_email()
    await auth.signup(taken)
    owner = await auth.signup(unique_email())
    r = await auth.client.post("/v1/users", json={"email": taken}, headers=bearer(owner["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "email_unavailable")


async def test_tier_changes_need_a_platform_operator(auth: AuthHarness) -> None:
    from gateway.auth.user_store import UserStore

    owner = await auth.signup(unique_email())
    tenant_id = (await auth.client.get("/v1/auth/me", headers=bearer(owner["access_token"]))).json()["tenant_id"]
    r = await auth.client.put(f"/v1/admin/tenants/{tenant_id}/tier", json={"tier": "pro"},
                              headers=bearer(owner["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")  # tenant admin is not enough

    operator_email = unique_email("operator")
    await auth.signup(operator_email)
    assert await UserStore(auth.services.engine).set_platform_operator(operator_email, True)
    operator = await auth.login(operator_email)
    assert "platform:admin" in operator["scope"].split()
    r = await auth.client.put(f"/v1/admin/tenants/{tenant_id}/tier", json={"tier": "pro"},
                              headers=bearer(operator["access_token"]))
    assert r.status_code == 200 and r.json()["tier"] == "pro"
    me = (await auth.client.get("/v1/auth/me", headers=bearer(owner["access_token"]))).json()
    assert me["tier"] == "pro"

    r = await auth.client.put(f"/v1/admin/tenants/{tenant_id}/tier", json={"tier": "platinum"},
                              headers=bearer(operator["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_tier")
    r = await auth.client.put("/v1/admin/tenants/ten_nope/tier", json={"tier": "pro"},
                              headers=bearer(operator["access_token"]))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "tenant_not_found")
