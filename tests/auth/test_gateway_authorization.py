"""The real gateway (real Kafka, embedded auth): access tokens and API keys both authenticate, routes enforce
their scopes, tenants stay isolated, and `auth.events` reaches Kafka (the verification link is read there)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from gateway.app import create_app
from lotabots.tiers import get_tier_config
from lotabots.topic_admin import sync_topics
from schemas.auth_events import AuthEvent, AuthEventType
from schemas.topics import AUTH_EVENTS, topic_catalogue
from tests.auth.harness import PASSWORD, bearer, unique_email

pytestmark = pytest.mark.integration

HELLO = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4}


class KafkaMailbox:
    """Reads `auth.events` from the real broker, as a mailer would."""

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(AUTH_EVENTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                          enable_auto_commit=False, group_id=None)
        self.seen: list[AuthEvent] = []

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def token(self, type: AuthEventType, email: str, timeout_s: float = 60) -> str:
        async with asyncio.timeout(timeout_s):
            while True:
                for event in self.seen:
                    if event.type == type and event.email == email and event.link:
                        return event.link.rsplit("token=", 1)[1]
                batch = await self._consumer.getmany(timeout_ms=500)
                self.seen += [AuthEvent.model_validate_json(m.value) for msgs in batch.values() for m in msgs]


@pytest.fixture
async def gateway(kafka: Any, make_settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, KafkaMailbox]]:
    await sync_topics(kafka.bootstrap, topic_catalogue(get_tier_config()))
    settings = make_settings(kafka_bootstrap=kafka.bootstrap, auth_embedded=True)
    app = create_app(settings)
    mailbox = KafkaMailbox(kafka.bootstrap)
    await mailbox.start()
    try:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app, client=("10.1.2.3", 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client:
                yield client, mailbox
    finally:
        await mailbox.stop()


async def _signup(client: httpx.AsyncClient, mailbox: KafkaMailbox) -> dict[str, Any]:
    email = unique_email()
    assert (await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD})).status_code == 202
    token = await mailbox.token(AuthEventType.EMAIL_VERIFICATION_REQUESTED, email)
    assert (await client.post("/v1/auth/verify-email", json={"token": token})).status_code == 204
    r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return r.json()


async def test_gateway_accepts_access_tokens_and_api_keys_and_enforces_scopes(gateway) -> None:  # type: ignore[no-untyped-def]
    client, mailbox = gateway
    owner = await _signup(client, mailbox)
    assert (await client.get("/v1/requests", headers=bearer(owner["access_token"]))).status_code == 200

    key = (await client.post("/v1/api-keys", json={"name": "ci", "scopes": ["requests:write", "requests:read"]},
                             headers=bearer(owner["access_token"]))).json()
    submitted = await client.post("/v1/requests", json=HELLO, headers=bearer(key["key"]))
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["id"]
    assert (await client.get(f"/v1/requests/{request_id}", headers=bearer(owner["access_token"]))).status_code == 200

    reader = (await client.post("/v1/api-keys", json={"scopes": ["usage:read"]},
                                headers=bearer(owner["access_token"]))).json()
    r = await client.post("/v1/requests", json=HELLO, headers=bearer(reader["key"]))
    assert (r.status_code, r.json()["error"]["code"]) == (403, "insufficient_scope")

    stranger = await _signup(client, mailbox)
    r = await client.get(f"/v1/requests/{request_id}", headers=bearer(stranger["access_token"]))
    assert r.status_code == 404  # another tenant's request does not exist for them


async def test_gateway_refuses_missing_forged_and_logged_out_credentials(gateway) -> None:  # type: ignore[no-untyped-def]
    client, mailbox = gateway
    r = await client.get("/v1/requests")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    owner = await _signup(client, mailbox)
    head, payload, signature = owner["access_token"].split(".")
    r = await client.get("/v1/requests", headers=bearer(f"{head}.{payload}.{signature[::-1]}"))
    assert r.status_code == 401
    assert (await client.post("/v1/auth/logout", headers=bearer(owner["access_token"]))).status_code == 204
    assert (await client.get("/v1/requests", headers=bearer(owner["access_token"]))).status_code == 401
