"""Prometheus counters of the limits: refusals by tier and limit, and the backend's health."""

from __future__ import annotations

from prometheus_client import Counter

RATE_LIMIT_REJECTIONS = Counter(
    "lotabots_rate_limit_rejections_total", "submits refused by a request-rate or concurrency limit",
    ["tier", "limit"],
)
QUOTA_REJECTIONS = Counter(
    "lotabots_quota_rejections_total", "submits refused by a token quota", ["tier", "period"],
)
LIMITS_BACKEND_ERRORS = Counter(
    "lotabots_limits_backend_errors_total", "limit checks that could not reach their backend", ["backend"],
)
REJECTION_EVENTS_DROPPED = Counter(
    "lotabots_rejection_usage_events_dropped_total",
    "request.rejected usage events not sent because too many were already on their way",
)

_children: dict[tuple[str, str, str], Counter] = {}


def count_refusal(kind: str, tier: str, limit: str) -> None:
    """Increment the refusal counter `kind` ("rate" or "quota") for (tier, limit), labels bound once."""
    key = (kind, tier, limit)
    child = _children.get(key)
    if child is None:
        family = RATE_LIMIT_REJECTIONS if kind == "rate" else QUOTA_REJECTIONS
        child = _children[key] = family.labels(tier, limit)
    child.inc()
