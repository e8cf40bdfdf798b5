"""The in-process backend on an injected clock: concurrency, settlement, expiry, quotas, key overrides."""

from __future__ import annotations

from gateway.limits.backend import Verdict
from gateway.limits.gcra import MICROS
from gateway.limits.memory_backend import MemoryBackend
from gateway.limits.policies import LimitPolicies
from tests.limits.helpers import ticket, tier_config, tier_table

POLICIES = LimitPolicies(
    tier_config(small=tier_table(rpm=600, concurrency=3, tokens_day=100, tokens_month=250),
                slow=tier_table(rpm=6, concurrency=100)),
    {"key_narrow": {"requests_per_minute": 2, "concurrent_requests": 1}},
)
T0 = 10_000 * MICROS


def backend() -> MemoryBackend:
    return MemoryBackend(ttl_s=60)


async def test_the_concurrency_limit_refuses_until_a_request_ends() -> None:
    b = backend()
    for i in range(3):
        assert b.admit_at(ticket(POLICIES, "small", "t1", f"r{i}", reservation=1), T0).verdict == Verdict.ADMITTED
    refused = b.admit_at(ticket(POLICIES, "small", "t1", "r3", reservation=1), T0)
    assert refused.verdict == Verdict.CONCURRENCY and refused.in_flight == 3
    assert b.admit_at(ticket(POLICIES, "small", "t2", "other", reservation=1), T0).verdict == Verdict.ADMITTED
    assert await b.settle("t1", "r1", 5, "2030-01-02", "2030-01")
    assert b.admit_at(ticket(POLICIES, "small", "t1", "r3", reservation=1), T0).verdict == Verdict.ADMITTED


async def test_settling_twice_counts_once() -> None:
    b = backend()
    b.admit_at(ticket(POLICIES, "small", "t1", "r0", reservation=40), T0)
    assert await b.settle("t1", "r0", 30, "2030-01-02", "2030-01")
    assert not await b.settle("t1", "r0", 30, "2030-01-02", "2030-01")  # another replica's copy of the event
    o = b.admit_at(ticket(POLICIES, "small", "t1", "r1"), T0)
    assert (o.used_day, o.used_month, o.reserved) == (30, 30, 0)


async def test_a_refusal_by_concurrency_takes_no_rate_unit() -> None:
    b = backend()
    for i in range(3):
        b.admit_at(ticket(POLICIES, "small", "t1", f"r{i}", reservation=1), T0)
    before = b.admit_at(ticket(POLICIES, "small", "t1", "x", reservation=1), T0)
    after = b.admit_at(ticket(POLICIES, "small", "t1", "y", reservation=1), T0)
    assert before.verdict == after.verdict == Verdict.CONCURRENCY
    assert before.rate_remaining == after.rate_remaining == 600 - 3


async def test_an_unseen_end_frees_the_slot_after_the_ttl_and_signs_of_life_defer_it() -> None:
    clock = [T0]
    b = MemoryBackend(ttl_s=60, clock_us=lambda: clock[0])
    for i in range(3):
        b.admit_at(ticket(POLICIES, "small", "t1", f"r{i}", reservation=1), T0)
    clock[0] = T0 + 50 * MICROS
    await b.touch("t1", "r0")  # r0 started: it lives 60 s from now
    later = T0 + 61 * MICROS
    assert b.admit_at(ticket(POLICIES, "small", "t1", "r3", reservation=1), later).verdict == Verdict.ADMITTED
    assert b.in_flight("t1") == 2  # r1 and r2 expired, r0 was touched, r3 is new
    assert not await b.settle("t1", "r1", 9, "2030-01-02", "2030-01")
    assert await b.settle("t1", "r0", 9, "2030-01-02", "2030-01")


async def test_quota_admits_while_tokens_remain_and_the_actual_count_replaces_the_reservation() -> None:
    b = backend()  # 100 tokens a day
    day = {"day": "2030-01-02", "month": "2030-01"}
    assert b.admit_at(ticket(POLICIES, "small", "t1", "a", reservation=60, **day), T0).verdict == Verdict.ADMITTED
    assert b.admit_at(ticket(POLICIES, "small", "t1", "b", reservation=60, **day), T0).verdict == Verdict.ADMITTED
    full = b.admit_at(ticket(POLICIES, "small", "t1", "c", reservation=60, **day), T0)
    assert full.verdict == Verdict.QUOTA_DAY and (full.used_day, full.reserved) == (120, 120)
    await b.settle("t1", "a", 15, "2030-01-02", "2030-01")
    await b.settle("t1", "b", 20, "2030-01-02", "2030-01")
    o = b.admit_at(ticket(POLICIES, "small", "t1", "c", reservation=60, **day), T0)
    assert o.verdict == Verdict.ADMITTED and (o.used_day, o.reserved) == (35, 0)


