"""Limits through the real gateway (in-process backend): PostgreSQL, Kafka, the results tail, the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from lotabots.kafka_io import encode, make_consumer, make_producer
from lotabots.settings import Settings
from lotabots.tiers import TierConfig
from schemas.topics import USAGE_EVENTS, USAGE_QUOTA_STATE
from schemas.usage import QuotaState, UsageEvent, UsageEventType, usage_message_events
from tests.limits.conftest import NewTenant
from tests.limits.gateways import (
    BURST_RPM,
    PRO_CONCURRENCY,
    PRO_TOKENS_PER_DAY,
    SpawnedGateway,
    spawn_gateway,
    wait_terminal,
)
from tests.limits.helpers import parse_sf_list
from tests.limits.quota_walk import exhaust_quota
from tests.services import ServiceHandle
from tests.stack import Stack

pytestmark = pytest.mark.integration

HELLO = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 1}


async def _publish_quota_state(bootstrap: str, state: QuotaState) -> None:
    producer = make_producer(Settings(kafka_bootstrap=bootstrap), client_id="test-quota-state")
    await producer.start()
    try:
        await producer.send_and_wait(USAGE_QUOTA_STATE, encode(state), key=state.tenant_id.encode())
    finally:
        await producer.stop()


def _today_state(tenant_id: str, tokens_day: int, tokens_month: int, day: datetime | None = None) -> QuotaState:
    moment = day or datetime.now(UTC)
    return QuotaState(tenant_id=tenant_id, day=moment.strftime("%Y-%m-%d"), month=moment.strftime("%Y-%m"),
                      tokens_day=tokens_day, tokens_month=tokens_month, updated_at=datetime.now(UTC))


@pytest.fixture(scope="module")
async def over_quota_before_start(new_tenant: NewTenant, kafka: ServiceHandle) -> tuple[str, str]:
    """A tenant whose day's quota the Faust app counted as used before the gateway started."""
    tenant_id, key = await new_tenant("pro")
    await _publish_quota_state(kafka.bootstrap, _today_state(tenant_id, PRO_TOKENS_PER_DAY, PRO_TOKENS_PER_DAY))
    return tenant_id, key


@pytest.fixture(scope="module")
def memory_gateway(stack: Stack, limits_tiers: tuple[Path, TierConfig],
                   over_quota_before_start: tuple[str, str]) -> Iterator[SpawnedGateway]:
    gateway = spawn_gateway(stack, "gateway-limits-memory", limits_tiers[0], LOTABOTS_RATE_LIMIT_BACKEND="memory")
    yield gateway
    gateway.process.stop()


def _client(gateway: SpawnedGateway, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=gateway.url, timeout=60, headers={"Authorization": f"Bearer {key}"})


async def test_the_rate_limit_is_exact_at_the_boundary(memory_gateway: SpawnedGateway, new_tenant: NewTenant,
                                                      kafka: ServiceHandle) -> None:
    tenant_id, key = await new_tenant("rl_burst")  # 12 a minute: T = 5 s, a burst of 12
    async with _client(memory_gateway, key) as client:
        responses = await asyncio.gather(*(client.post("/v1/requests", json=HELLO) for _ in range(BURST_RPM + 4)))
        admitted = [r for r in responses if r.status_code == 202]
        refused = [r for r in responses if r.status_code == 429]
        assert len(admitted) == BURST_RPM and len(refused) == 4
        # each admission took exactly one unit: the remaining counts are 11, 10, ..., 0 in some order
        remaining = sorted(int(parse_sf_list(r.headers["ratelimit"])["rpm"]["r"]) for r in admitted)
        assert remaining == list(range(BURST_RPM))
        for r in refused:
            assert r.json()["error"]["code"] == "rate_limited"
            assert 1 <= int(r.headers["retry-after"]) <= 60 // BURST_RPM
            assert parse_sf_list(r.headers["ratelimit"])["rpm"]["r"] == 0
        # Retry-After is honest: after it, exactly one more request conforms
        await asyncio.sleep(max(int(r.headers["retry-after"]) for r in refused))
        again = [await client.post("/v1/requests", json=HELLO) for _ in range(2)]
        assert [r.status_code for r in again] == [202, 429]
    # every refusal became a request.rejected usage fact
    reasons = await _rejections(kafka.bootstrap, tenant_id, expect=5)
    assert reasons == ["rate_limited"] * 5


