"""Two gateway processes sharing limit state in a real Redis: any replica enforces what all admitted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lotabots.ids import new_id
from lotabots.tiers import TierConfig
from tests.limits.conftest import NewTenant
from tests.limits.gateways import (
    FLOOD_RPM,
    PRO_CONCURRENCY,
    PRO_TOKENS_PER_DAY,
    SpawnedGateway,
    spawn_gateway,
    wait_terminal,
)
from tests.limits.quota_walk import exhaust_quota
from tests.services import ServiceHandle
from tests.stack import Stack

pytestmark = pytest.mark.integration

HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1}


@pytest.fixture(scope="module")
def redis_gateways(stack: Stack, limits_tiers: tuple[Path, TierConfig],
                   redis_server: ServiceHandle) -> Iterator[list[SpawnedGateway]]:
    env = {"LOTABOTS_RATE_LIMIT_BACKEND": "redis", "LOTABOTS_REDIS_URL": redis_server.url,
           "LOTABOTS_RATE_LIMIT_REDIS_PREFIX": new_id("gw")}
    gateways = [spawn_gateway(stack, f"gateway-limits-redis-{i}", limits_tiers[0], **env) for i in range(2)]
    yield gateways
    for gateway in gateways:
        gateway.process.stop()


def _clients(gateways: list[SpawnedGateway], key: str) -> list[httpx.AsyncClient]:
    return [httpx.AsyncClient(base_url=g.url, timeout=60, headers={"Authorization": f"Bearer {key}"})
            for g in gateways]


async def test_two_gateways_on_redis_admit_within_two_percent_of_the_limit(
    redis_gateways: list[SpawnedGateway], new_tenant: NewTenant
) -> None:
    """Saturating demand spread over both replicas gets what ONE limit allows: its burst plus one request
    per emission interval over the run (each replica on its own would admit a full burst)."""
    _, key = await new_tenant("rl_flood")  # 300 a minute: a burst of 300, then one every 200 ms
    clients = _clients(redis_gateways, key)
    total, sent = 900, 0
    admitted, refused = [0, 0], [0, 0]

    async def caller() -> None:
        nonlocal sent
        while sent < total:
            replica = sent % 2
            sent += 1
            r = await clients[replica].post("/v1/requests", json=HELLO)
            if r.status_code == 202:
                admitted[replica] += 1
            else:
                assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited", r.text
                refused[replica] += 1

    try:
        started = time.monotonic()
        await asyncio.gather(*(caller() for _ in range(16)))
        elapsed = time.monotonic() - started
    finally:
        for c in clients:
            await c.aclose()
    expected = FLOOD_RPM + elapsed / (60 / FLOOD_RPM)
    got = sum(admitted)
    print(f"admitted {got} (per replica {admitted}) of {total} in {elapsed:.2f}s; GCRA allows {expected:.1f}")
    assert abs(got - expected) <= 0.02 * expected, (got, expected, elapsed, admitted)
    assert min(admitted) > 0 and min(refused) > 0  # both replicas admitted and refused
    assert got < 2 * FLOOD_RPM * 0.9  # not one full allowance per replica


async def test_a_slot_taken_on_one_replica_is_refused_and_released_on_the_other(
    redis_gateways: list[SpawnedGateway], new_tenant: NewTenant
) -> None:
    _, key = await new_tenant("pro")
    one, two = _clients(redis_gateways, key)
    body = {"messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 4}
    try:
        taken = await asyncio.gather(*(one.post("/v1/requests", json=body) for _ in range(PRO_CONCURRENCY)))
        assert [r.status_code for r in taken] == [202] * PRO_CONCURRENCY
        blocked = await two.post("/v1/requests", json=body)
        assert blocked.status_code == 429 and blocked.json()["error"]["code"] == "concurrency_limited"
        for r in taken:
            assert (await wait_terminal(one, r.json()["id"]))["status"] == "succeeded"
        deadline = time.monotonic() + 60
        while True:
            again = await two.post("/v1/requests", json=body)
            if again.status_code == 202 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert again.status_code == 202, again.text
        await wait_terminal(two, again.json()["id"])
    finally:
        for c in (one, two):
            await c.aclose()


async def test_concurrent_submits_on_both_replicas_overshoot_the_quota_by_at_most_one_reservation(
    redis_gateways: list[SpawnedGateway], new_tenant: NewTenant
) -> None:
    _, key = await new_tenant("pro")
    clients = _clients(redis_gateways, key)
    try:
        await exhaust_quota(clients, PRO_TOKENS_PER_DAY)
    finally:
        for c in clients:
            await c.aclose()
