"""The result writer: applies `results` lifecycle events to the requests table, idempotently and monotonically.

State only moves forward (queued < running < awaiting_approval < terminal), so replays, duplicates
and late `started` events never undo a terminal state. Offsets are committed after the DB commit.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka import TopicPartition
from prometheus_client import Counter
from sqlalchemy import and_, func, or_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.dead_letter import DeadLetterStep
from lotabots.kafka_io import decode, make_consumer, make_producer
from lotabots.settings import Settings
from schemas.events import LifecycleType, RequestLifecycleEvent, RequestStatus
from schemas.relational import requests_table as R
from schemas.topics import RESULTS, RESULTS_DLQ

log = logging.getLogger(__name__)

EVENTS_APPLIED = Counter("lotabots_results_applied_total", "lifecycle events applied", ["type", "outcome"])


def state_update(event: RequestLifecycleEvent) -> Any:
    """The UPDATE that applies one event, guarded so state never moves backwards."""
    status = event.type.status
    now = datetime.now(UTC)
    values: dict[str, Any] = {"status": status.value, "status_rank": status.rank, "updated_at": now}
    if event.worker:
        values["worker"] = event.worker
    if event.type is LifecycleType.STARTED:
        values["started_at"] = event.started_at or event.at
    else:
        values.update(
            output=event.output, finish_reason=event.finish_reason, error_code=event.error_code,
            error_message=event.error_message, prompt_tokens=event.prompt_tokens,
            completion_tokens=event.completion_tokens, first_token_at=event.first_token_at,
        )
        values["started_at"] = func.coalesce(R.c.started_at, event.started_at)
        if status.terminal:
            values["finished_at"] = event.finished_at or event.at
    forward = R.c.status_rank < status.rank
    if event.type is LifecycleType.CANCELED:
        # the gateway ends a queued request `canceled` at once; the worker's later event adds its counts
        if event.started_at is not None:
            forward = or_(forward, and_(R.c.status == RequestStatus.CANCELED.value, R.c.started_at.is_(None)))
    return update(R).where(and_(R.c.id == event.request_id, forward)).values(**values)


async def apply_events(engine: AsyncEngine, events: list[RequestLifecycleEvent]) -> int:
    applied = 0
    async with engine.begin() as conn:
        for event in events:
            res = await conn.execute(state_update(event))
            applied += res.rowcount
            EVENTS_APPLIED.labels(event.type.value, "applied" if res.rowcount else "stale").inc()
    return applied


class ResultWriter:
    """Consumer group `results-writer`: batch → one DB transaction → commit offsets."""

    def __init__(self, settings: Settings, engine: AsyncEngine) -> None:
        self.settings = settings
        self.engine = engine
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        producer = make_producer(self.settings, client_id="results-writer")
        await producer.start()
        dlq = DeadLetterStep(producer, RESULTS_DLQ, "results-writer")
        consumer = make_consumer(self.settings, RESULTS, group_id="results-writer", client_id="results-writer",
                                 max_poll_records=500)
        await consumer.start()
        try:
            while not self._stop.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                if not batch:
                    continue
                events: list[RequestLifecycleEvent] = []
                offsets: dict[TopicPartition, int] = {}
                for tp, records in batch.items():
                    for record in records:
                        try:
                            events.append(decode(RequestLifecycleEvent, record.value))
                        except Exception as exc:
                            await dlq.send(record, "invalid_lifecycle_event", str(exc))
                        offsets[tp] = record.offset + 1
                await self._apply_with_retry(events)
                await consumer.commit(offsets)
        finally:
            await consumer.stop()
            await producer.stop()

    async def _apply_with_retry(self, events: list[RequestLifecycleEvent]) -> None:
        delay = 0.2
        while True:
            try:
                await apply_events(self.engine, events)
                return
            except Exception:
                log.exception("applying %d events failed; retrying", len(events))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
