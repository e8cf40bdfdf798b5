"""The Generic Cell Rate Algorithm, in whole microseconds: the one definition both backends implement.

A policy of `limit` requests per `period_s` has the emission interval ``T = period / limit`` and admits a
burst of up to ``burst`` requests (``burst = limit``: a client that was idle for a period may spend the
whole period's allowance at once, then one request every ``T``). The state is one number, the
theoretical arrival time ``tat``. A request at ``now`` is conforming iff, counting it,
``max(tat, now) + T - now <= burst * T``; a conforming request moves ``tat`` to ``max(tat, now) + T`` and
a refused one changes nothing. The Lua script in :mod:`gateway.limits.redis_scripts` is the same
arithmetic; tests run both against the same sequences.
"""

from __future__ import annotations

from typing import NamedTuple

MICROS = 1_000_000


class GcraPolicy(NamedTuple):
    """`limit` requests per `period_s`, as an emission interval and a burst (both exact integers)."""

    limit: int
    period_s: int
    interval_us: int  # T, rounded down to a whole microsecond (exact for limits dividing period * 10^6)
    burst: int

    @classmethod
    def per_period(cls, limit: int, period_s: int = 60, burst: int | None = None) -> GcraPolicy:
        if limit <= 0 or period_s <= 0:
            raise ValueError("a rate limit needs a positive limit and period")
        return cls(limit, period_s, max(1, period_s * MICROS // limit), burst or limit)

    @property
    def capacity_us(self) -> int:
        return self.burst * self.interval_us


class GcraDecision(NamedTuple):
    """The outcome of one check; times are microseconds from `now`."""

    allowed: bool
    tat: int  # the new theoretical arrival time (unchanged when refused)
    remaining: int  # requests that would still conform right now
    retry_after_us: int  # 0 when allowed; else the wait until this request would conform
    next_unit_us: int  # wait until `remaining` grows by one (0 when the bucket is full)


def gcra_check(tat: int, now: int, policy: GcraPolicy) -> GcraDecision:
    """Check (and on success take) one request at `now` against the state `tat`."""
    interval, capacity = policy.interval_us, policy.capacity_us
    base = tat if tat > now else now
    debt = base + interval - now  # the bucket's fill, in microseconds, if this request is admitted
    if debt > capacity:
        held = base - now
        return GcraDecision(False, tat, 0, debt - capacity, _next_unit(held, interval, capacity))
    remaining = (capacity - debt) // interval
    return GcraDecision(True, base + interval, remaining, 0, _next_unit(debt, interval, capacity))


def gcra_peek(tat: int, now: int, policy: GcraPolicy) -> tuple[int, int]:
    """(remaining, next_unit_us) without taking anything: what a refusal by another limit reports."""
    held = tat - now if tat > now else 0
    return (policy.capacity_us - held) // policy.interval_us, _next_unit(held, policy.interval_us, policy.capacity_us)


def _next_unit(debt: int, interval: int, capacity: int) -> int:
    # `remaining` = (capacity - debt) // interval grows when the debt drains to the next multiple of T below
    # (capacity - debt) rounded up, i.e. after (debt - capacity) mod T, or a whole T when exactly on one.
    if debt <= 0:
        return 0
    rest = (debt - capacity) % interval
    return rest if rest else interval


def seconds_up(us: int) -> int:
    """Microseconds to whole seconds, rounded up (header fields carry delay-seconds)."""
    return -(-us // MICROS) if us > 0 else 0
