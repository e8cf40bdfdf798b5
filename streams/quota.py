"""Aggregation screen: per-tenant tumbling counters for the UTC calendar day and month (quota state)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from schemas.usage import QuotaState


@dataclass(frozen=True)
class QuotaFact:
    """What a billable fact adds to quota counters (read straight from the billable JSON)."""

    tenant_id: str
    event_time: datetime
    tokens: int
    requests: int

    @classmethod
    def from_billable(cls, fact: dict[str, Any]) -> QuotaFact:
        tokens = int(fact["prompt_tokens"]) + int(fact["completion_tokens"])
        return cls(str(fact["tenant_id"]), datetime.fromisoformat(fact["event_time"]), tokens, int(fact["requests"]))


def window_keys(at: datetime) -> tuple[str, str]:
    """The day and month windows (UTC) a fact at ``at`` falls in."""
    at = at.astimezone(UTC)
    return at.strftime("%Y-%m-%d"), at.strftime("%Y-%m")


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