async def test_the_faust_baseline_and_the_local_count_take_the_larger() -> None:
    b = backend()
    day = {"day": "2030-01-02", "month": "2030-01"}
    b.admit_at(ticket(POLICIES, "small", "t1", "a", reservation=5, **day), T0)
    await b.settle("t1", "a", 40, "2030-01-02", "2030-01")
    lagging = b.admit_at(ticket(POLICIES, "small", "t1", "b", committed=(10, 10), **day), T0)
    assert lagging.used_day == 40  # the Faust app has not counted `a` yet
    ahead = b.admit_at(ticket(POLICIES, "small", "t1", "c", committed=(100, 100), **day), T0)
    assert ahead.verdict == Verdict.QUOTA_DAY  # it knows usage this replica never saw


async def test_a_new_day_starts_from_zero_but_reservations_in_flight_carry_over() -> None:
    b = backend()  # 100 a day, 250 a month
    d1 = {"day": "2030-01-02", "month": "2030-01"}
    d2 = {"day": "2030-01-03", "month": "2030-01"}
    b.admit_at(ticket(POLICIES, "small", "t1", "a", reservation=10, **d1), T0)
    await b.settle("t1", "a", 95, "2030-01-02", "2030-01")
    b.admit_at(ticket(POLICIES, "small", "t1", "b", reservation=30, **d1), T0)  # 95 < 100: admitted
    assert b.admit_at(ticket(POLICIES, "small", "t1", "c", **d1), T0).verdict == Verdict.QUOTA_DAY
    nxt = b.admit_at(ticket(POLICIES, "small", "t1", "c", reservation=10, **d2), T0)
    assert nxt.verdict == Verdict.ADMITTED
    assert (nxt.used_day, nxt.used_month, nxt.reserved) == (30, 125, 30)  # b's reservation counts on day 2
    await b.settle("t1", "b", 130, "2030-01-03", "2030-01")  # b ended after midnight: day 2's tokens
    month_full = b.admit_at(ticket(POLICIES, "small", "t1", "d", **d2), T0)
    assert month_full.verdict == Verdict.QUOTA_DAY and month_full.used_day == 140
    assert month_full.used_month == 235


async def test_the_monthly_quota_refuses_when_the_daily_one_would_not() -> None:
    b = backend()
    for i, day in enumerate(("2030-01-02", "2030-01-03", "2030-01-04")):
        b.admit_at(ticket(POLICIES, "small", "t1", f"r{i}", reservation=1, day=day), T0)
        await b.settle("t1", f"r{i}", 90, day, "2030-01")
    o = b.admit_at(ticket(POLICIES, "small", "t1", "r4", day="2030-01-05"), T0)
    assert o.verdict == Verdict.QUOTA_MONTH and (o.used_day, o.used_month) == (0, 270)
    assert b.admit_at(ticket(POLICIES, "small", "t1", "r5", day="2030-02-01", month="2030-02"),
                      T0).verdict == Verdict.ADMITTED


async def test_a_key_override_narrows_its_key_only() -> None:
    b = backend()
    k = {"key_id": "key_narrow"}
    assert b.admit_at(ticket(POLICIES, "small", "t1", "a", **k), T0).verdict == Verdict.ADMITTED
    assert b.admit_at(ticket(POLICIES, "small", "t1", "b", **k), T0).verdict == Verdict.KEY_CONCURRENCY
    await b.settle("t1", "a", 1, "2030-01-02", "2030-01")
    second = b.admit_at(ticket(POLICIES, "small", "t1", "b", **k), T0)
    assert second.verdict == Verdict.ADMITTED and second.key_rate_remaining == 0
    await b.settle("t1", "b", 1, "2030-01-02", "2030-01")
    third = b.admit_at(ticket(POLICIES, "small", "t1", "c", **k), T0)
    assert third.verdict == Verdict.KEY_RATE and third.key_rate_retry_us == 30 * MICROS
    # the tenant's other credentials are held only by the tier's limits
    assert b.admit_at(ticket(POLICIES, "small", "t1", "d", key_id="key_other"), T0).verdict == Verdict.ADMITTED


async def test_rate_refusal_reports_when_to_retry() -> None:
    b = backend()
    for i in range(6):
        assert b.admit_at(ticket(POLICIES, "slow", "t1", f"r{i}"), T0).verdict == Verdict.ADMITTED
    o = b.admit_at(ticket(POLICIES, "slow", "t1", "r6"), T0 + 4 * MICROS)
    assert o.verdict == Verdict.RATE and o.rate_retry_us == 6 * MICROS  # T = 10 s, 4 s of it passed
    assert b.admit_at(ticket(POLICIES, "slow", "t1", "r6"), T0 + 10 * MICROS - 1).verdict == Verdict.RATE
    assert b.admit_at(ticket(POLICIES, "slow", "t1", "r6"), T0 + 10 * MICROS).verdict == Verdict.ADMITTED
