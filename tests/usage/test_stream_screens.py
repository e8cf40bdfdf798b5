"""The Faust app's screens as pure functions: validation, pricing, quota windows, deduplication TTL."""

from __future__ import annotations

from collections.abc import MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from lotabots.tiers import load_tier_config
from schemas.usage import BillableUsage, QuotaState, UsageEvent
from streams.dedupe import SeenEvents
from streams.pricing import price_usage_event
from streams.quota import QuotaDelta, QuotaFact, fold_quota, quota_fact
from streams.validate import Refusal, validate_usage_event

TIERS = load_tier_config(Path(__file__).resolve().parents[2] / "lotabots" / "tiers.toml")
T0 = datetime(2026, 1, 31, 23, 0, tzinfo=UTC)


def _inference(request_id: str = "r1", tier: str = "pro", prompt: int = 1234, completion: int = 567,
               at: datetime = T0, tenant: str = "ten_a") -> UsageEvent:
    return UsageEvent(id=f"{request_id}:inference", source="/x", type="lotabots.inference.completed", time=at, data={
        "tenant_id": tenant, "tier": tier, "request_id": request_id, "model": "m", "prompt_tokens": prompt,
        "completion_tokens": completion, "latency_ms": 5, "finish_reason": "stop", "status": "succeeded"})


def _accepted(request_id: str = "r1", at: datetime = T0) -> UsageEvent:
    return UsageEvent(id=f"{request_id}:accepted", source="/x", type="lotabots.request.accepted", time=at,
                      data={"tenant_id": "ten_a", "tier": "pro", "request_id": request_id, "max_tokens_reserved": 9})


def test_validation_refuses_garbage_with_a_code_and_never_raises() -> None:
    for raw, code in [(b"", "empty_usage_event"), (b"{not json", "invalid_usage_event"),
                      (b'{"specversion":"1.0"}', "invalid_usage_event"),
                      (_inference(tier="platinum").model_dump_json().encode(), "unknown_tier")]:
        result = validate_usage_event(raw, TIERS)
        assert isinstance(result, Refusal) and result.code == code and result.message


def test_validation_accepts_a_well_formed_event() -> None:
    assert validate_usage_event(_inference().model_dump_json().encode(), TIERS) == _inference()


def test_pricing_is_exact_decimal_per_tier() -> None:
    pro = TIERS.get("pro").prices
    billed = price_usage_event(_inference(prompt=1234, completion=567), pro)
    assert billed.input_cost == pro.per_1k_input_tokens * 1234 / 1000 == Decimal("0.000617")
    assert billed.output_cost == Decimal("0.0008505")
    assert billed.request_cost == 0 and billed.requests == 0
    assert billed.cost == billed.input_cost + billed.output_cost
    request = price_usage_event(_accepted(), pro)
    assert (request.requests, request.request_cost, request.prompt_tokens) == (1, pro.per_request, 0)
    free = price_usage_event(_inference(tier="free"), TIERS.get("free").prices)
    assert free.cost == 0


def test_billable_round_trips_through_json_without_losing_precision() -> None:
    billed = price_usage_event(_inference(prompt=1, completion=1), TIERS.get("pro").prices)
    again = BillableUsage.model_validate_json(billed.model_dump_json())
    assert again.cost == billed.cost == Decimal("0.000002")


def _fact(at: datetime, tokens: int = 10, requests: int = 0) -> QuotaFact:
    fact = quota_fact(_inference(prompt=tokens, completion=0, at=at) if not requests else _accepted(at=at))
    assert fact is not None
    return fact


def test_quota_windows_tumble_at_utc_day_and_month_boundaries() -> None:
    now = datetime.now(UTC)
    state = fold_quota(None, _fact(T0, 10), now)
    state = fold_quota(state, _fact(T0, 0, requests=1), now)
    assert (state.day, state.month, state.tokens_day, state.tokens_month, state.requests_day) == (
        "2026-01-31", "2026-01", 10, 10, 1)
    feb = datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    state = fold_quota(state, _fact(feb, 5), now)
    assert (state.day, state.month, state.tokens_day, state.tokens_month, state.requests_month) == (
        "2026-02-01", "2026-02", 5, 5, 0)
    state = fold_quota(state, _fact(datetime(2026, 2, 2, tzinfo=UTC), 7), now)
    assert (state.tokens_day, state.tokens_month) == (7, 12)


def test_a_late_fact_never_reopens_a_closed_window() -> None:
    now = datetime.now(UTC)
    state = fold_quota(None, _fact(datetime(2026, 2, 2, tzinfo=UTC), 7), now)
    late = fold_quota(state, _fact(datetime(2026, 2, 1, 23, tzinfo=UTC), 100), now)
    assert (late.day, late.tokens_day, late.tokens_month) == ("2026-02-02", 7, 107)
    older = fold_quota(late, _fact(T0, 1000), now)
    assert (older.month, older.tokens_month) == ("2026-02", 107)
    assert QuotaState.model_validate_json(older.model_dump_json()) == older


class _FakeTable:
    """Records changelog writes; the real one is a Faust table (integration tests run it)."""

    def __init__(self) -> None:
        self.data: MutableMapping[Any, Any] = {}
        self.changelog: list[tuple[int | None, Any, Any]] = []

    def send_changelog(self, partition: int | None, key: Any, value: Any, key_serializer: Any = None,
                       value_serializer: Any = None) -> None:
        self.changelog.append((partition, key, value))


