"""Validation screen: a fact from ``usage.events`` becomes a :class:`UsageEvent` or a refusal with a code.

A message is one CloudEvent or a CloudEvents batch (``schemas.usage.usage_message_events`` splits it);
each fact is screened on its own, so one bad fact in a batch does not take its neighbours down.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from lotabots.tiers import TierConfig
from schemas.usage import UsageEvent, usage_message_events


@dataclass(frozen=True)
class Refusal:
    """Why a message is poison: a stable code for the DLQ and a human message."""

    code: str
    message: str


def split_usage_message(raw: bytes | None) -> list[Any] | Refusal:
    """The facts of one message (decoded JSON), or why the message as a whole is poison."""
    if not raw:
        return Refusal("empty_usage_event", "the message has no value")
    try:
        return usage_message_events(raw)
    except ValueError as exc:  # not JSON, or JSON that is neither an event nor a batch
        return Refusal("invalid_usage_event", f"{type(exc).__name__}: {exc}"[:2000])


def validate_usage_event(raw: bytes | None, tiers: TierConfig) -> UsageEvent | Refusal:
    """Parse and check a message holding one fact. Never raises: every failure is a :class:`Refusal`."""
    facts = split_usage_message(raw)
    if isinstance(facts, Refusal):
        return facts
    if len(facts) != 1:
        return Refusal("invalid_usage_event", f"expected one CloudEvent, got a batch of {len(facts)}")
    return validate_usage_fact(facts[0], tiers)


def validate_usage_fact(value: Any, tiers: TierConfig) -> UsageEvent | Refusal:
    """Check one decoded fact. Never raises: every failure is a :class:`Refusal`."""
    try:
        event = UsageEvent.model_validate(value)
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
