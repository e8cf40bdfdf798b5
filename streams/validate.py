"""Validation screen: raw bytes from ``usage.events`` become a :class:`UsageEvent` or a refusal with a code."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from lotabots.tiers import TierConfig
from schemas.usage import UsageEvent


@dataclass(frozen=True)
class Refusal:
    """Why a message is poison: a stable code for the DLQ and a human message."""

    code: str
    message: str


def validate_usage_event(raw: bytes | None, tiers: TierConfig) -> UsageEvent | Refusal:
    """Parse and check one message. Never raises: every failure is a :class:`Refusal`."""
    if not raw:
        return Refusal("empty_usage_event", "the message has no value")
    try:
        event = UsageEvent.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in exc.errors()[:5]
        )
        return Refusal("invalid_usage_event", problems[:2000])
    except Exception as exc:  # not JSON at all, or a pydantic internal error on bizarre input
        return Refusal("invalid_usage_event", f"{type(exc).__name__}: {exc}"[:2000])
    if event.data.tier not in tiers.tiers:
        # an unknown tier cannot be priced: refuse rather than bill at zero
        return Refusal("unknown_tier", f"tier {event.data.tier!r} is not in the tier config")
    return event
