"""Producing usage facts: the gateway and the inference workers call :class:`UsageEmitter`.

Every method awaits the broker's ack (the producer is acks=all + idempotent), so a caller that goes on
after it returned knows the fact is durable on ``usage.events``. The key is the tenant id: all of a
tenant's facts land on one partition, which is what the Faust app's per-tenant tables rely on.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from lotabots.ids import new_id
from schemas.topics import USAGE_EVENTS
from schemas.usage import (
    CLOUDEVENTS_SPECVERSION,
    DEFAULT_AUTONOMY_LEVEL,
    USAGE_EVENT_SOURCE_GATEWAY,
    USAGE_EVENT_SOURCE_INFERENCE,
    InferenceCompletedData,
    RequestRejectedData,
    UsageEvent,
    UsageEventType,
    accepted_event_id,
    inference_event_id,
)

USAGE_EVENTS_PRODUCED = Counter("lotabots_usage_events_produced_total", "usage facts produced", ["type"])
_ACCEPTED_PRODUCED = USAGE_EVENTS_PRODUCED.labels(UsageEventType.REQUEST_ACCEPTED.value)


def _utc(at: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def encode_usage_event(event: UsageEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


class UsageEmitter:
    """Builds CloudEvents for the billable facts and sends them to ``usage.events``, waiting for the ack."""

    def __init__(self, producer: AIOKafkaProducer, *, topic: str = USAGE_EVENTS) -> None:
        self.producer = producer
        self.topic = topic

    async def send(self, event: UsageEvent) -> None:
        await self.producer.send_and_wait(self.topic, encode_usage_event(event), key=event.tenant_id.encode())
        USAGE_EVENTS_PRODUCED.labels(event.type.value).inc()

    async def request_accepted(
        self, *, tenant_id: str, tier: str, request_id: str, max_tokens_reserved: int,
        api_key_id: str | None = None, at: datetime | None = None,
    ) -> None:
        """The gateway answered 202 for ``request_id`` (id ``<request_id>:accepted``); awaits the ack."""
        await (await self.send_request_accepted(tenant_id=tenant_id, tier=tier, request_id=request_id,
                                                max_tokens_reserved=max_tokens_reserved, api_key_id=api_key_id,
                                                at=at))

    async def send_request_accepted(
        self, *, tenant_id: str, tier: str, request_id: str, max_tokens_reserved: int,
        api_key_id: str | None = None, at: datetime | None = None,
    ) -> asyncio.Future[Any]:
        """Enqueue the `request accepted` fact and return the broker-ack future (the submit hot path awaits
        it next to the request's own publish, without a gather/task per submit).

        The CloudEvent is written with orjson straight from trusted values (tests pin that it decodes
        as a valid :class:`UsageEvent`).
        """
        data: dict[str, object] = {"tenant_id": tenant_id, "tier": tier, "request_id": request_id,
                                   "max_tokens_reserved": max_tokens_reserved}
        if api_key_id is not None:
            data["api_key_id"] = api_key_id
        payload = orjson.dumps({
            "specversion": CLOUDEVENTS_SPECVERSION, "id": accepted_event_id(request_id),
            "source": USAGE_EVENT_SOURCE_GATEWAY, "type": UsageEventType.REQUEST_ACCEPTED.value,
            "subject": request_id, "time": _utc(at or datetime.now(UTC)), "datacontenttype": "application/json",
            "dataschemaversion": 1, "data": data,
        })
        future = await self.producer.send(self.topic, payload, key=tenant_id.encode())
        _ACCEPTED_PRODUCED.inc()
        return future

    async def request_rejected(
        self, *, tenant_id: str, tier: str, reason: str, api_key_id: str | None = None,
        request_id: str | None = None, event_id: str | None = None, at: datetime | None = None,
    ) -> UsageEvent:
        """The gateway refused a request with the error code ``reason`` (a fresh id per refusal)."""
        event = UsageEvent(
            id=event_id or new_id("rej"), source=USAGE_EVENT_SOURCE_GATEWAY,
            type=UsageEventType.REQUEST_REJECTED, subject=request_id, time=_utc(at or datetime.now(UTC)),
            data=RequestRejectedData(tenant_id=tenant_id, tier=tier, reason=reason, request_id=request_id,
                                     api_key_id=api_key_id),
        )
        await self.send(event)
        return event

    async def inference_completed(
        self, *, tenant_id: str, tier: str, request_id: str, model: str, prompt_tokens: int,
        completion_tokens: int, latency_ms: int, finish_reason: str, status: str,
        autonomy_level: str = DEFAULT_AUTONOMY_LEVEL, at: datetime | None = None,
    ) -> UsageEvent:
        """A request ended in a worker (id ``<request_id>:inference``, the same on every re-run)."""
        event = UsageEvent(
            id=inference_event_id(request_id),
            # source + id identify a fact: the source names the tier's worker pool, not the one process
            # that happened to run it, so a re-run elsewhere is the same fact.
            source=f"{USAGE_EVENT_SOURCE_INFERENCE}/{tier}",
            type=UsageEventType.INFERENCE_COMPLETED, subject=request_id, time=_utc(at or datetime.now(UTC)),
            data=InferenceCompletedData(
                tenant_id=tenant_id, tier=tier, request_id=request_id, model=model,
                prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency_ms=max(0, latency_ms),
                finish_reason=finish_reason or "", status=status, autonomy_level=autonomy_level,
            ),
        )
        await self.send(event)
        return event
