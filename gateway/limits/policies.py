"""What a caller is allowed: the tenant's tier limits and optional per-API-key overrides, resolved once.

Every tenant gets its tier's `rate_limits` (requests per minute, concurrent in-flight requests) and
`quotas` (tokens per UTC day and month), shared by all of the tenant's credentials. An API key may in
addition carry its own, usually narrower, rate and concurrency limits (settings
`rate_limit_key_overrides`, keyed by API key id); a request must then conform to both.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.limits.gcra import GcraPolicy
from lotabots.tiers import TierConfig, TierPolicy

RATE_WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class KeyLimits:
    """An API key's own limits (either may be absent: only the tenant's applies then)."""

    rate: GcraPolicy | None
    concurrency: int | None


@dataclass(frozen=True, slots=True)
class TierLimits:
    """One tier's limits, with the `RateLimit-Policy` field value precomputed."""

    tier: str
    rate: GcraPolicy
    concurrency: int
    tokens_per_day: int
    tokens_per_month: int
    max_tokens_cap: int
    policy_field: str


class LimitPolicies:
    """Resolves the limits of a tier and of an API key (both immutable: build once per gateway)."""

    def __init__(self, tiers: TierConfig, key_overrides: dict[str, dict[str, int]] | None = None) -> None:
        self._tiers = {name: _tier_limits(t) for name, t in tiers.tiers.items()}
        self._keys = {key_id: _key_limits(key_id, raw) for key_id, raw in (key_overrides or {}).items()}
        self._key_fields: dict[tuple[str, str], str] = {}

    def tier(self, name: str) -> TierLimits | None:
        return self._tiers.get(name)

    def key(self, key_id: str | None) -> KeyLimits | None:
        return self._keys.get(key_id) if key_id is not None else None

    def policy_field(self, tier: TierLimits, key_id: str | None, key: KeyLimits | None) -> str:
        if key is None:
            return tier.policy_field
        field = self._key_fields.get((tier.tier, key_id or ""))
        if field is None:
            field = self._key_fields[(tier.tier, key_id or "")] = tier.policy_field + _key_policy_items(key)
        return field


def _tier_limits(t: TierPolicy) -> TierLimits:
    rate = GcraPolicy.per_period(t.rate_limits.requests_per_minute, RATE_WINDOW_S)
    concurrency = t.rate_limits.concurrent_requests
    field = f'"rpm";q={rate.limit};w={RATE_WINDOW_S}, "concurrency";q={concurrency};qu="concurrent-requests"'
    return TierLimits(t.name, rate, concurrency, t.quotas.tokens_per_day, t.quotas.tokens_per_month,
                      t.max_tokens_cap, field)


def _key_limits(key_id: str, raw: dict[str, int]) -> KeyLimits:
    unknown = set(raw) - {"requests_per_minute", "concurrent_requests"}
    if unknown:
        raise ValueError(f"rate_limit_key_overrides[{key_id!r}]: unknown fields {sorted(unknown)}")
    rpm, concurrency = raw.get("requests_per_minute"), raw.get("concurrent_requests")
    if (rpm is not None and rpm <= 0) or (concurrency is not None and concurrency <= 0):
        raise ValueError(f"rate_limit_key_overrides[{key_id!r}]: limits must be positive")
    return KeyLimits(GcraPolicy.per_period(rpm, RATE_WINDOW_S) if rpm else None, concurrency)


def _key_policy_items(key: KeyLimits) -> str:
    items = ""
    if key.rate is not None:
        items += f', "key-rpm";q={key.rate.limit};w={RATE_WINDOW_S}'
    if key.concurrency is not None:
        items += f', "key-concurrency";q={key.concurrency};qu="concurrent-requests"'
    return items
