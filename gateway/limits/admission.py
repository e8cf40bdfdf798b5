"""Admission of `POST /v1/requests`: rate, concurrency and token-quota checks, refusals, settlement.

A submit is admitted under a request id chosen here (the request service then uses it), so the backend's
in-flight entry and the `results` lifecycle events name the same request. A request stays in flight until
its terminal event reaches a replica's results tail; its reservation (max_tokens plus a bound of the
prompt's tokens) is then replaced by the tokens it really used.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from gateway.errors import ApiError
from gateway.limits.backend import LimitBackend, Outcome, Ticket, Verdict
from gateway.limits.gcra import seconds_up
from gateway.limits.metrics import LIMITS_BACKEND_ERRORS, REJECTION_EVENTS_DROPPED, count_refusal
from gateway.limits.policies import KeyLimits, LimitPolicies, TierLimits
from gateway.limits.quota_periods import UtcPeriods, prompt_token_bound
from gateway.limits.quota_state import QuotaStateTail
from gateway.request_models import SubmitRequestBody
from gateway.request_service import DEFAULT_MAX_TOKENS
from gateway.security import Principal
from lotabots.ids import new_id
from schemas.events import RequestLifecycleEvent

log = logging.getLogger(__name__)

MAX_PENDING_REJECTION_EVENTS = 10_000

RejectionSink = Callable[..., Coroutine[Any, Any, Any]]  # UsageEmitter.request_rejected


@dataclass(slots=True)
class Admission:
    """An admitted submit: the request id to use, the RateLimit fields to answer with."""

    request_id: str | None
    tenant_id: str
    headers: dict[str, str]
    held: bool  # the backend holds an in-flight entry for it
    bound: bool = field(default=False)  # the submit went through (see `bind`)
    replayed: bool = field(default=False)

    def bind(self, replayed: bool) -> None:
        """The submit returned: a new request keeps the admission, an idempotent replay gives it back."""
        self.bound = True
        self.replayed = replayed


# verdict -> (error code, metric family, metric label, policy name)
_REFUSALS: dict[int, tuple[str, str, str, str]] = {
    Verdict.RATE: ("rate_limited", "rate", "requests_per_minute", "rpm"),
    Verdict.KEY_RATE: ("rate_limited", "rate", "key_requests_per_minute", "key-rpm"),
    Verdict.CONCURRENCY: ("concurrency_limited", "rate", "concurrent_requests", "concurrency"),
    Verdict.KEY_CONCURRENCY: ("concurrency_limited", "rate", "key_concurrent_requests", "key-concurrency"),
    Verdict.QUOTA_DAY: ("quota_exceeded", "quota", "day", "tokens-day"),
    Verdict.QUOTA_MONTH: ("quota_exceeded", "quota", "month", "tokens-month"),
}


class SubmitLimits:
    """The gateway's limits on submits (one per replica, on `app.state.limits`)."""

    def __init__(
        self,
        backend: LimitBackend,
        policies: LimitPolicies,
        quota_state: QuotaStateTail | None,
        *,
        backend_name: str,
        fail_open: bool,
        on_rejected: RejectionSink | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.policies = policies
        self.quota_state = quota_state
        self._backend_name = backend_name
        self._fail_open = fail_open
        self._on_rejected = on_rejected
        self._wall = wall_clock
        self._periods = UtcPeriods()
        self._event_periods = UtcPeriods()
        self._pending: set[asyncio.Task[Any]] = set()

    async def admit(self, who: Principal, body: SubmitRequestBody) -> Admission:
        """Admit the submit or raise ApiError(429) with Retry-After and the RateLimit fields."""
        tier = self.policies.tier(who.tier)
        if tier is None:  # the request service refuses an unknown tier with its own error
            return Admission(None, who.tenant_id, {}, held=False)
        key_id = who.subject if who.kind == "api_key" else None
        key = self.policies.key(key_id)
        if key is None:
            key_id = None
        max_tokens = body.max_tokens or min(DEFAULT_MAX_TOKENS, tier.max_tokens_cap)
        now = self._wall()
        periods = self._periods.at(now)
        committed = self.quota_state.committed(who.tenant_id) if self.quota_state is not None else None
        c_day, c_month = committed.for_periods(periods.day, periods.month) if committed else (0, 0)
        ticket = Ticket(new_id("req"), who.tenant_id, tier, key_id, key,
                        max_tokens + prompt_token_bound(body.messages), periods.day, periods.month, c_day, c_month)
        try:
            outcome = await self.backend.admit(ticket)
        except Exception as exc:
            LIMITS_BACKEND_ERRORS.labels(self._backend_name).inc()
            if self._fail_open:
                log.warning("limits backend %s unavailable (%s); admitting without limits", self._backend_name, exc)
                return Admission(ticket.request_id, who.tenant_id, {}, held=False)
            raise ApiError(503, "limits_unavailable", "request limits cannot be checked right now; retry",
                           headers={"Retry-After": "1"}) from exc
        headers = {
            "RateLimit-Policy": self.policies.policy_field(tier, key_id, key),
            "RateLimit": _service_limits(tier, key, outcome),
        }
        if outcome.verdict != Verdict.ADMITTED:
            raise self._refusal(who, tier, key, outcome, headers, now)
        return Admission(ticket.request_id, who.tenant_id, headers, held=True)

    async def give_back(self, admission: Admission) -> None:
        """An admission that did not become a new request (failed submit, idempotent replay)."""
        if not admission.held or admission.request_id is None:
            return
        admission.held = False
        settle_now = getattr(self.backend, "settle_now", self.backend.settle)
        try:
            await settle_now(admission.tenant_id, admission.request_id, 0, "", "")
        except Exception:
            log.warning("limits: could not give back admission %s; it expires on its own", admission.request_id)

    def on_lifecycle(self, event: RequestLifecycleEvent) -> Awaitable[Any]:
        """Results-tail listener: a terminal event ends the request's admission and counts its tokens."""
        if event.type.status.terminal:
            tokens = (event.prompt_tokens or 0) + (event.completion_tokens or 0)
            periods = self._event_periods.at((event.finished_at or event.at).timestamp())
            return self.backend.settle(event.tenant_id, event.request_id, tokens, periods.day, periods.month)
        return self.backend.touch(event.tenant_id, event.request_id)

    async def close(self) -> None:
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=2.0)
        await self.backend.close()
        if self.quota_state is not None:
            await self.quota_state.stop()

    def _refusal(self, who: Principal, tier: TierLimits, key: KeyLimits | None, outcome: Outcome,
                 headers: dict[str, str], now: float) -> ApiError:
        code, family, label, policy = _REFUSALS[outcome.verdict]
        count_refusal(family, tier.tier, label)
        self._emit_rejection(who, code)
        verdict = outcome.verdict
        details: dict[str, Any] = {"policy": policy}
        if verdict == Verdict.RATE or verdict == Verdict.KEY_RATE:
            rate = tier.rate if verdict == Verdict.RATE else key.rate  # type: ignore[union-attr]
            retry = max(1, seconds_up(outcome.rate_retry_us if verdict == Verdict.RATE else outcome.key_rate_retry_us))
            message = f"rate limit of {rate.limit} requests per minute exceeded; retry in {retry}s"  # type: ignore[union-attr]
            details["limit"] = rate.limit  # type: ignore[union-attr]
        elif verdict == Verdict.CONCURRENCY or verdict == Verdict.KEY_CONCURRENCY:
            limit = tier.concurrency if verdict == Verdict.CONCURRENCY else key.concurrency  # type: ignore[union-attr]
            retry = 1  # a slot frees when any in-flight request ends: no better estimate than "soon"
            message = f"{limit} requests are already in flight, the most allowed; retry when one has finished"
            details["limit"] = limit
        else:
            day = verdict == Verdict.QUOTA_DAY
            quota = tier.tokens_per_day if day else tier.tokens_per_month
            used = outcome.used_day if day else outcome.used_month
            periods = self._periods.at(now)
            ends_at = periods.day_ends_at if day else periods.month_ends_at
            # Exhausted by tokens already used: nothing frees up before the period rolls over. Exhausted only
            # with what requests in flight have reserved: their actual counts may give some back soon.
            retry = max(1, int(ends_at - now + 0.999)) if used - outcome.reserved >= quota else 1
            message = (f"the {'daily' if day else 'monthly'} token quota of {quota} is used up "
                       f"({used} used or reserved); it renews at the start of the next UTC "
                       f"{'day' if day else 'month'}")
            details.update(limit=quota, period="day" if day else "month", used_tokens=used - outcome.reserved,
                           reserved_tokens=outcome.reserved)
        details["retry_after_s"] = retry
        headers["Retry-After"] = str(retry)
        return ApiError(429, code, message, headers=headers, **details)

    def _emit_rejection(self, who: Principal, code: str) -> None:
        # Fire and forget: a refusal must stay cheap under a flood, and a lost rejection fact costs no
        # money (rejections are counted, never billed). Accepted requests are emitted durably elsewhere.
        if self._on_rejected is None:
            return
        if len(self._pending) >= MAX_PENDING_REJECTION_EVENTS:
            REJECTION_EVENTS_DROPPED.inc()
            return
        task: asyncio.Task[Any] = asyncio.create_task(self._on_rejected(
            tenant_id=who.tenant_id, tier=who.tier, reason=code,
            api_key_id=who.subject if who.kind == "api_key" else None,
        ))
        self._pending.add(task)
        task.add_done_callback(self._rejection_sent)

    def _rejection_sent(self, task: asyncio.Task[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("request.rejected usage event not sent: %s", task.exception())


def _service_limits(tier: TierLimits, key: KeyLimits | None, o: Outcome) -> str:
    """The `RateLimit` field: remaining requests (and when one more is available) and free slots."""
    value = f'"rpm";r={o.rate_remaining}'
    if o.rate_next_us:
        value += f";t={seconds_up(o.rate_next_us)}"
    value += f', "concurrency";r={max(0, tier.concurrency - o.in_flight)}'
    if key is not None:
        if key.rate is not None:
            value += f', "key-rpm";r={o.key_rate_remaining}'
            if o.key_rate_next_us:
                value += f";t={seconds_up(o.key_rate_next_us)}"
        if key.concurrency is not None:
            value += f', "key-concurrency";r={max(0, key.concurrency - o.key_in_flight)}'
    return value