def test_seen_ids_are_changelogged_per_partition_segment_and_expire_after_the_ttl() -> None:
    table = _FakeTable()
    seen = SeenEvents(table, ttl_s=100)
    seen.remember(3, 70, "a")
    seen.remember(5, 80, "b")
    seen.remember(5, 81, "b")  # already known: where it was first seen stays
    seen.remember(5, 82, "c")
    assert seen.flush(now=1000) == 2
    assert "a" in seen and "b" in seen and "zz" not in seen
    assert sorted(table.changelog) == [(3, "3/70", {"t": 1000, "ids": [["a", 70]]}),
                                       (5, "5/80", {"t": 1000, "ids": [["b", 80], ["c", 82]]})]
    seen.remember(3, 71, "d")
    seen.flush(now=1050)
    assert seen.expire(now=1099, owns=lambda p: True) == 0
    assert seen.expire(now=1101, owns=lambda p: True) == 3
    assert "a" not in seen and "b" not in seen and "d" in seen
    assert {c[1] for c in table.changelog if c[2] is None} == {"3/70", "5/80"}


def test_a_message_read_again_after_a_crash_is_not_its_own_duplicate() -> None:
    seen = SeenEvents(_FakeTable(), ttl_s=100)
    seen.remember(2, 500, "r1:accepted")
    assert not seen.is_duplicate("r1:accepted", 2, 500), "re-delivery of the same message: emit it again"
    assert seen.is_duplicate("r1:accepted", 2, 731), "the same fact sent again: drop it"
    assert seen.is_duplicate("r1:accepted", 4, 500)
    assert not seen.is_duplicate("r2:accepted", 2, 731)


def test_a_restarted_worker_rebuilds_its_index_and_spares_other_workers_partitions() -> None:
    table = _FakeTable()
    table.data.update({  # as recovered from the changelog
        "1/0": {"t": 10, "ids": [["old", 0]]}, "2/0": {"t": 10, "ids": [["other", 0]]},
        "1/1": {"t": 500, "ids": [["new", 1]]}})
    seen = SeenEvents(table, ttl_s=100)
    seen.reindex()
    assert seen.is_duplicate("new", 1, 9) and not seen.is_duplicate("new", 1, 1)
    assert seen.expire(now=200, owns=lambda p: p == 1) == 1
    assert "old" not in seen and "new" in seen
    assert [c[1] for c in table.changelog] == ["1/0"]


def _batch(*facts: BillableUsage) -> bytes:
    from streams.agents import billable_batch

    return billable_batch(facts[0].tenant_id, [f.model_dump_json().encode() for f in facts])


def test_a_billable_batch_is_what_the_sink_reads() -> None:
    from consumers.usage_rows import EVENT_ID, ROW_COLUMNS, billable_rows
    from schemas.usage import BillableBatch

    pro = TIERS.get("pro").prices
    first, second = price_usage_event(_inference(), pro), price_usage_event(_accepted(), pro)
    raw = _batch(first, second)
    assert BillableBatch.model_validate_json(raw).facts == [first, second]  # the hand-built JSON is the model's
    rows = billable_rows(raw, partition=2, offset=41)
    values = dict(zip(ROW_COLUMNS, rows[0], strict=True))
    assert [r[EVENT_ID] for r in rows] == ["r1:inference", "r1:accepted"]
    assert (values["source_partition"], values["source_offset"], Decimal(values["cost"])) == (2, 41, first.cost)
    assert values["event_time"] == T0 and values["prompt_tokens"] == 1234


def test_the_sink_refuses_a_malformed_billable_batch() -> None:
    import pytest

    from consumers.usage_rows import BadBillable, billable_rows

    good = orjson.loads(price_usage_event(_inference(), TIERS.get("pro").prices).model_dump_json())
    other_tenant = {**good, "tenant_id": "ten_b"}
    for broken in ({"tenant_id": "ten_a", "facts": [{**good, "prompt_tokens": -3}]},
                   {"tenant_id": "ten_a", "facts": [{**good, "cost": "abc"}]},
                   {"tenant_id": "ten_a", "facts": [{**good, "event_time": "2026-01-01T00:00:00"}]},
                   {"tenant_id": "ten_a", "facts": []}, {"tenant_id": "ten_a", "facts": [good, other_tenant]},
                   {"facts": [good]}):
        with pytest.raises(BadBillable):
            billable_rows(orjson.dumps(broken), 0, 0)
    with pytest.raises(BadBillable):
        billable_rows(b"nope", 0, 0)


def test_batch_tokens_name_the_exact_offset_ranges() -> None:
    from consumers.usage_rows import BatchToken

    token = BatchToken("usage.billable", ((0, 10, 19), (3, 5, 5)))
    assert token.text() == "usage.billable|0:10-19,3:5-5"
    assert BatchToken.parse(token.text()) == token


def test_quota_deltas_fold_per_day_and_skip_what_was_folded_before_a_crash() -> None:
    now = datetime.now(UTC)
    jan31, feb1 = T0, datetime(2026, 2, 1, 0, 0, 1, tzinfo=UTC)
    facts = [(10, _fact(feb1, 5)), (10, _fact(jan31, 7)), (11, _fact(jan31, 0, requests=1)), (12, _fact(feb1, 3))]
    delta = QuotaDelta(partition=3)
    for offset, fact in facts:
        delta.add(offset, fact)
    one_by_one = None
    for _, fact in facts:
        one_by_one = fold_quota(one_by_one, fact, now)
    summed = None
    for fact in delta.days_after(-1):
        summed = fold_quota(summed, fact, now)
    assert summed == one_by_one, "per-day sums fold to the same counters as every fact, in any order"
    assert [f.tokens for f in delta.days_after(-1)] == [7, 8] and delta.last_offset == 12
    assert [(f.tokens, f.requests) for f in delta.days_after(11)] == [(3, 0)], "offsets <= 11 were folded"
    assert delta.days_after(12) == []
