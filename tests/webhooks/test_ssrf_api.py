"""The SSRF guard at the API: with allow-listing off, private destinations are refused with a clear 422.

`api` talks to the session's gateway, which has no allow-list (as in production). Nothing is sent to
any of these addresses: the gateway refuses them before a connection could exist.
"""

from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

REFUSED = [
    "http://127.0.0.1:8080/hook", "http://[::1]/hook", "http://10.0.0.1/hook", "http://172.16.0.1/hook",
    "http://192.168.1.1/hook", "http://169.254.169.254/latest/meta-data/", "http://0.0.0.0/hook",
    "http://localhost:8080/hook",  # a name that resolves to a loopback address
]
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("url", REFUSED)
async def test_registering_an_endpoint_at_a_private_address_is_refused(api: httpx.AsyncClient, url: str) -> None:
    r = await api.post("/v1/webhooks/endpoints", json={"url": url})
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "webhook_url_forbidden" and "may not be sent" in error["message"]
    assert (await api.get("/v1/webhooks/endpoints")).json()["data"] == []


@pytest.mark.parametrize("url", REFUSED)
async def test_submitting_a_request_with_a_private_webhook_url_is_refused(api: httpx.AsyncClient, url: str) -> None:
    r = await api.post("/v1/requests", json={"messages": MESSAGES, "webhook": url})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "webhook_url_forbidden"
    assert (await api.get("/v1/requests")).json()["data"] == []  # nothing was accepted


async def test_bad_webhook_fields_get_their_own_codes(api: httpx.AsyncClient) -> None:
    cases = [
        ({"webhook": "ftp://example.com/x"}, "webhook_url_invalid"),
        ({"webhook": "https://example.com/x", "webhook_endpoint_id": "whe_x"}, "webhook_conflict"),
        ({"webhook_events_filter": ["completed"]}, "webhook_filter_without_webhook"),
        ({"webhook_endpoint_id": "whe_nope"}, "webhook_endpoint_not_found"),
        ({"webhook": "https://example.com/x", "webhook_events_filter": ["finished"]}, "invalid_request"),
    ]
    for fields, code in cases:
        r = await api.post("/v1/requests", json={"messages": MESSAGES, **fields})
        assert r.status_code == 422 and r.json()["error"]["code"] == code, (fields, r.text)


async def test_the_allow_list_admits_loopback_only_where_configured(hook_api: httpx.AsyncClient) -> None:
    """The test gateway allows 127.0.0.1/32 and nothing more."""
    ok = await hook_api.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
    assert ok.status_code == 201, ok.text
    for url in ("http://127.0.0.2:9/hook", "http://[::1]:9/hook", "http://10.0.0.1/hook"):
        r = await hook_api.post("/v1/webhooks/endpoints", json={"url": url})
        assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_url_forbidden", url
    r = await hook_api.patch(f"/v1/webhooks/endpoints/{ok.json()['id']}", json={"url": "http://192.168.1.1/"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_url_forbidden"


async def test_managing_endpoints_needs_the_admin_scope(stack, hook_gateway: str, pro_tenant, postgres) -> None:  # type: ignore[no-untyped-def]
    from gateway.api_keys import create_api_key
    from lotabots.db import make_engine

    engine = make_engine(postgres.url)
    try:
        member = await create_api_key(engine, pro_tenant[0], name="member",
                                      scopes=("requests:write", "requests:read"))
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=hook_gateway, headers={"Authorization": f"Bearer {member.key}"}) as c:
        r = await c.post("/v1/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
        assert (await c.get("/v1/webhooks/default-secret")).status_code == 403
        assert (await c.get("/v1/webhooks/endpoints")).status_code == 200
        assert (await c.get("/v1/webhooks/deliveries")).status_code == 200
