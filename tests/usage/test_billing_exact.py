"""The headline: billed totals in ClickHouse equal what the gateway accepted and the workers produced,
exactly, while the Faust worker and the usage service are SIGKILLed mid-stream and restarted."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from lotabots.tiers import load_tier_config
from schemas.relational import requests_table as R
from tests.conftest import _new_tenant
from tests.usage.conftest import UsagePipeline

pytestmark = pytest.mark.integration

TIERS = load_tier_config(Path(__file__).resolve().parents[2] / "lotabots" / "tiers.toml")
TERMINAL = ("succeeded", "failed", "canceled")


async def submit(client: httpx.AsyncClient, text: str) -> str:
    """Submit one request; a 429 from the rate limits is waited out (it is not an accepted request)."""
    for _ in range(60):
        r = await client.post("/v1/requests", json={"messages": [{"role": "user", "content": text}], "max_tokens": 4})
        if r.status_code == 202:
            return r.json()["id"]
        assert r.status_code == 429, r.text
        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
    raise AssertionError("rate limited for a minute")


async def wait_all_terminal(engine: Any, ids: list[str], timeout: float = 400) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with engine.connect() as conn:
            done = (await conn.execute(
                select(func.count()).select_from(R).where(R.c.id.in_(ids), R.c.status.in_(TERMINAL))
            )).scalar_one()
        if done == len(ids):
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"only {done} of {len(ids)} requests reached a terminal state")


async def expected_totals(engine: Any, tenants: list[str]) -> dict[str, tuple[int, int, int, Decimal]]:
    """What the gateway accepted (rows) and the workers produced (tokens), priced at the tier's prices."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(R.c.tenant_id, R.c.tier, func.count(), func.coalesce(func.sum(R.c.prompt_tokens), 0),
                   func.coalesce(func.sum(R.c.completion_tokens), 0))
            .where(R.c.tenant_id.in_(tenants)).group_by(R.c.tenant_id, R.c.tier)
        )).all()
    out = {}
    for tenant, tier, requests, prompt, completion in rows:
        p = TIERS.get(tier).prices
        cost = p.per_request * requests + p.per_1k_input_tokens * prompt / 1000 + p.per_1k_output_tokens * completion / 1000
        out[tenant] = (int(requests), int(prompt), int(completion), cost)
    return out


def billed(pipeline: UsagePipeline, table: str, tenants: list[str]) -> dict[str, tuple[int, int, int, Decimal]]:
    quoted = ", ".join(f"'{t}'" for t in tenants)
    body = pipeline.sql(
        f"SELECT tenant_id, sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(cost) "
        f"FROM lotabots_usage.{table} WHERE tenant_id IN ({quoted}) GROUP BY tenant_id")
    return {r[0]: (int(r[1]), int(r[2]), int(r[3]), Decimal(r[4])) for r in body["rows"]}


async def test_billing_is_exact_when_the_stream_and_the_sink_are_killed_mid_stream(
    stack: Any, usage_pipeline: UsagePipeline, free_worker: Any, engine: Any,
) -> None:
    tenants = [await _new_tenant(engine, tier) for tier in ("pro", "pro", "free")]
    clients = [httpx.AsyncClient(base_url=stack.gateway_url, timeout=30, headers={"Authorization": f"Bearer {key}"})
               for _, key in tenants]
    ids: list[str] = []

    async def wave(n: int, label: str) -> None:
        ids.extend(await asyncio.gather(*(
            submit(clients[i % len(clients)], f"{label} {i}: name a colour") for i in range(n))))

    try:
        await wave(6, "first")
        usage_pipeline.kill_stream()          # facts pile up on usage.events
        await wave(6, "second")
        usage_pipeline.kill_service()         # and on usage.billable once the stream is back
        usage_pipeline.start_stream()
        await wave(6, "third")
        usage_pipeline.start_service()
        usage_pipeline.wait_ready()
        usage_pipeline.kill_stream()          # again, while it catches up and the workers still finish
        usage_pipeline.start_stream()
        usage_pipeline.wait_ready()
        usage_pipeline.kill_service()         # and the sink, while it inserts
        usage_pipeline.start_service()
        await wait_all_terminal(engine, ids)
    finally:
        for client in clients:
            await client.aclose()
    usage_pipeline.wait_ready()

    tenant_ids = [t for t, _ in tenants]
    expected = await expected_totals(engine, tenant_ids)
    assert sum(v[0] for v in expected.values()) == len(ids) == 18
    assert all(v[1] > 0 and v[2] > 0 for v in expected.values()), expected
    deadline = time.monotonic() + 180
    raw = daily = {}
    while time.monotonic() < deadline:
        raw = billed(usage_pipeline, "usage_events", tenant_ids)
        daily = billed(usage_pipeline, "usage_daily", tenant_ids)
        if raw == expected and daily == expected:
            break
        await asyncio.sleep(1)
    assert raw == expected, f"raw usage differs: billed {raw}, accepted/produced {expected}"
    assert daily == expected, f"daily rollup differs: billed {daily}, accepted/produced {expected}"
    facts = usage_pipeline.sql(
        "SELECT kind, count(), uniqExact(event_id) FROM lotabots_usage.usage_events WHERE tenant_id IN ("
        + ", ".join(f"'{t}'" for t in tenant_ids) + ") GROUP BY kind ORDER BY kind")
    counts = {kind: (n, unique) for kind, n, unique in facts["rows"]}
    # one row per fact, none twice (refusals by the rate limits, if any, are rows of their own kind)
    assert (counts["inference"], counts["request"]) == ((18, 18), (18, 18)), counts
    assert all(n == unique for n, unique in counts.values()), counts
