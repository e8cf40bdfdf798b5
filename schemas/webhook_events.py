"""Webhook wire models: the delayed retry messages on `webhooks.retry.N` and the dead letters on `webhooks.dlq`.

Also the webhook event vocabulary: a lifecycle event of type `succeeded` is delivered as
`request.succeeded`; filters name the short form (`succeeded`) or `completed` for every terminal type.
"""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from schemas.events import LifecycleType, WireModel

WEBHOOK_EVENT_PREFIX = "request."
# A filter may name each lifecycle type, or `completed` (Replicate's word) for all terminal ones.
COMPLETED = "completed"
TERMINAL_TYPES = frozenset({LifecycleType.SUCCEEDED.value, LifecycleType.FAILED.value, LifecycleType.CANCELED.value})
FILTER_NAMES = frozenset({t.value for t in LifecycleType} | {COMPLETED})
WebhookEventName = Literal["started", "succeeded", "failed", "canceled", "awaiting_approval", "completed"]


def webhook_event_type(lifecycle: LifecycleType | str) -> str:
    """`succeeded` -> `request.succeeded` (the `type` of the payload)."""
    return WEBHOOK_EVENT_PREFIX + LifecycleType(lifecycle).value


def filter_matches(event_filter: list[str] | None, lifecycle: LifecycleType | str) -> bool:
    """Does a filter (short names; empty or None = every event) select this lifecycle type?"""
    if not event_filter:
        return True
    value = LifecycleType(lifecycle).value
    return value in event_filter or (COMPLETED in event_filter and value in TERMINAL_TYPES)


class WebhookRetry(WireModel):
    """Attempt `attempt` of delivery `delivery_id` is due at `due_at` (keyed by request id).

    The due time travels in the message, so a retry-stage consumer holds the message until then
    whatever the stage topic; `replay` marks a one-shot attempt asked for through the API.
    """

    SCHEMA_NAME: ClassVar[str] = "webhook_retry"
    schema_version: Literal[1] = 1
    delivery_id: str
    request_id: str
    tenant_id: str
    attempt: int
    due_at: datetime
    replay: bool = False


class WebhookDeadLetter(WireModel):
    """A delivery that ended failed: what was sent where, why it gave up, and where it was consumed from."""

    SCHEMA_NAME: ClassVar[str] = "webhook_dead_letter"
    schema_version: Literal[1] = 1
    delivery_id: str
    tenant_id: str
    endpoint_id: str | None = None
    request_id: str
    event_type: str
    url: str
    attempts: int
    last_status_code: int | None = None
    error_code: str
    error_message: str
    payload: str
    source_topic: str
    source_partition: int
    source_offset: int
    at: datetime


WEBHOOK_WIRE_MODELS: list[type[WireModel]] = [WebhookRetry, WebhookDeadLetter]
