"""Producing usage facts: the gateway and the inference workers call :class:`UsageEmitter`.

Every fact's future resolves with the broker's ack (the producer is acks=all + idempotent), so a caller
that goes on after awaiting it knows the fact is durable on ``usage.events``.

Facts are *group-committed* (:class:`UsageBatcher`): the facts enqueued during one turn of the event loop
leave as one message per ``usage.events`` partition, a CloudEvents batch (a JSON array,
``content-type: application/cloudevents-batch+json``), or a plain structured CloudEvent when the group
holds one fact. No fact waits for a timer: the flush runs on the loop turn after the first fact, so at
low load a fact leaves alone, and under load (a group commit of submits resumes dozens of requests in one
turn) the facts share a message, which is what lets the Faust app keep up (its cost is per message).

A fact still lands on its tenant's partition (the partition the tenant id's key hashes to), and the
message's key is the first fact's tenant id, which hashes to that same partition: every consumer can keep
relying on "all of a tenant's facts are on one partition".
"""

from __future__ import annotations

import asyncio
import weakref
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from prometheus_client import Counter, Histogram

from lotabots.ids import new_id
from schemas.topics import USAGE_EVENTS
from schemas.usage import (
    CLOUDEVENT_CONTENT_TYPE,
    CLOUDEVENTS_BATCH_CONTENT_TYPE,
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
USAGE_FACTS_PER_MESSAGE = Histogram("lotabots_usage_facts_per_message", "usage facts per usage.events message",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
_ACCEPTED_PRODUCED = USAGE_EVENTS_PRODUCED.labels(UsageEventType.REQUEST_ACCEPTED.value)
_SINGLE_HEADERS = [("content-type", CLOUDEVENT_CONTENT_TYPE.encode())]
_BATCH_HEADERS = [("content-type", CLOUDEVENTS_BATCH_CONTENT_TYPE.encode())]

MAX_FACTS_PER_MESSAGE = 500
MAX_BYTES_PER_MESSAGE = 512 * 1024  # well under the broker's 1 MB message limit


def _utc(at: datetime) -> datetime:
    # SQLite hands timestamps back without a zone; they were written in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def encode_usage_event(event: UsageEvent) -> bytes:
    return event.model_dump_json(exclude_none=True).encode()


def tenant_partition(tenant_id: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a tenant id key (murmur2, as the Java client)."""
    return (murmur2(tenant_id) & 0x7FFFFFFF) % partitions


class UsageBatcher:
    """Group commit of usage facts onto one producer: one message per partition per event-loop turn."""

    def __init__(self, producer: AIOKafkaProducer, topic: str = USAGE_EVENTS) -> None:
        self.producer = producer
        self.topic = topic
        self._pending: list[tuple[bytes, bytes, asyncio.Future[None]]] = []
        self._scheduled = False
        self._partitions = 0
        self._flushing: set[asyncio.Task[None]] = set()  # the loop keeps only weak references to tasks

    def add(self, tenant_id: str, payload: bytes) -> asyncio.Future[None]:
        """Enqueue one encoded CloudEvent; the future resolves when the broker acked its message."""
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        self._pending.append((tenant_id.encode(), payload, acked))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._start_flush, loop)  # after everything already runnable in this turn
        return acked

    def _start_flush(self, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduled = False
        facts, self._pending = self._pending, []
        if facts:
            task = loop.create_task(self._flush(facts))
            self._flushing.add(task)
            task.add_done_callback(self._flushing.discard)

    async def _flush(self, facts: list[tuple[bytes, bytes, asyncio.Future[None]]]) -> None:
        try:
            if not self._partitions:
                self._partitions = len(await self.producer.partitions_for(self.topic))
        except Exception as exc:  # no metadata: nothing was handed over
            _fail([f[2] for f in facts], exc)
            return
        groups: dict[int, list[tuple[bytes, bytes, asyncio.Future[None]]]] = {}
        for fact in facts:
            groups.setdefault(tenant_partition(fact[0], self._partitions), []).append(fact)
        chunks = [(partition, chunk) for partition, group in groups.items() for chunk in _chunks(group)]
        for i, (partition, chunk) in enumerate(chunks):
            try:
                await self._send(partition, chunk)
            except Exception as exc:  # the producer refused it: this chunk and the rest fail (their acks
                # never come); chunks already handed over settle with their own acks
                _fail([f[2] for _, later in chunks[i:] for f in later], exc)
                return

    async def _send(self, partition: int, chunk: list[tuple[bytes, bytes, asyncio.Future[None]]]) -> None:
        if len(chunk) == 1:
            value, headers = chunk[0][1], _SINGLE_HEADERS
        else:
            value, headers = b"[" + b",".join(f[1] for f in chunk) + b"]", _BATCH_HEADERS
        sent = await self.producer.send(self.topic, value, key=chunk[0][0], partition=partition, headers=headers)
        USAGE_FACTS_PER_MESSAGE.observe(len(chunk))
        waiters = [f[2] for f in chunk]
        sent.add_done_callback(lambda done: _settle(done, waiters))


def _chunks(group: list[Any]) -> list[list[Any]]:
    chunks: list[list[Any]] = [[]]
    size = 0
    for fact in group:
        if chunks[-1] and (len(chunks[-1]) >= MAX_FACTS_PER_MESSAGE or size + len(fact[1]) > MAX_BYTES_PER_MESSAGE):
            chunks.append([])
            size = 0
        chunks[-1].append(fact)
        size += len(fact[1]) + 1
    return chunks


def _fail(waiters: list[asyncio.Future[None]], error: BaseException) -> None:
    for acked in waiters:
        if not acked.done():
            acked.set_exception(error)


def _settle(done: asyncio.Future[Any], waiters: list[asyncio.Future[None]]) -> None:
    error = done.exception() if not done.cancelled() else asyncio.CancelledError()
    if error is not None:
        _fail(waiters, error)
        return
    for acked in waiters:
        if not acked.done():
            acked.set_result(None)


_BATCHERS: weakref.WeakKeyDictionary[Any, dict[str, UsageBatcher]] = weakref.WeakKeyDictionary()


def usage_batcher(producer: AIOKafkaProducer, topic: str = USAGE_EVENTS) -> UsageBatcher:
    """The one batcher of a producer and topic: every emitter of a process shares its groups."""
    by_topic = _BATCHERS.setdefault(producer, {})
    batcher = by_topic.get(topic)
    if batcher is None:
        batcher = by_topic[topic] = UsageBatcher(producer, topic)
    return batcher


class UsageEmitter:
    """Builds CloudEvents for the billable facts and sends them to ``usage.events``, waiting for the ack."""

    def __init__(self, producer: AIOKafkaProducer, *, topic: str = USAGE_EVENTS) -> None:
        self.producer = producer
        self.topic = topic
        self.batcher = usage_batcher(producer, topic)

    async def send(self, event: UsageEvent) -> None:
        await self.batcher.add(event.tenant_id, encode_usage_event(event))
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
        """Enqueue the `request accepted` fact and return its ack future (the submit hot path awaits it
        next to the request's own publish, without a gather/task per submit).

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
        acked = self.batcher.add(tenant_id, payload)
        _ACCEPTED_PRODUCED.inc()
        return acked

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
