"""The same models, migrations and state rules on SQLite (the single-machine default) and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest

from consumers.result_writer import apply_events
from gateway.request_models import SubmitRequestBody, request_resource
from gateway.request_service import RequestService
from gateway.security import Principal
from gateway.tenants import create_tenant
from lotabots.db import make_engine, migrate
from lotabots.ids import new_id
from lotabots.kafka_io import make_producer
from lotabots.settings import Settings
from lotabots.tiers import load_tier_config
from schemas.events import LifecycleType, RequestLifecycleEvent

TIERS = load_tier_config(Path(__file__).resolve().parent.parent / "lotabots" / "tiers.toml")
# No test runs an enterprise worker, so these requests stay queued on the shared broker (the session's
# stack runs a pro worker that would otherwise start them).
TIER = "enterprise"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path, postgres) -> str:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'lotabots.db'}"
    return postgres.url


def _event(rid: str, tenant: str, kind: LifecycleType, **kw) -> RequestLifecycleEvent:  # type: ignore[no-untyped-def]
    return RequestLifecycleEvent(event_id=new_id("evt"), request_id=rid, tenant_id=tenant, tier=TIER, type=kind,
                                 at=datetime.now(UTC), **kw)


async def test_submit_and_lifecycle_on_both_engines(database_url: str, kafka_topics) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(migrate, database_url)
    await asyncio.to_thread(migrate, database_url)  # idempotent
    engine = make_engine(database_url)
    producer = make_producer(Settings(kafka_bootstrap=kafka_topics.bootstrap), client_id="test")
    await producer.start()
    try:
        tenant_id, key = await create_tenant(engine, TIERS, "t", TIER)
        who = Principal(tenant_id, TIER, frozenset({"requests:write", "requests:read"}), key.id, "api_key")
        service = RequestService(engine, producer, TIERS)
        body = SubmitRequestBody(messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        first = await service.submit(who, body, "k1")
        again = await service.submit(who, body, "k1")
        assert first.row.id == again.row.id and again.replayed
        rid = first.row.id
        assert (await service.get(who, rid)).status == "queued"

        done = _event(rid, tenant_id, LifecycleType.SUCCEEDED, output="Hello!", finish_reason="stop",
                      prompt_tokens=30, completion_tokens=3, finished_at=datetime.now(UTC))
        late_start = _event(rid, tenant_id, LifecycleType.STARTED, started_at=datetime.now(UTC))
        assert await apply_events(engine, [done]) == 1
        assert await apply_events(engine, [late_start, done]) == 0  # never moves backwards, replay is a no-op
        resource = request_resource(await service.get(who, rid))
        assert resource["status"] == "succeeded"
        assert resource["output"] == {"text": "Hello!", "finish_reason": "stop"}
        assert resource["usage"]["total_tokens"] == 33
        rows, cursor = await service.list(who, 10, None, None)
        assert [r.id for r in rows] == [rid] and cursor is None
    finally:
        await producer.stop()
        await engine.dispose()


async def test_cancel_of_a_queued_request_then_worker_counts(database_url: str, kafka_topics) -> None:  # type: ignore[no-untyped-def]
    await asyncio.to_thread(migrate, database_url)
    engine = make_engine(database_url)
    producer = make_producer(Settings(kafka_bootstrap=kafka_topics.bootstrap), client_id="test")
    await producer.start()
    try:
        tenant_id, key = await create_tenant(engine, TIERS, "t", TIER)
        who = Principal(tenant_id, TIER, frozenset({"requests:write", "requests:read"}), key.id, "api_key")
        service = RequestService(engine, producer, TIERS)
        rid = (await service.submit(who, SubmitRequestBody(messages=[{"role": "user", "content": "x"}]), None)).row.id
        assert (await service.cancel(who, rid)).status == "canceled"
        # the worker had already started it: its canceled event fills in the partial counts
        now = datetime.now(UTC)
        await apply_events(engine, [_event(rid, tenant_id, LifecycleType.CANCELED, finish_reason="canceled",
                                           prompt_tokens=20, completion_tokens=5, started_at=now, output="Par")])
        row = await service.get(who, rid)
        assert (row.status, row.completion_tokens) == ("canceled", 5)
    finally:
        await producer.stop()
        await engine.dispose()
