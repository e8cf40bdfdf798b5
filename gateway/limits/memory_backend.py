"""In-process limit state for a single gateway replica.

Every method runs to completion without awaiting, so an admission is atomic on the event loop without a
lock. In-flight entries expire `ttl_s` after admission (or after the last sign of life), so a terminal
event that never arrives cannot hold a slot or a reservation forever.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.limits.backend import Outcome, Ticket, Verdict
from gateway.limits.gcra import gcra_check, gcra_peek


class _InFlight:
    __slots__ = ("tenant_id", "key_id", "tokens", "expires_at")

    def __init__(self, tenant_id: str, key_id: str | None, tokens: int, expires_at: int) -> None:
        self.tenant_id = tenant_id
        self.key_id = key_id
        self.tokens = tokens
        self.expires_at = expires_at


class _TenantLoad:
    __slots__ = ("count", "tokens", "keys")

    def __init__(self) -> None:
        self.count = 0
        self.tokens = 0
        self.keys: dict[str, int] = {}


_IDLE = _TenantLoad()


def monotonic_us() -> int:
    return time.monotonic_ns() // 1000


class MemoryBackend:
    """Limit state in dicts: GCRA arrival times, in-flight requests, settled tokens per UTC period."""

    def __init__(self, ttl_s: float, clock_us: Callable[[], int] = monotonic_us) -> None:
        self._ttl_us = int(ttl_s * 1_000_000)
        self._clock = clock_us
        self._tenant_tat: dict[str, int] = {}
        self._key_tat: dict[str, int] = {}
        self._in_flight: dict[str, _InFlight] = {}
        self._load: dict[str, _TenantLoad] = {}
        self._settled: dict[tuple[str, str], int] = {}  # (tenant, day or month label) -> tokens
        self._periods: tuple[str, str] = ("", "")
        self._sweep_every_us = max(1, min(self._ttl_us // 10, 5_000_000))
        self._next_sweep = 0

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def admit(self, ticket: Ticket) -> Outcome:
        return self.admit_at(ticket, self._clock())

    def admit_at(self, t: Ticket, now: int) -> Outcome:
        """The admission at a given instant (tests drive the clock)."""
        if now >= self._next_sweep:
            self._sweep(now)
        if self._periods != (t.day, t.month):
            self._roll_periods(t.day, t.month)
        rate = t.limits.rate
        tat = self._tenant_tat.get(t.tenant_id, 0)
        d = gcra_check(tat, now, rate)
        key = t.key
        kd = None
        if key is not None and key.rate is not None and t.key_id is not None:
            kd = gcra_check(self._key_tat.get(t.key_id, 0), now, key.rate)
        load = self._load.get(t.tenant_id, _IDLE)
        key_count = load.keys.get(t.key_id, 0) if t.key_id is not None else 0
        used_day = max(t.committed_day, self._settled.get((t.tenant_id, t.day), 0)) + load.tokens
        used_month = max(t.committed_month, self._settled.get((t.tenant_id, t.month), 0)) + load.tokens

        if kd is not None and not kd.allowed:
            verdict = Verdict.KEY_RATE
        elif not d.allowed:
            verdict = Verdict.RATE
        elif load.count >= t.limits.concurrency:
            verdict = Verdict.CONCURRENCY
        elif key is not None and key.concurrency is not None and key_count >= key.concurrency:
            verdict = Verdict.KEY_CONCURRENCY
        elif used_day >= t.limits.tokens_per_day:
            verdict = Verdict.QUOTA_DAY
        elif used_month >= t.limits.tokens_per_month:
            verdict = Verdict.QUOTA_MONTH
        else:
            self._tenant_tat[t.tenant_id] = d.tat
            if kd is not None:
                self._key_tat[t.key_id] = kd.tat  # type: ignore[index]
            if load is _IDLE:
                load = self._load[t.tenant_id] = _TenantLoad()
            load.count += 1
            load.tokens += t.reservation
            if t.key_id is not None:
                key_count = load.keys[t.key_id] = key_count + 1
            expires_at = now + self._ttl_us
            self._in_flight[t.request_id] = _InFlight(t.tenant_id, t.key_id, t.reservation, expires_at)
            return Outcome(Verdict.ADMITTED, d.remaining, d.next_unit_us, 0,
                           kd.remaining if kd else 0, kd.next_unit_us if kd else 0, 0,
                           load.count, key_count, used_day, used_month, load.tokens - t.reservation)

        # Refused: nothing was taken, so report the rate state as it stands.
        if d.allowed:
            remaining, next_us = gcra_peek(tat, now, rate)
        else:
            remaining, next_us = 0, d.next_unit_us
        k_remaining = k_next = k_retry = 0
        if kd is not None:
            if kd.allowed:
                k_remaining, k_next = gcra_peek(self._key_tat.get(t.key_id, 0), now, key.rate)  # type: ignore[arg-type, union-attr]
            else:
                k_next, k_retry = kd.next_unit_us, kd.retry_after_us
        return Outcome(verdict, remaining, next_us, d.retry_after_us, k_remaining, k_next, k_retry,
                       load.count, key_count, used_day, used_month, load.tokens)

    async def settle(self, tenant_id: str, request_id: str, tokens: int, day: str, month: str) -> bool:
        entry = self._in_flight.pop(request_id, None)
        if entry is None:
            return False
        self._unload(entry)
        if tokens > 0:
            settled = self._settled
            settled[(entry.tenant_id, day)] = settled.get((entry.tenant_id, day), 0) + tokens
            settled[(entry.tenant_id, month)] = settled.get((entry.tenant_id, month), 0) + tokens
        return True

    async def touch(self, tenant_id: str, request_id: str) -> None:
        entry = self._in_flight.get(request_id)
        if entry is not None:
            entry.expires_at = self._clock() + self._ttl_us

    def in_flight(self, tenant_id: str) -> int:
        return self._load.get(tenant_id, _IDLE).count

    def _unload(self, entry: _InFlight) -> None:
        load = self._load.get(entry.tenant_id)
        if load is None:
            return
        load.count -= 1
        load.tokens -= entry.tokens
        if entry.key_id is not None:
            left = load.keys.get(entry.key_id, 1) - 1
            if left > 0:
                load.keys[entry.key_id] = left
            else:
                load.keys.pop(entry.key_id, None)
        if load.count <= 0:
            del self._load[entry.tenant_id]

    def _sweep(self, now: int) -> None:
        # Expiry is checked now and then rather than per request: an in-flight request is one dict entry,
        # and a sweep costs O(requests in flight), not O(requests admitted).
        self._next_sweep = now + self._sweep_every_us
        for request_id, entry in [item for item in self._in_flight.items() if item[1].expires_at <= now]:
            del self._in_flight[request_id]
            self._unload(entry)
        # An arrival time in the past is the same as none: drop idle callers' rate state.
        self._tenant_tat = {k: v for k, v in self._tenant_tat.items() if v > now}
        self._key_tat = {k: v for k, v in self._key_tat.items() if v > now}

    def _roll_periods(self, day: str, month: str) -> None:
        # A new UTC day (or month): settled counts of periods that ended can no longer refuse anything.
        self._periods = (day, month)
        self._settled = {k: v for k, v in self._settled.items() if k[1] in (day, month)}
