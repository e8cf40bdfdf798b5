"""Admission rules above the backend: refusal codes, Retry-After, quota state records, settlement periods."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gateway.errors import ApiError
from gateway.limits.admission import SubmitLimits
from gateway.limits.backend import Verdict
from gateway.limits.gcra import MICROS
from gateway.limits.memory_backend import MemoryBackend, monotonic_us
from gateway.limits.policies import LimitPolicies
from gateway.limits.quota_state import QuotaStateTail
from gateway.request_models import SubmitRequestBody
from gateway.security import Principal
from lotabots.kafka_io import encode
from lotabots.settings import Settings
from schemas.events import LifecycleType, RequestLifecycleEvent
from schemas.usage import QuotaState
from tests.limits.helpers import ticket, tier_config, tier_table

TIERS = tier_config(t=tier_table(rpm=2, concurrency=5, tokens_day=1000, tokens_month=5000),
                    u=tier_table(rpm=600, concurrency=5, tokens_day=1000, tokens_month=5000))
BODY = SubmitRequestBody.model_validate({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
LATE_EVENING = datetime(2030, 1, 31, 23, 0, tzinfo=UTC).timestamp()  # one hour before a new day and month


def who(tenant: str = "ten_a", tier: str = "t") -> Principal:
    return Principal(tenant, tier, frozenset({"requests:write"}), "key_1", "api_key")


class Sink:
    """Records request.rejected facts instead of producing them (the emitter is tested with its topic)."""

    def __init__(self) -> None:
        self.facts: list[dict[str, Any]] = []

    async def __call__(self, **fact: Any) -> None:
        self.facts.append(fact)


def limits(quota_state: QuotaStateTail | None = None, *, wall: float = LATE_EVENING, sink: Sink | None = None,
           backend: Any = None, fail_open: bool = False) -> SubmitLimits:
    return SubmitLimits(backend or MemoryBackend(600), LimitPolicies(TIERS), quota_state, backend_name="memory",
                        fail_open=fail_open, on_rejected=sink, wall_clock=lambda: wall)


def quota_tail(*states: QuotaState) -> QuotaStateTail:
    tail = QuotaStateTail(Settings(kafka_bootstrap="127.0.0.1:9"))
    for s in states:
        tail.apply(s.tenant_id.encode(), encode(s))
    return tail


def state(tenant: str, day: str, month: str, tokens_day: int, tokens_month: int) -> QuotaState:
    return QuotaState(tenant_id=tenant, day=day, month=month, tokens_day=tokens_day, tokens_month=tokens_month,
                      updated_at=datetime.now(UTC))


async def test_a_quota_used_up_retries_after_the_utc_midnight() -> None:
    lim = limits(quota_tail(state("ten_a", "2030-01-31", "2030-01", 1000, 1000)))
    with pytest.raises(ApiError) as refused:
        await lim.admit(who(), BODY)
    e = refused.value
    assert (e.status, e.code) == (429, "quota_exceeded")
    assert e.headers["Retry-After"] == "3600"
    assert e.details["period"] == "day" and e.details["used_tokens"] == 1000 and e.details["reserved_tokens"] == 0


async def test_a_monthly_quota_used_up_retries_at_the_first_of_the_next_month() -> None:
    mid_month = datetime(2030, 1, 15, 12, 0, tzinfo=UTC).timestamp()
    lim = limits(quota_tail(state("ten_a", "2030-01-14", "2030-01", 900, 5000)), wall=mid_month)
    with pytest.raises(ApiError) as refused:
        await lim.admit(who(), BODY)
    assert refused.value.details["period"] == "month"
    assert int(refused.value.headers["Retry-After"]) == (16 * 86400 + 12 * 3600)


async def test_a_quota_held_only_by_reservations_says_retry_soon() -> None:
    lim = limits(quota_tail(state("ten_a", "2030-01-31", "2030-01", 900, 900)))
    await lim.admit(who(), BODY)  # 900 < 1000: admitted, reserving ~100
    with pytest.raises(ApiError) as refused:
        await lim.admit(who(), BODY)
    assert refused.value.code == "quota_exceeded" and refused.value.headers["Retry-After"] == "1"
    assert refused.value.details["reserved_tokens"] > 0


async def test_committed_usage_of_an_earlier_day_counts_only_for_its_month() -> None:
    tail = quota_tail(state("ten_a", "2030-01-30", "2030-01", 1000, 4990))
    await limits(tail).admit(who(), BODY)  # yesterday's 1000 do not count today; the month has 10 left
    tail.apply(b"ten_a", encode(state("ten_a", "2030-01-31", "2030-01", 10, 5000)))
    with pytest.raises(ApiError) as refused:
        await limits(tail).admit(who(), BODY)
    assert refused.value.details["period"] == "month"
    tail.apply(b"ten_a", None)  # a tombstone: the Faust app forgot the tenant
    assert tail.committed("ten_a") is None
    tail.apply(b"ten_a", b"not json")  # an undecodable record is skipped, not fatal
    assert tail.committed("ten_a") is None


async def test_a_stale_quota_state_never_lowers_what_a_period_counted() -> None:
    tail = quota_tail(state("ten_a", "2030-01-31", "2030-01", 700, 4000))
    tail.apply(b"ten_a", encode(state("ten_a", "2030-01-31", "2030-01", 650, 3950)))  # a zombie's late write
    assert tail.committed("ten_a") == ("2030-01-31", "2030-01", 700, 4000)
    tail.apply(b"ten_a", encode(state("ten_a", "2030-01-30", "2030-01", 9000, 3900)))  # names an earlier day
    assert tail.committed("ten_a") == ("2030-01-31", "2030-01", 700, 4000)
    tail.apply(b"ten_a", encode(state("ten_a", "2030-02-01", "2030-02", 5, 5)))  # the next period starts low
    assert tail.committed("ten_a") == ("2030-02-01", "2030-02", 5, 5)
    tail.apply(b"ten_a", encode(state("ten_a", "2030-02-01", "2030-02", 40, 40)))
    assert tail.committed("ten_a") == ("2030-02-01", "2030-02", 40, 40)
    tail.apply(b"ten_a", None)
    assert tail.committed("ten_a") is None
    tail.apply(b"ten_a", b"not json")  # an undecodable record is skipped, not fatal
    assert tail.committed("ten_a") is None


async def test_a_rate_refusal_says_when_and_is_counted_and_reported_once() -> None:
    sink = Sink()
    lim = limits(sink=sink)
    before = REGISTRY.get_sample_value("lotabots_rate_limit_rejections_total",
                                       {"tier": "t", "limit": "requests_per_minute"}) or 0
    for _ in range(2):
        admission = await lim.admit(who(), BODY)
        assert admission.held and admission.request_id and admission.request_id.startswith("req_")
    with pytest.raises(ApiError) as refused:
        await lim.admit(who(), BODY)
    e = refused.value
    assert (e.code, e.headers["Retry-After"], e.details["policy"]) == ("rate_limited", "30", "rpm")
    assert e.headers["RateLimit"] == '"rpm";r=0;t=30, "concurrency";r=3'
    assert e.headers["RateLimit-Policy"] == '"rpm";q=2;w=60, "concurrency";q=5;qu="concurrent-requests"'
    await lim.close()  # waits for the fire-and-forget rejection facts
    assert sink.facts == [{"tenant_id": "ten_a", "tier": "t", "reason": "rate_limited", "api_key_id": "key_1"}]
    after = REGISTRY.get_sample_value("lotabots_rate_limit_rejections_total",
                                      {"tier": "t", "limit": "requests_per_minute"})
    assert after == before + 1


async def test_giving_back_a_replayed_admission_frees_its_slot() -> None:
    backend = MemoryBackend(600)
    lim = limits(backend=backend)
    admission = await lim.admit(who(), BODY)
    assert backend.in_flight("ten_a") == 1
    admission.bind(replayed=True)
    await lim.give_back(admission)
    await lim.give_back(admission)  # twice is harmless
    assert backend.in_flight("ten_a") == 0


async def test_tokens_count_in_the_utc_day_the_request_ended() -> None:
    backend = MemoryBackend(600)
    lim = limits(backend=backend)
    admission = await lim.admit(who(tier="u"), BODY)
    ended = datetime(2030, 2, 1, 0, 0, 5, tzinfo=UTC)  # five seconds into a new day and month
    event = RequestLifecycleEvent(event_id="e1", request_id=admission.request_id or "", tenant_id="ten_a", tier="u",
                                  type=LifecycleType.SUCCEEDED, at=ended, finished_at=ended, prompt_tokens=30,
                                  completion_tokens=10)
    started = event.model_copy(update={"type": LifecycleType.STARTED, "event_id": "e0"})
    await lim.on_lifecycle(started)
    assert backend.in_flight("ten_a") == 1  # a sign of life ends nothing
    await lim.on_lifecycle(event)
    assert backend.in_flight("ten_a") == 0
    policies, now = LimitPolicies(TIERS), monotonic_us() + 60 * MICROS
    new_day = backend.admit_at(ticket(policies, "u", "ten_a", "r2", reservation=10, day="2030-02-01",
                                      month="2030-02"), now)
    assert new_day.verdict == Verdict.ADMITTED and (new_day.used_day, new_day.used_month) == (40, 40)
    old_day = backend.admit_at(ticket(policies, "u", "ten_a", "r3", day="2030-01-31", month="2030-01"), now)
    assert (old_day.used_day, old_day.used_month) == (10, 10)  # none of the 40; r2's reservation in flight


async def test_an_unreachable_backend_fails_open_or_closed_as_configured() -> None:
    class Down:
        async def admit(self, ticket: object) -> None:
            raise ConnectionError("redis is away")

    admitted = await limits(backend=Down(), fail_open=True).admit(who(), BODY)
    assert admitted.request_id and not admitted.held and admitted.headers == {}
    with pytest.raises(ApiError) as refused:
        await limits(backend=Down(), fail_open=False).admit(who(), BODY)
    assert (refused.value.status, refused.value.code) == (503, "limits_unavailable")
