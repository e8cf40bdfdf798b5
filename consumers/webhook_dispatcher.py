"""The webhook dispatcher: consumer group `webhooks-dispatcher` over `results` and `webhooks.retry.N`.

Pipeline per message:
  results record  -> plan deliveries (DB row + event) -> store them (idempotent) -> first attempts
  retry record    -> hold until due (pause the partition, seek back, keep polling the others) -> attempt
  attempt         -> 2xx: done | failure: produce the next retry stage, or the DLQ when it is over
                  -> log the attempt and the delivery's state (DB)            -> offset may be committed

An offset is committed only when every delivery its message started is durably recorded: the next
retry produced (acks=all) or the final state written. A dispatcher killed mid-delivery leaves the
offset uncommitted, so the next one delivers again with the same webhook-id (at-least-once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.offsets import OffsetTracker
from consumers.webhook_retry import RetryPolicy, Verdict, verdict
from consumers.webhook_sender import AttemptOutcome, WebhookSender
from consumers.webhook_store import (
    FAILED,
    PENDING,
    RETRYING,
    SUCCEEDED,
    AttemptRecord,
    DeliveryContext,
    DispatchStore,
)
from gateway.ssrf import Resolver
from gateway.webhook_secrets import SigningSecretStore
from gateway.webhook_signing import SecretBox
from lotabots.kafka_io import decode, encode, make_consumer, make_producer
from lotabots.settings import Settings
from schemas.events import RequestLifecycleEvent
from schemas.topics import RESULTS, WEBHOOK_RETRY_STAGES_S, WEBHOOKS_DLQ, webhook_retry_topic
from schemas.webhook_events import WebhookDeadLetter, WebhookRetry

log = logging.getLogger(__name__)
T = TypeVar("T")

GROUP = "webhooks-dispatcher"
ATTEMPTS = Counter("lotabots_webhook_attempts_total", "webhook delivery attempts", ["outcome"])
IN_FLIGHT = Gauge("lotabots_webhook_in_flight", "webhook deliveries being attempted")
HELD = Gauge("lotabots_webhook_held_partitions", "retry partitions paused until their head is due")


class _Abandoned(Exception):
    """Shutting down before an effect was durable: leave the offset uncommitted (it is redone)."""


@dataclass
class _RecordWork:
    """Deliveries still open for one consumed record; its offset is done when they all are."""

    tp: TopicPartition
    offset: int
    remaining: int


class WebhookDispatcher:
    """Delivers webhooks for lifecycle events; retries through the delayed stage topics."""

    def __init__(self, settings: Settings, engine: AsyncEngine, *, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.retry = RetryPolicy.from_settings(settings)
        self.store = DispatchStore(engine, SigningSecretStore(engine, SecretBox.from_settings(settings)))
        self.resolver = resolver
        self.offsets = OffsetTracker()
        self._held: dict[TopicPartition, float] = {}  # paused retry partition -> epoch seconds its head is due
        self._tasks: set[asyncio.Task[None]] = set()
        self._delivering: set[str] = set()
        self._full = False  # at webhook_max_in_flight: every partition paused
        self._stop = asyncio.Event()
        self._last_commit = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.sender: WebhookSender | None = None

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def topics(self) -> list[str]:
        return [RESULTS, *(webhook_retry_topic(i) for i in range(1, len(WEBHOOK_RETRY_STAGES_S) + 1))]

    async def run(self) -> None:
        self.producer = make_producer(self.settings, client_id="webhooks-dispatcher")
        await self.producer.start()
        self.sender = WebhookSender(self.settings, self.resolver)
        self.consumer = consumer = make_consumer(self.settings, group_id=GROUP, client_id="webhooks-dispatcher",
                                                 max_poll_records=500)
        await consumer.start()
        consumer.subscribe(self.topics, listener=_Rebalance(self))
        log.info("webhook dispatcher started: group %s, retry schedule %s s (jitter %.0f%%), %d in flight at most",
                 GROUP, ",".join(f"{d:g}" for d in self.retry.schedule), self.retry.jitter * 100,
                 self.settings.webhook_max_in_flight)
        try:
            while not self._stop.is_set():
                room = self.settings.webhook_max_in_flight - len(self._tasks)
                self._back_pressure(full=room <= 0)
                self._resume_due()
                # keep polling even when full (all paused): the group must see this member alive
                timeout_ms = 50 if room <= 0 else self._poll_timeout_ms()
                batch = await consumer.getmany(timeout_ms=timeout_ms, max_records=max(1, room))
                await self._take(batch)
                await self._commit()
            if self._tasks:  # SIGTERM: let attempts in flight finish and record, then commit
                await asyncio.wait(set(self._tasks), timeout=self.settings.webhook_total_timeout_s + 5)
            await self._commit(force=True)
        finally:
            for task in self._tasks:
                task.cancel()
            await consumer.stop()
            await self.producer.stop()
            await self.sender.aclose()

    # ---- consume --------------------------------------------------------------------------------
    def _poll_timeout_ms(self) -> int:
        if not self._held:
            return 200
        wait = min(self._held.values()) - time.time()
        return int(min(200, max(0, wait * 1000)))

    def _back_pressure(self, full: bool) -> None:
        """At `webhook_max_in_flight`, pause every partition; resume (all but the held ones) when room frees."""
        assert self.consumer is not None
        if full and not self._full:
            self.consumer.pause(*self.consumer.assignment())
        elif not full and self._full:
            self.consumer.resume(*(tp for tp in self.consumer.assignment() if tp not in self._held))
        self._full = full

    def _resume_due(self) -> None:
        assert self.consumer is not None
        now = time.time()
        for tp, due in list(self._held.items()):
            if due <= now:
                del self._held[tp]
                if tp in self.consumer.assignment() and not self._full:
                    self.consumer.resume(tp)
        HELD.set(len(self._held))

    def _hold(self, tp: TopicPartition, offset: int, due: float) -> None:
        assert self.consumer is not None
        self.consumer.pause(tp)
        self.consumer.seek(tp, offset)  # refetched from here once resumed
        self._held[tp] = due

    async def _take(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        lifecycle: list[tuple[TopicPartition, ConsumerRecord, RequestLifecycleEvent]] = []
        for tp, records in batch.items():
            if tp.topic == RESULTS:
                for record in records:
                    self.offsets.begin(tp, record.offset)
                    try:
                        lifecycle.append((tp, record, decode(RequestLifecycleEvent, record.value)))
                    except Exception:  # the result writer dead-letters poison `results` messages
                        self.offsets.done(tp, record.offset)
                continue
            for record in records:
                try:
                    retry = decode(WebhookRetry, record.value)
                except Exception:
                    log.warning("unreadable retry message %s[%d]@%d skipped", tp.topic, tp.partition, record.offset)
                    self.offsets.begin(tp, record.offset)
                    self.offsets.done(tp, record.offset)
                    continue
                due = retry.due_at.timestamp()
                if due > time.time():
                    self._hold(tp, record.offset, due)
                    break  # the rest of this partition waits behind it
                self.offsets.begin(tp, record.offset)
                work = _RecordWork(tp, record.offset, 1)
                self._spawn(work, self._retry_attempt(record, retry), retry.delivery_id)
        if lifecycle:
            await self._start_first_attempts(lifecycle)

    async def _start_first_attempts(
        self, lifecycle: list[tuple[TopicPartition, ConsumerRecord, RequestLifecycleEvent]]
    ) -> None:
        planned = await self._durably(lambda: self.store.plan([ev for _, _, ev in lifecycle]))
        flat = [d for deliveries in planned for d in deliveries]
        waiting = await self._durably(lambda: self.store.create(flat)) if flat else set()
        waiting -= self._delivering  # already being attempted here: that attempt covers this event too
        contexts = await self._durably(lambda: self.store.contexts(list(waiting))) if waiting else {}
        for (tp, record, _), deliveries in zip(lifecycle, planned, strict=True):
            todo = [contexts[d.id] for d in deliveries if d.id in contexts]
            for ctx in todo:  # a duplicate event in the same batch adds nothing
                del contexts[ctx.delivery.id]
            if not todo:
                self.offsets.done(tp, record.offset)
                continue
            work = _RecordWork(tp, record.offset, len(todo))
            for ctx in todo:
                self._spawn(work, self._first_attempt(record, ctx), ctx.delivery.id)

    def _spawn(self, work: _RecordWork, job: Awaitable[None], delivery_id: str) -> None:
        self._delivering.add(delivery_id)

        async def run() -> None:
            try:
                await job
            except _Abandoned:
                return
            except Exception:
                log.exception("delivery %s failed unexpectedly; its offset stays uncommitted", delivery_id)
                return
            finally:
                self._delivering.discard(delivery_id)
            work.remaining -= 1
            if work.remaining == 0:
                self.offsets.done(work.tp, work.offset)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        IN_FLIGHT.set(len(self._tasks))

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            IN_FLIGHT.set(len(self._tasks))

        task.add_done_callback(finished)

    # ---- attempts -------------------------------------------------------------------------------
    async def _first_attempt(self, record: ConsumerRecord, ctx: DeliveryContext) -> None:
        if ctx.delivery.status != PENDING or ctx.delivery.attempts != 0:
            return  # already attempted by an earlier run (its next step was recorded first)
        await self._attempt(ctx, 1, record, replay=False)

    async def _retry_attempt(self, record: ConsumerRecord, retry: WebhookRetry) -> None:
        ctx = await self._durably(lambda: self.store.context(retry.delivery_id))
        if ctx is None or ctx.delivery.attempts >= retry.attempt:
            return  # endpoint deleted, or this attempt was already made (a duplicate retry message)
        if not retry.replay and ctx.delivery.status not in (PENDING, RETRYING):
            return
        await self._attempt(ctx, retry.attempt, record, replay=retry.replay)

    async def _attempt(self, ctx: DeliveryContext, attempt: int, source: ConsumerRecord, *, replay: bool) -> None:
        assert self.sender is not None
        d, ep = ctx.delivery, ctx.endpoint
        if d.endpoint_id is not None and (ep is None or not ep.enabled):
            reason = (ep.disabled_reason if ep is not None else None) or "the endpoint is disabled"
            outcome = AttemptOutcome(None, 0.0, error_code="endpoint_disabled", error_message=reason)
            await self._finish_failed(ctx, AttemptRecord(attempt, outcome, FAILED, replay=replay, attempted=False),
                                      source, "endpoint_disabled", reason)
            return
        outcome = await self.sender.send(d.url, d.id, d.payload.encode(), ctx.secrets)
        kind = verdict(outcome.status_code, outcome.error_code)
        ATTEMPTS.labels(kind.value).inc()
        if kind is Verdict.DELIVERED:
            await self._durably(lambda: self.store.record(ctx, AttemptRecord(attempt, outcome, SUCCEEDED, replay=replay)))
            return
        disable = self._disable_reason(ctx, kind, outcome)
        nxt = None if (disable or replay or kind is not Verdict.RETRY) else self.retry.after(attempt, outcome.retry_after_s)
        if nxt is None:
            code = ("endpoint_gone" if kind is Verdict.GONE else "endpoint_failing" if disable
                    else "destination_refused" if kind is Verdict.REFUSED else "replay_failed" if replay
                    else "retries_exhausted")
            await self._finish_failed(
                ctx, AttemptRecord(attempt, outcome, FAILED, replay=replay, disable_reason=disable), source,
                code, disable or outcome.error or f"the endpoint answered HTTP {outcome.status_code}")
            return
        due = datetime.now(UTC) + timedelta(seconds=nxt.delay_s)
        message = WebhookRetry(delivery_id=d.id, request_id=d.request_id, tenant_id=d.tenant_id,
                               attempt=attempt + 1, due_at=due)
        await self._produce(webhook_retry_topic(nxt.stage), encode(message), d.request_id)
        await self._durably(lambda: self.store.record(
            ctx, AttemptRecord(attempt, outcome, RETRYING, next_attempt_at=due, replay=replay)))

    def _disable_reason(self, ctx: DeliveryContext, kind: Verdict, outcome: AttemptOutcome) -> str | None:
        ep = ctx.endpoint
        if ep is None:
            return None
        now = datetime.now(UTC)
        if kind is Verdict.GONE:
            return f"disabled at {now.isoformat()}: the endpoint answered 410 Gone"
        since = _aware(ep.failing_since) if ep.failing_since is not None else now
        if now - since >= timedelta(seconds=self.settings.webhook_disable_after_failing_s):
            last = f"HTTP {outcome.status_code}" if outcome.status_code is not None else outcome.error
            return (f"disabled at {now.isoformat()}: every delivery failed since {since.isoformat()} "
                    f"(last: {last})")
        return None

    async def _finish_failed(self, ctx: DeliveryContext, rec: AttemptRecord, source: ConsumerRecord,
                             code: str, message: str) -> None:
        """A delivery that ends failed goes to `webhooks.dlq` (produced first), then its state is written."""
        d = ctx.delivery
        letter = WebhookDeadLetter(
            delivery_id=d.id, tenant_id=d.tenant_id, endpoint_id=d.endpoint_id, request_id=d.request_id,
            event_type=d.event_type, url=d.url, attempts=rec.attempt, last_status_code=rec.outcome.status_code,
            error_code=code, error_message=message[:2000], payload=d.payload, source_topic=source.topic, source_partition=source.partition,
            source_offset=source.offset, at=datetime.now(UTC),
        )
        await self._produce(WEBHOOKS_DLQ, encode(letter), d.request_id)
        await self._durably(lambda: self.store.record(ctx, rec))

    # ---- durable effects ------------------------------------------------------------------------
    async def _produce(self, topic: str, value: bytes, key: str) -> None:
        assert self.producer is not None
        producer = self.producer
        await self._durably(lambda: producer.send_and_wait(topic, value, key=key.encode()))

    async def _durably(self, effect: Callable[[], Awaitable[T]]) -> T:
        """Retry an effect until it succeeds; when stopping, give up and leave the offset uncommitted."""
        delay = 0.2
        while True:
            try:
                return await effect()
            except Exception:
                if self._stop.is_set():
                    raise _Abandoned() from None
                log.exception("webhook effect failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _commit(self, force: bool = False, only: set[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        if not force and now - self._last_commit < 0.2:
            return
        self._last_commit = now
        await self.offsets.commit(self.consumer, only)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit(force=True, only=revoked)
        self.offsets.forget(revoked)
        for tp in revoked:
            self._held.pop(tp, None)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: WebhookDispatcher) -> None:
        self.dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.dispatcher.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
