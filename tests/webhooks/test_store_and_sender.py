"""The dispatcher's database side on SQLite (the single-machine default; PostgreSQL runs in the
integration tests) and one HTTP attempt against a real loopback receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from consumers.webhook_sender import AttemptOutcome, WebhookSender
from consumers.webhook_store import FAILED, SUCCEEDED, AttemptRecord, DispatchStore
from gateway.auth.key_sealing import KeySealer, new_kek
from gateway.security import Principal
from gateway.webhook_models import CreateEndpointBody
from gateway.webhook_secrets import SigningSecretStore
from gateway.webhook_service import WebhookService
from gateway.webhook_signing import SecretBox, new_secret
from lotabots.settings import Settings
from schemas.events import LifecycleType, RequestLifecycleEvent
from tests.webhooks.receiver import Answer, Receiver


@pytest.fixture
async def sqlite(tmp_path: Path) -> AsyncIterator:  # type: ignore[type-arg]
    from lotabots.db import make_engine, migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'wh.db'}"
    migrate(url)
    engine = make_engine(url)
    yield engine
    await engine.dispose()


@pytest.fixture(scope="module")
def loopback() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _box() -> SecretBox:
    import base64

    kek = new_kek()
    return SecretBox(KeySealer(base64.urlsafe_b64decode(kek + "=" * (-len(kek) % 4))))


async def _tenant_with_request(engine, **webhook) -> tuple[Principal, str]:  # type: ignore[no-untyped-def]
    from gateway.tenants import create_tenant
    from lotabots.tiers import get_tier_config
    from schemas.relational import requests_table

    tenant_id, _ = await create_tenant(engine, get_tier_config(), "t", "pro")
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(requests_table.insert().values(
            id="req_s1", tenant_id=tenant_id, tier="pro", status="running", status_rank=1, input={"messages": []},
            params={}, request_hash="h", created_at=now, updated_at=now, **webhook))
    return Principal(tenant_id, "pro", frozenset({"admin"}), "k", "api_key"), tenant_id


def _succeeded() -> RequestLifecycleEvent:
    now = datetime.now(UTC)
    return RequestLifecycleEvent(event_id="evt_s", request_id="req_s1", tenant_id="", tier="pro",
                                 type=LifecycleType.SUCCEEDED, at=now, output="ok", finish_reason="stop",
                                 prompt_tokens=1, completion_tokens=1)


async def test_deliveries_are_stored_once_and_their_attempts_logged(sqlite) -> None:  # type: ignore[no-untyped-def]
    box = _box()
    settings = Settings(webhook_allow_hosts="127.0.0.1/32")
    secrets = SigningSecretStore(sqlite, box)
    service = WebhookService(settings, sqlite, None, secrets)  # type: ignore[arg-type]
    who, tenant_id = await _tenant_with_request(sqlite)
    endpoint, _, secret = await service.create_endpoint(who, CreateEndpointBody(url="http://127.0.0.1:9/h",
                                                                                all_requests=True))
    store = DispatchStore(sqlite, secrets)
    (planned,) = await store.plan([_succeeded()])
    assert [p.endpoint_id for p in planned] == [endpoint.id]
    assert await store.create(planned) == {planned[0].id}
    assert await store.create(planned) == {planned[0].id}  # stored once; still waiting for attempt 1
    ctx = await store.context(planned[0].id)
    assert ctx is not None and ctx.secrets == [secret] and ctx.endpoint.id == endpoint.id

    await store.record(ctx, AttemptRecord(1, AttemptOutcome(500, 3.5, "boom\x00"), "retrying",
                                          next_attempt_at=datetime.now(UTC) + timedelta(seconds=5)))
    assert await store.create(planned) == set()  # attempted: a re-read event does not start it again
    after = await store.context(planned[0].id)
    assert after.delivery.attempts == 1 and after.endpoint.failing_since is not None  # type: ignore[union-attr]
    await store.record(after, AttemptRecord(2, AttemptOutcome(200, 1.0, "ok"), SUCCEEDED))
    done = await store.context(planned[0].id)
    assert done.delivery.status == SUCCEEDED and done.delivery.delivered_at is not None  # type: ignore[union-attr]
    assert done.endpoint.failing_since is None  # type: ignore[union-attr]  # a success clears the record
    row, attempts = await service.get_delivery(who, planned[0].id)
    assert [a.status_code for a in attempts] == [500, 200] and row.attempts == 2

    await store.record(done, AttemptRecord(3, AttemptOutcome(410, 1.0), FAILED, disable_reason="gone"))  # type: ignore[arg-type]
    shown, _ = await service.get_endpoint(who, endpoint.id)
    assert not shown.enabled and shown.disabled_reason == "gone"


async def test_direct_urls_are_signed_with_the_tenant_default_secret(sqlite) -> None:  # type: ignore[no-untyped-def]
    secrets = SigningSecretStore(sqlite, _box())
    who, tenant_id = await _tenant_with_request(sqlite, webhook_url="http://127.0.0.1:9/d")
    store = DispatchStore(sqlite, secrets)
    (planned,) = await store.plan([_succeeded()])
    await store.create(planned)
    ctx = await store.context(planned[0].id)
    assert ctx is not None and ctx.endpoint is None and len(ctx.secrets) == 1  # created on first use
    assert ctx.secrets == await secrets.live(tenant_id, None)
    rotated, _ = await secrets.rotate(tenant_id, None, overlap_s=60)
    assert (await store.context(planned[0].id)).secrets == [rotated, ctx.secrets[0]]  # type: ignore[union-attr]


async def test_one_attempt_is_signed_timed_and_its_response_capped(loopback: Receiver) -> None:
    settings = Settings(webhook_allow_hosts="127.0.0.1/32", webhook_log_response_bytes=5)
    sender = WebhookSender(settings)
    secret = new_secret()
    loopback.script("one", Answer(503, {"Retry-After": "7"}))
    try:
        outcome = await sender.send(loopback.url("one"), "msg_one", b'{"a":1}', [secret])
        refused = await sender.send("http://127.0.0.2:9/x", "msg_two", b"{}", [secret])
    finally:
        await sender.aclose()
    assert outcome.status_code == 503 and outcome.retry_after_s == 7 and outcome.latency_ms > 0
    assert outcome.response_body == '{"ok"'  # cut to webhook_log_response_bytes
    got = loopback.at("one")[0]
    assert Webhook(secret).verify(got.body, got.headers) == {"a": 1}
    assert got.headers["webhook-id"] == "msg_one" and got.headers["content-type"] == "application/json"
    assert refused.error_code == "destination_refused" and refused.status_code is None
