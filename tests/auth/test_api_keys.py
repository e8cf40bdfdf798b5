"""API keys: created with the full key shown once, listed without secrets, revoked; tenant-scoped."""

from __future__ import annotations

from tests.auth.harness import AuthHarness, bearer, unique_email


async def _owner(auth: AuthHarness) -> str:
    return (await auth.signup(unique_email()))["access_token"]


async def test_create_shows_the_full_key_once_and_list_never_does(auth: AuthHarness) -> None:
    owner = await _owner(auth)
    r = await auth.client.post("/v1/api-keys", json={"name": "ci", "scopes": ["requests:write", "requests:read"]},
                               headers=bearer(owner))
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    created = r.json()
    assert created["key"].startswith(created["prefix"] + "_") and created["prefix"].startswith("lbk_")
    listed = (await auth.client.get("/v1/api-keys", headers=bearer(owner))).json()["data"]
    assert [(k["id"], k["prefix"], k["name"], k["scopes"]) for k in listed] == \
        [(created["id"], created["prefix"], "ci", ["requests:write", "requests:read"])]
    assert set(listed[0]) >= {"created_at", "last_used_at"}
    assert created["key"] not in r.text.replace(created["key"], "", 1)  # only once in the create answer
    assert created["key"] not in str(listed)


async def test_a_key_authenticates_with_its_scopes_and_records_last_use(auth: AuthHarness) -> None:
    owner = await _owner(auth)
    created = (await auth.client.post("/v1/api-keys", json={"name": "reader", "scopes": ["usage:read"]},
                                      headers=bearer(owner))).json()
    me = await auth.client.get("/v1/auth/me", headers=bearer(created["key"]))
    assert me.status_code == 200
    assert me.json()["kind"] == "api_key" and me.json()["scopes"] == ["usage:read"]
    assert (await auth.client.get("/v1/users", headers=bearer(created["key"]))).status_code == 403
    listed = (await auth.client.get("/v1/api-keys", headers=bearer(owner))).json()["data"]
    assert listed[0]["last_used_at"] is not None


async def test_revoked_key_stops_working(auth: AuthHarness) -> None:
    owner = await _owner(auth)
    created = (await auth.client.post("/v1/api-keys", json={"name": "tmp"}, headers=bearer(owner))).json()
    assert (await auth.client.get("/v1/auth/me", headers=bearer(created["key"]))).status_code == 200
    assert (await auth.client.delete(f"/v1/api-keys/{created['id']}", headers=bearer(owner))).status_code == 204
    r = await auth.client.get("/v1/auth/me", headers=bearer(created["key"]))
    assert r.status_code == 401 and "www-authenticate" in r.headers
    assert (await auth.client.get("/v1/api-keys", headers=bearer(owner))).json()["data"] == []
    revoked = (await auth.client.get("/v1/api-keys?include_revoked=true", headers=bearer(owner))).json()["data"]
    assert revoked[0]["revoked_at"] is not None


async def test_keys_of_another_tenant_cannot_be_seen_or_revoked(auth: AuthHarness) -> None:
    alice, bob = await _owner(auth), await _owner(auth)
    bobs = (await auth.client.post("/v1/api-keys", json={"name": "bob"}, headers=bearer(bob))).json()
    r = await auth.client.delete(f"/v1/api-keys/{bobs['id']}", headers=bearer(alice))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "api_key_not_found")
    assert (await auth.client.get("/v1/api-keys", headers=bearer(alice))).json()["data"] == []
    assert (await auth.client.get("/v1/auth/me", headers=bearer(bobs["key"]))).status_code == 200


async def test_key_management_needs_admin_and_keys_cannot_exceed_their_creator(auth: AuthHarness) -> None:
    owner = await _owner(auth)
    member = (await auth.invite_and_join(owner, unique_email(), "member"))["access_token"]
    r = await auth.client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(member))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")
    limited = (await auth.client.post("/v1/api-keys", json={"scopes": ["admin"]}, headers=bearer(owner))).json()
    ok = await auth.client.post("/v1/api-keys", json={"scopes": ["billing:read"]}, headers=bearer(limited["key"]))
    assert ok.status_code == 201  # admin implies every tenant scope
    r = await auth.client.post("/v1/api-keys", json={"scopes": ["platform:admin"]}, headers=bearer(owner))
    assert r.status_code == 422  # not a grantable scope at all
