"""Aggregation screen: per-tenant tumbling counters for the UTC calendar day and month (quota state)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.usage import InferenceCompletedData, QuotaState, RequestAcceptedData, UsageEvent

_ZERO = timedelta(0)


@dataclass(frozen=True)
class QuotaFact:
    """What a fact adds to its tenant's quota counters: tokens of an inference, one accepted request."""

    tenant_id: str
    event_time: datetime
    tokens: int
    requests: int


def quota_fact(event: UsageEvent) -> QuotaFact | None:
    """What a valid usage fact adds to its tenant's counters; None when it adds nothing (a rejection)."""
    data = event.data
    if isinstance(data, InferenceCompletedData):
        tokens = data.prompt_tokens + data.completion_tokens
        return QuotaFact(data.tenant_id, event.time, tokens, 0) if tokens else None
    if isinstance(data, RequestAcceptedData):
        return QuotaFact(data.tenant_id, event.time, 0, 1)
    return None


@dataclass
class QuotaDelta:
    """One tenant's quota facts of one processing batch, with the ``usage.events`` offset each came from.

    A tenant's facts all travel on one partition, so its offsets only grow: the table keeps the last
    folded offset with the counters, and :meth:`days_after` leaves out what a replay after a crash
    would otherwise fold twice.
    """

    partition: int
    facts: list[tuple[int, QuotaFact]] = field(default_factory=list)

    def add(self, offset: int, fact: QuotaFact) -> None:
        self.facts.append((offset, fact))

    @property
    def last_offset(self) -> int:
        return self.facts[-1][0]

    def days_after(self, applied: int) -> list[QuotaFact]:
        """The facts past offset ``applied``, summed per UTC day, oldest day first.

        Folding per-day sums in day order gives the same counters as folding every fact in any order
        (windows only tumble forward, and a late fact of a closed day is left out either way).
        """
        days: dict[str, list[Any]] = {}
        for offset, fact in self.facts:
            if offset <= applied:
                continue
            day = window_keys(fact.event_time)[0]
            total = days.get(day)
            if total is None:
                days[day] = [fact.tenant_id, fact.event_time, fact.tokens, fact.requests]
            else:
                total[2] += fact.tokens
                total[3] += fact.requests
        return [QuotaFact(t, at, tokens, requests) for t, at, tokens, requests in (days[d] for d in sorted(days))]


def window_keys(at: datetime) -> tuple[str, str]:
    """The day and month windows (UTC) a fact at ``at`` falls in."""
    if at.utcoffset() != _ZERO:
        at = at.astimezone(UTC)
    return f"{at.year:04d}-{at.month:02d}-{at.day:02d}", f"{at.year:04d}-{at.month:02d}"


def fold_quota(state: QuotaState | None, fact: QuotaFact, now: datetime) -> QuotaState:
    """Add one billable fact to a tenant's counters.

    Windows tumble: a fact of a later day (month) starts a fresh day (month). A late fact of an earlier
    window than the current one is left out of that window's counters (it is still billed: ClickHouse
    has it), so the counters never move backwards to a closed window.
    """
    day, month = window_keys(fact.event_time)
    tokens = fact.tokens
    if state is None or month > state.month:
        state = QuotaState(tenant_id=fact.tenant_id, day=day, month=month, updated_at=now)
    elif day > state.day:
        state = state.model_copy(update={"day": day, "tokens_day": 0, "requests_day": 0})
    in_month = month == state.month
    in_day = day == state.day
    return state.model_copy(update={
        "tokens_day": state.tokens_day + (tokens if in_day else 0),
        "requests_day": state.requests_day + (fact.requests if in_day else 0),
        "tokens_month": state.tokens_month + (tokens if in_month else 0),
        "requests_month": state.requests_month + (fact.requests if in_month else 0),
        "updated_at": now,
    })