async def test_responses_carry_well_formed_ratelimit_fields(memory_gateway: SpawnedGateway,
                                                            new_tenant: NewTenant) -> None:
    _, key = await new_tenant("rl_burst")
    async with _client(memory_gateway, key) as client:
        first = await client.post("/v1/requests", json=HELLO)
        assert first.status_code == 202
        policy = parse_sf_list(first.headers["ratelimit-policy"])
        assert policy == {"rpm": {"q": BURST_RPM, "w": 60},
                          "concurrency": {"q": 1000, "qu": "concurrent-requests"}}
        limits = parse_sf_list(first.headers["ratelimit"])
        assert limits["rpm"] == {"r": BURST_RPM - 1, "t": 60 // BURST_RPM}
        assert limits["concurrency"] == {"r": 1000 - 1}  # this request is in flight (no worker for `burst`)
        for _ in range(BURST_RPM - 1):
            assert (await client.post("/v1/requests", json=HELLO)).status_code == 202
        refused = await client.post("/v1/requests", json=HELLO)
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert error["code"] == "rate_limited" and error["details"]["policy"] == "rpm"
        assert error["details"]["retry_after_s"] == int(refused.headers["retry-after"])
        assert parse_sf_list(refused.headers["ratelimit-policy"]) == policy
        after = parse_sf_list(refused.headers["ratelimit"])
        assert after["rpm"]["r"] == 0 and 1 <= after["rpm"]["t"] <= 60 // BURST_RPM
        assert after["concurrency"] == {"r": 1000 - BURST_RPM}


async def test_a_replay_or_a_failed_submit_holds_no_slot(memory_gateway: SpawnedGateway,
                                                         new_tenant: NewTenant) -> None:
    _, key = await new_tenant("rl_burst")  # no worker: what is admitted stays in flight

    def free_slots(r: httpx.Response) -> int:
        return int(parse_sf_list(r.headers["ratelimit"])["concurrency"]["r"])

    async with _client(memory_gateway, key) as client:
        first = await client.post("/v1/requests", json=HELLO, headers={"Idempotency-Key": "k1"})
        assert first.status_code == 202 and free_slots(first) == 999
        replay = await client.post("/v1/requests", json=HELLO, headers={"Idempotency-Key": "k1"})
        assert replay.status_code == 202 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json()["id"] == first.json()["id"]
        too_long = await client.post("/v1/requests", json={**HELLO, "max_tokens": 100_000})
        assert too_long.status_code == 422 and too_long.json()["error"]["code"] == "max_tokens_exceeds_tier_cap"
        second = await client.post("/v1/requests", json=HELLO)
        assert second.status_code == 202 and free_slots(second) == 998  # the first and this one


async def test_a_concurrency_slot_is_released_when_the_request_ends(memory_gateway: SpawnedGateway,
                                                                   new_tenant: NewTenant) -> None:
    _, key = await new_tenant("pro")
    body = {"messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 4}
    async with _client(memory_gateway, key) as client:
        first = await asyncio.gather(*(client.post("/v1/requests", json=body) for _ in range(PRO_CONCURRENCY)))
        assert [r.status_code for r in first] == [202] * PRO_CONCURRENCY
        blocked = await client.post("/v1/requests", json=body)
        assert blocked.status_code == 429, blocked.text
        assert blocked.json()["error"]["code"] == "concurrency_limited"
        assert parse_sf_list(blocked.headers["ratelimit"])["concurrency"] == {"r": 0}
        assert blocked.headers["retry-after"] == "1"
        for r in first:
            assert (await wait_terminal(client, r.json()["id"]))["status"] == "succeeded"
        # the gateway learns of the ends from the results topic, one event at a time (the poll reads the
        # result writer's table, another consumer): a 202 can come with only some slots released, so wait
        # for one admitted with every other slot free; one admitted early holds a slot until it ends
        deadline = time.monotonic() + 120
        while True:
            again = await client.post("/v1/requests", json=body)
            free = parse_sf_list(again.headers["ratelimit"])["concurrency"] if "ratelimit" in again.headers else None
            if again.status_code == 202 and free == {"r": PRO_CONCURRENCY - 1}:
                break
            assert time.monotonic() < deadline, (
                f"never admitted with all slots released: {again.status_code}, concurrency {free}, {again.text}")
            if again.status_code == 202:
                await wait_terminal(client, again.json()["id"])
            await asyncio.sleep(0.2)
        await wait_terminal(client, again.json()["id"])


async def test_concurrent_submits_overshoot_the_quota_by_at_most_one_reservation(
    memory_gateway: SpawnedGateway, new_tenant: NewTenant
) -> None:
    _, key = await new_tenant("pro")
    async with _client(memory_gateway, key) as client:
        await exhaust_quota([client], PRO_TOKENS_PER_DAY)


async def test_the_faust_quota_state_is_enforced_from_start_and_followed_live(
    memory_gateway: SpawnedGateway, over_quota_before_start: tuple[str, str], new_tenant: NewTenant,
    kafka: ServiceHandle,
) -> None:
    async with _client(memory_gateway, over_quota_before_start[1]) as client:
        refused = await client.post("/v1/requests", json=HELLO)
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "quota_exceeded"
    assert error["details"]["period"] == "day" and error["details"]["used_tokens"] == PRO_TOKENS_PER_DAY
    assert 1 <= int(refused.headers["retry-after"]) <= 86400  # the next UTC midnight

    tenant_id, key = await new_tenant("pro")
    async with _client(memory_gateway, key) as client:
        ok = await client.post("/v1/requests", json=HELLO)
        assert ok.status_code == 202
        await wait_terminal(client, ok.json()["id"])
        await _publish_quota_state(kafka.bootstrap, _today_state(tenant_id, PRO_TOKENS_PER_DAY + 5, 10**6))
        # a 429 alone can be the concurrency limit (the gateway releases slots as the results tail sees ends)
        code = await _submit_until(client, _over_quota)
        assert code.json()["error"]["code"] == "quota_exceeded"
        assert code.json()["error"]["details"]["used_tokens"] >= PRO_TOKENS_PER_DAY + 5  # the state's count

    # After midnight the Faust app's state still names yesterday until it counts today's first fact:
    # yesterday's tokens hold nothing back today, the month's do. (A fresh tenant: the session's Faust app,
    # when one runs, publishes its own counts of the first tenant's facts; the tail keeps the larger.)
    tenant_id, key = await new_tenant("pro")
    now = datetime.now(UTC)
    yesterday = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    await _publish_quota_state(kafka.bootstrap, QuotaState(
        tenant_id=tenant_id, day=yesterday, month=now.strftime("%Y-%m"), tokens_day=10**9, tokens_month=10**9,
        updated_at=now))
    async with _client(memory_gateway, key) as client:
        refused = await _submit_until(client, _over_quota)
    assert refused.json()["error"]["details"]["period"] == "month", refused.text


async def _rejections(bootstrap: str, tenant_id: str, expect: int, timeout: float = 60) -> list[str]:
    consumer = make_consumer(Settings(kafka_bootstrap=bootstrap), USAGE_EVENTS, group_id=None,
                             client_id="test-rejections")
    await consumer.start()
    reasons: list[str] = []
    try:
        deadline = time.monotonic() + timeout
        while len(reasons) < expect and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:  # a message is one CloudEvent or a CloudEvents batch
                        events = [UsageEvent.model_validate(e) for e in usage_message_events(record.value)]
                    except ValueError:  # the shared topic also carries other suites' poison events
                        continue
                    reasons += [e.data.reason for e in events  # type: ignore[union-attr]
                                if e.type is UsageEventType.REQUEST_REJECTED and e.tenant_id == tenant_id]
    finally:
        await consumer.stop()
    return reasons


def _over_quota(r: httpx.Response) -> bool:
    return r.status_code == 429 and r.json()["error"]["code"] == "quota_exceeded"


async def _submit_until(client: httpx.AsyncClient, done, timeout: float = 60) -> httpx.Response:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        r = await client.post("/v1/requests", json=HELLO)
        if done(r) or time.monotonic() > deadline:
            assert done(r), r.text
            return r
        if r.status_code == 202:
            await wait_terminal(client, r.json()["id"])
        await asyncio.sleep(0.3)
