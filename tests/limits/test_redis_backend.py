"""The Redis backend against a real redis-server: the same arithmetic as in-process, shared, one round trip."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest
from redis.asyncio.connection import Connection

from gateway.limits.backend import Verdict
from gateway.limits.gcra import MICROS
from gateway.limits.memory_backend import MemoryBackend
from gateway.limits.policies import LimitPolicies
from gateway.limits.redis_backend import RedisBackend
from lotabots.ids import new_id
from tests.limits.helpers import ticket, tier_config, tier_table
from tests.services import ServiceHandle

POLICIES = LimitPolicies(
    tier_config(a=tier_table(rpm=30, concurrency=4, tokens_day=500, tokens_month=900),
                b=tier_table(rpm=7, concurrency=2, tokens_day=10**6, tokens_month=10**6)),
    {  # an API key belongs to one tenant: t<N>_k has a rate and a concurrency limit, t<N>_c a concurrency limit
        **{f"{t}_k": {"requests_per_minute": 5, "concurrent_requests": 2} for t in ("t1", "t2", "t5", "t7")},
        **{f"{t}_c": {"concurrent_requests": 1} for t in ("t1", "t2", "t8")},
    },
)
T0 = 1_900_000_000 * MICROS  # an epoch instant in microseconds, like Redis TIME gives


@pytest.fixture
async def redis_backend(redis_server: ServiceHandle) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(redis_server.url, prefix=new_id("test"), ttl_s=600, timeout_s=2)
    await backend.start()
    yield backend
    await backend.close()


async def test_redis_and_in_process_agree_on_every_outcome(redis_backend: RedisBackend) -> None:
    memory = MemoryBackend(ttl_s=600)
    rng = random.Random(7)
    now, in_flight, ops, seen = T0, [], 0, set()
    days = [("2030-01-30", "2030-01"), ("2030-01-31", "2030-01"), ("2030-02-01", "2030-02")]
    for step in range(600):
        now += rng.choice((0, 0, 1, 999, 250_000, 1_700_000, 9 * MICROS))
        day, month = days[min(step // 200, 2)]
        if in_flight and rng.random() < 0.35:
            tenant, rid = in_flight.pop(rng.randrange(len(in_flight)))
            tokens = rng.randrange(0, 120)
            assert await memory.settle(tenant, rid, tokens, day, month)
            assert await redis_backend.settle_now(tenant, rid, tokens, day, month)
            continue
        tenant = rng.choice(("t1", "t2"))
        t = ticket(POLICIES, rng.choice(("a", "b")), tenant, f"r{step}", reservation=rng.randrange(1, 200),
                   key_id=rng.choice((None, f"{tenant}_k", f"{tenant}_c", f"{tenant}_plain")), day=day, month=month,
                   committed=rng.choice(((0, 0), (100, 300), (450, 450))))
        expected = memory.admit_at(t, now)
        got = await redis_backend.admit(t, now_us=now)
        assert got == expected, (step, t)
        if got.verdict == Verdict.ADMITTED:
            in_flight.append((tenant, t.request_id))
        ops += 1
        seen.add(got.verdict)
    assert ops > 300
    assert {Verdict.ADMITTED, Verdict.RATE, Verdict.CONCURRENCY, Verdict.QUOTA_DAY} <= seen


async def test_every_verdict_agrees_between_redis_and_in_process(redis_backend: RedisBackend) -> None:
    """A scripted sequence in which every verdict occurs (the random walk may miss the rare ones)."""
    memory = MemoryBackend(ttl_s=600)
    seen = set()
    script = [
        ("a", "t9", None, 0), ("a", "t9", None, 0), ("a", "t9", None, 0), ("a", "t9", None, 0),  # 4 in flight
        ("a", "t9", None, 0),  # concurrency
        ("b", "t8", "t8_c", 0), ("b", "t8", "t8_c", 0),  # key concurrency
        ("b", "t7", "t7_k", 0), ("b", "t7", "t7_k", 0),  # t7_k: 2 in flight
    ]
    for i, (tier, tenant, key, dt) in enumerate(script):
        t = ticket(POLICIES, tier, tenant, f"s{i}", reservation=1, key_id=key)
        o = memory.admit_at(t, T0 + dt)
        assert await redis_backend.admit(t, now_us=T0 + dt) == o
        seen.add(o.verdict)
    for i in range(8):  # tier b: 7 a minute -> rate refusals once its burst is spent
        t = ticket(POLICIES, "b", "t6", f"b{i}", reservation=1)
        o = memory.admit_at(t, T0)
        assert await redis_backend.admit(t, now_us=T0) == o
        seen.add(o.verdict)
        if o.verdict == Verdict.ADMITTED:
            await memory.settle("t6", f"b{i}", 1, "2030-01-02", "2030-01")
            await redis_backend.settle_now("t6", f"b{i}", 1, "2030-01-02", "2030-01")
    for key_round in range(6):  # t5_k: 5 a minute
        t = ticket(POLICIES, "a", "t5", f"k{key_round}", reservation=1, key_id="t5_k")
        o = memory.admit_at(t, T0)
        assert await redis_backend.admit(t, now_us=T0) == o
        seen.add(o.verdict)
        if o.verdict == Verdict.ADMITTED:
            await memory.settle("t5", f"k{key_round}", 1, "2030-01-02", "2030-01")
            await redis_backend.settle_now("t5", f"k{key_round}", 1, "2030-01-02", "2030-01")
    for tenant, committed in (("t4", (500, 500)), ("t3", (10, 900))):
        t = ticket(POLICIES, "a", tenant, "q", committed=committed)
        o = memory.admit_at(t, T0)
        assert await redis_backend.admit(t, now_us=T0) == o
        seen.add(o.verdict)
    assert seen == set(Verdict)


async def test_two_replicas_share_in_flight_requests_and_settle_once(redis_server: ServiceHandle) -> None:
    prefix = new_id("test")
    one = RedisBackend(redis_server.url, prefix=prefix, ttl_s=600, timeout_s=2)
    two = RedisBackend(redis_server.url, prefix=prefix, ttl_s=600, timeout_s=2)
    for b in (one, two):
        await b.start()
    try:
        for i in range(4):
            replica = (one, two)[i % 2]
            o = await replica.admit(ticket(POLICIES, "a", "t1", f"r{i}", reservation=50))
            assert o.verdict == Verdict.ADMITTED and o.in_flight == i + 1
        assert (await two.admit(ticket(POLICIES, "a", "t1", "r4"))).verdict == Verdict.CONCURRENCY
        # both replicas see the terminal event of r0: one ends it, the other's copy is a no-op
        assert await one.settle_now("t1", "r0", 70, "2030-01-02", "2030-01")
        assert not await two.settle_now("t1", "r0", 70, "2030-01-02", "2030-01")
        o = await two.admit(ticket(POLICIES, "a", "t1", "r4", reservation=1))
        assert o.verdict == Verdict.ADMITTED and (o.used_day, o.reserved) == (70 + 150, 150)
        # the queued path (results tail) lands too
        await one.settle("t1", "r1", 5, "2030-01-02", "2030-01")
        await one._queue.join()  # noqa: SLF001
        assert not await two.settle_now("t1", "r1", 5, "2030-01-02", "2030-01")
    finally:
        for b in (one, two):
            await b.close()


async def test_an_admission_is_one_round_trip(redis_backend: RedisBackend, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    await redis_backend.admit(ticket(POLICIES, "a", "warm", "w0"))  # loads the script (NOSCRIPT + EVAL once)
    sent: list[bytes] = []
    original = Connection.send_packed_command

    async def counting(self, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(b"".join(command) if isinstance(command, list) else command)
        return await original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    before = await _evalsha_calls(redis_backend)
    sent.clear()
    for i in range(10):
        await redis_backend.admit(ticket(POLICIES, "a", f"tenant{i}", f"r{i}"))
    assert len(sent) == 10 and all(b"EVALSHA" in c for c in sent)
    assert await _evalsha_calls(redis_backend) - before == 10


async def test_an_entry_whose_end_is_never_seen_expires(redis_server: ServiceHandle) -> None:
    backend = RedisBackend(redis_server.url, prefix=new_id("test"), ttl_s=30, timeout_s=2)
    await backend.start()
    try:
        for i in range(4):
            assert (await backend.admit(ticket(POLICIES, "a", "t1", f"r{i}"), now_us=T0)).verdict == Verdict.ADMITTED
        assert (await backend.admit(ticket(POLICIES, "a", "t1", "x"), now_us=T0 + 29 * MICROS)).verdict == \
            Verdict.CONCURRENCY
        late = await backend.admit(ticket(POLICIES, "a", "t1", "x"), now_us=T0 + 31 * MICROS)
        assert late.verdict == Verdict.ADMITTED and late.in_flight == 1 and late.reserved == 0
    finally:
        await backend.close()


async def _evalsha_calls(backend: RedisBackend) -> int:
    stats = await backend.client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
