"""GCRA arithmetic at the boundary: pure logic on an injected clock (microseconds)."""

from __future__ import annotations

from gateway.limits.gcra import MICROS, GcraPolicy, gcra_check, gcra_peek, seconds_up


def _burst(policy: GcraPolicy, now: int, n: int, tat: int = 0) -> tuple[int, list[bool]]:
    outcomes = []
    for _ in range(n):
        d = gcra_check(tat, now, policy)
        outcomes.append(d.allowed)
        tat = d.tat
    return tat, outcomes


def test_an_idle_caller_gets_exactly_the_burst_then_a_refusal() -> None:
    policy = GcraPolicy.per_period(10, 60)  # T = 6 s
    tat, outcomes = _burst(policy, 1_000 * MICROS, 11)
    assert outcomes == [True] * 10 + [False]
    refused = gcra_check(tat, 1_000 * MICROS, policy)
    assert not refused.allowed
    assert refused.retry_after_us == 6 * MICROS
    assert refused.remaining == 0


def test_a_refused_request_conforms_exactly_at_its_retry_after() -> None:
    policy = GcraPolicy.per_period(10, 60)
    start = 5_000 * MICROS
    tat, _ = _burst(policy, start, 10)
    retry = gcra_check(tat, start, policy).retry_after_us
    assert not gcra_check(tat, start + retry - 1, policy).allowed  # one microsecond early
    on_time = gcra_check(tat, start + retry, policy)
    assert on_time.allowed
    assert on_time.remaining == 0
    assert not gcra_check(on_time.tat, start + retry, policy).allowed  # and only one


def test_refusals_take_nothing() -> None:
    policy = GcraPolicy.per_period(6, 60)
    tat, _ = _burst(policy, 0, 6)
    for _ in range(50):
        d = gcra_check(tat, 1, policy)
        assert not d.allowed and d.tat == tat
    assert gcra_check(tat, policy.interval_us, policy).allowed


def test_remaining_counts_down_and_next_unit_is_one_interval_away() -> None:
    policy = GcraPolicy.per_period(5, 60)  # T = 12 s
    tat, seen = 0, []
    for _ in range(5):
        d = gcra_check(tat, 0, policy)
        tat = d.tat
        seen.append((d.remaining, d.next_unit_us))
    assert [r for r, _ in seen] == [4, 3, 2, 1, 0]
    assert all(n == 12 * MICROS for _, n in seen)
    # 5 s later the debt has drained by 5 s: still nothing free, the next unit in 7 s
    assert gcra_peek(tat, 5 * MICROS, policy) == (0, 7 * MICROS)
    assert gcra_peek(tat, 12 * MICROS, policy) == (1, 12 * MICROS)
    assert gcra_peek(tat, 60 * MICROS, policy) == (5, 0)  # full again


def test_saturating_demand_admits_the_burst_plus_one_per_interval() -> None:
    """From idle, a caller who never stops asking gets burst + floor(elapsed / T), exactly."""
    for limit, step_us, span_s in ((60, 10_000, 10), (600, 1_000, 3), (12, 250_000, 31), (7, 100_000, 40)):
        policy = GcraPolicy.per_period(limit, 60)
        tat, admitted, now = 0, 0, 0
        while now <= span_s * MICROS:
            d = gcra_check(tat, now, policy)
            if d.allowed:
                admitted += 1
                tat = d.tat
            last = now
            now += step_us
        assert admitted == policy.burst + last // policy.interval_us, (limit, admitted)


def test_the_interval_is_exact_when_the_limit_divides_the_period() -> None:
    assert GcraPolicy.per_period(600, 60).interval_us == 100_000
    assert GcraPolicy.per_period(6000, 60).interval_us == 10_000
    assert GcraPolicy.per_period(7, 60).interval_us == 8_571_428  # rounded down: at most 1 us per request early


def test_delay_seconds_round_up() -> None:
    assert seconds_up(0) == 0
    assert seconds_up(1) == 1
    assert seconds_up(MICROS) == 1
    assert seconds_up(MICROS + 1) == 2
