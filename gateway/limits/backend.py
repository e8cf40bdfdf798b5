"""The contract between the admission logic and where limit state lives (in-process or Redis).

One `admit` is atomic: it checks the tenant's (and key's) request rate, in-flight count and token quota
and, only if all pass, takes a rate unit, records the request as in flight and reserves its tokens. A
refusal changes nothing. `settle` ends an in-flight request (idempotent: every gateway replica may apply
the same terminal event) and counts its actual tokens in the UTC day and month it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple, Protocol

from gateway.limits.policies import KeyLimits, TierLimits


class Verdict(IntEnum):
    """Why a submit was admitted or refused (the Redis script returns the same numbers)."""

    ADMITTED = 0
    RATE = 1
    KEY_RATE = 2
    CONCURRENCY = 3
    KEY_CONCURRENCY = 4
    QUOTA_DAY = 5
    QUOTA_MONTH = 6


@dataclass(slots=True)
class Ticket:
    """One submit as the limits see it."""

    request_id: str
    tenant_id: str
    limits: TierLimits
    key_id: str | None  # set only when the key has its own limits
    key: KeyLimits | None
    reservation: int  # tokens held until the request ends
    day: str
    month: str
    committed_day: int  # tokens the Faust app has counted for `day` / `month`
    committed_month: int


class Outcome(NamedTuple):
    """The verdict and the state the response headers report (times in microseconds)."""

    verdict: int
    rate_remaining: int
    rate_next_us: int
    rate_retry_us: int
    key_rate_remaining: int
    key_rate_next_us: int
    key_rate_retry_us: int
    in_flight: int  # the tenant's in-flight requests, this one included when admitted
    key_in_flight: int
    used_day: int  # tokens counted or reserved for the day before this request
    used_month: int
    reserved: int  # of which reserved by requests in flight


class LimitBackend(Protocol):
    async def admit(self, ticket: Ticket) -> Outcome: ...

    async def settle(self, tenant_id: str, request_id: str, tokens: int, day: str, month: str) -> bool:
        """End an in-flight request, counting `tokens`; False when it was not (or no longer) in flight."""
        ...

    async def touch(self, tenant_id: str, request_id: str) -> None:
        """A request is still alive (started, awaiting approval): push its in-flight expiry out."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...
