"""The ClickHouse sink: consumer group ``usage-sink`` on ``usage.billable``.

Steps, in order: decode (poison → ``usage.dlq``) → batch (size or time) → insert (token = the batch's
offset ranges; retried until ClickHouse accepts) → commit the offsets. The commit is the last step and
happens only after ClickHouse accepted the batch, so a crash anywhere re-delivers the batch and the
insert token makes the repeat a no-op. One batch is in ClickHouse's hands while the next is fetched and
decoded (never two: inserts and commits stay in offset order).

On partition assignment the sink first completes batches that ClickHouse took but whose offsets were
never committed: it finds their tokens in the table, re-reads exactly those offset ranges and inserts
them again under the same token (a no-op for the table, and it fills the daily rollup if the crash fell
between the table and the view), then commits past them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from consumers.dead_letter import DeadLetterStep
from consumers.usage_rows import SOURCE_PARTITION, BadBillable, BatchToken, billable_rows
from consumers.usage_writer import UsageWriter
from lotabots.kafka_io import make_consumer, make_producer
from lotabots.settings import Settings
from lotabots.usage_metrics import CLICKHOUSE_INSERT_ERRORS, CONSUMER_LAG, LEFTOVER_ERRORS, USAGE_DEAD_LETTERS
from schemas.topics import USAGE_BILLABLE, USAGE_DLQ

log = logging.getLogger(__name__)

GROUP = "usage-sink"
MESSAGES_PER_POLL = 50
REREAD_TIMEOUT_S = 30.0  # one try at re-reading a leftover batch (the listener tries again)


@dataclass
class PendingBatch:
    """Rows decoded since the last insert and the offset range they came from, per partition."""

    rows: list[list[Any]] = field(default_factory=list)
    ranges: dict[TopicPartition, tuple[int, int]] = field(default_factory=dict)
    started: float = 0.0

    def add(self, tp: TopicPartition, offset: int, rows: list[list[Any]]) -> None:
        if not self.ranges:
            self.started = time.monotonic()
        first, _ = self.ranges.get(tp, (offset, offset))
        self.ranges[tp] = (first, offset)
        self.rows.extend(rows)

    def token(self, topic: str) -> BatchToken:
        return BatchToken(topic, tuple(sorted((tp.partition, a, b) for tp, (a, b) in self.ranges.items())))

    def commit_offsets(self) -> dict[TopicPartition, int]:
        return {tp: last + 1 for tp, (_, last) in self.ranges.items()}

    def drop(self, tps: set[TopicPartition]) -> None:
        """Forget revoked partitions (their new owner re-reads from the committed offset)."""
        self.ranges = {tp: r for tp, r in self.ranges.items() if tp not in tps}
        partitions = {tp.partition for tp in tps}
        self.rows = [row for row in self.rows if row[SOURCE_PARTITION] not in partitions]


class UsageSink:
    """Moves ``usage.billable`` into ClickHouse, exactly once per fact."""

    def __init__(self, settings: Settings, writer: UsageWriter, executor: ThreadPoolExecutor, *,
                 topic: str = USAGE_BILLABLE, group: str = GROUP) -> None:
        self.settings = settings
        self.topic = topic
        self.group = group
        self.writer = writer
        self.executor = executor  # the one thread that talks to the writer's ClickHouse session
        self.batch_size = settings.usage_sink_batch_size
        self.batch_wait_s = settings.usage_sink_batch_wait_s
        self.pending = PendingBatch()
        self.lock = asyncio.Lock()  # a flush and a rebalance never interleave
        self.in_flight: asyncio.Task[None] | None = None  # the batch being inserted, then committed
        self.inserted = 0
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        self.producer = make_producer(self.settings, client_id=self.group)
        await self.producer.start()
        self.dlq = DeadLetterStep(self.producer, USAGE_DLQ, self.group)
        self.consumer = make_consumer(self.settings, group_id=self.group, client_id=self.group,
                                      max_poll_records=MESSAGES_PER_POLL, fetch_max_bytes=64 * 1024 * 1024,
                                      max_partition_fetch_bytes=8 * 1024 * 1024)
        self.consumer.subscribe([self.topic], listener=_CompleteOnAssign(self))
        await self.consumer.start()
        lag_task = asyncio.create_task(self._report_lag())
        try:
            while not self._stop.is_set():
                await self._poll_once()
            async with self.lock:
                await self._flush()  # SIGTERM: what is decoded goes in, and is committed
                await self.settle()
        finally:
            lag_task.cancel()
            await self.consumer.stop()
            await self.producer.stop()

    # ---- decode and batch ---------------------------------------------------------------------
    async def _poll_once(self) -> None:
        # a message is a batch of up to 500 facts: take a few messages at a time, flush on rows
        fetched = await self.consumer.getmany(timeout_ms=int(self.batch_wait_s * 1000 / 2),
                                              max_records=MESSAGES_PER_POLL)
        self.ready.set()
        async with self.lock:
            assigned = self.consumer.assignment()
            for tp, records in fetched.items():
                if tp not in assigned:
                    continue
                for record in records:
                    self.pending.add(tp, record.offset, await self._decode(record))
            due = self.pending.ranges and (
                len(self.pending.rows) >= self.batch_size
                or time.monotonic() - self.pending.started >= self.batch_wait_s
                or not fetched
            )
            if due:
                await self._flush()

    async def _decode(self, record: ConsumerRecord, *, dead_letter: bool = True) -> list[list[Any]]:
        try:
            return billable_rows(record.value, record.partition, record.offset)
        except BadBillable as exc:
            if dead_letter:
                await self.dlq.send(record, "invalid_billable_batch", str(exc))
                USAGE_DEAD_LETTERS.labels("sink", "invalid_billable_batch").inc()
            return []

    # ---- insert, then commit ------------------------------------------------------------------
    async def _flush(self) -> None:
        batch, self.pending = self.pending, PendingBatch()
        if not batch.ranges:
            return
        await self.settle()
        self.in_flight = asyncio.create_task(self._insert_and_commit(batch))

    async def settle(self) -> None:
        """Wait until the batch in ClickHouse's hands is inserted and its offsets committed."""
        if self.in_flight is not None:
            await self.in_flight
            self.in_flight = None

    async def _insert_and_commit(self, batch: PendingBatch) -> None:
        await self._insert(batch.rows, batch.token(self.topic).text())
        self.inserted += len(batch.rows)
        await self._commit(batch.commit_offsets())

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self.consumer.commit(offsets)
        except Exception:
            # e.g. a rebalance took the partitions: the next owner re-reads the batch, and the insert
            # token (or the leftover completion) makes that a no-op
            log.warning("committing usage-sink offsets failed; the batch will be re-read", exc_info=True)

    async def _insert(self, rows: list[list[Any]], token: str) -> None:
        # ClickHouse must take the batch before its offsets may be committed: retry until it does.
        delay = 0.2
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self.executor, self.writer.insert_batch, rows, token)
                return
            except Exception:
                CLICKHOUSE_INSERT_ERRORS.inc()
                log.exception("inserting %d usage rows (%s) failed; retrying", len(rows), token)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ---- rebalance ----------------------------------------------------------------------------
    async def complete_leftovers(self, assigned: set[TopicPartition]) -> None:
        """Re-insert batches ClickHouse took whose offsets were not committed, then commit past them."""
        if not assigned:
            return
        loop = asyncio.get_running_loop()
        committed: dict[int, int] = {}
        for tp in assigned:
            offset = await self.consumer.committed(tp)
            committed[tp.partition] = offset if offset is not None else 0
        tokens = await loop.run_in_executor(self.executor, self.writer.leftover_tokens, committed, self.topic)
        owned = {tp.partition for tp in assigned}
        for text in tokens:
            token = BatchToken.parse(text)
            if token.topic != self.topic or any(p not in owned for p, _, _ in token.ranges):
                # another member owns part of it: that member completes it (event-id checks still hold)
                log.warning("leftover batch %s spans partitions this member does not own; skipped", text)
                continue
            rows = await self._reread(token)
            await self._insert(rows, text)
            offsets = {TopicPartition(self.topic, p): b + 1 for p, _, b in token.ranges}
            await self._commit(offsets)
            for tp, offset in offsets.items():
                self.consumer.seek(tp, offset)
            log.info("completed leftover usage batch %s (%d rows)", text, len(rows))

    async def _reread(self, token: BatchToken) -> list[list[Any]]:
        reader = AIOKafkaConsumer(bootstrap_servers=self.settings.kafka_bootstrap, group_id=None,
                                  enable_auto_commit=False, client_id=f"{self.group}-reread")
        await reader.start()
        try:
            wanted = {TopicPartition(token.topic, p): (a, b) for p, a, b in token.ranges}
            reader.assign(list(wanted))
            for tp, (first, _) in wanted.items():
                reader.seek(tp, first)
            rows: list[list[Any]] = []
            remaining = set(wanted)
            deadline = time.monotonic() + REREAD_TIMEOUT_S
            while remaining:
                fetched = await reader.getmany(*remaining, timeout_ms=1000)
                for tp, records in fetched.items():
                    first, last = wanted[tp]
                    for record in records:
                        if first <= record.offset <= last:
                            rows += await self._decode(record, dead_letter=False)  # its letter went out already
                        if record.offset >= last:
                            remaining.discard(tp)
                for tp in list(remaining):  # nothing more to read (compaction, deleted records)
                    if reread_done(await reader.position(tp), reader.highwater(tp), *wanted[tp]):
                        remaining.discard(tp)
                if remaining and time.monotonic() > deadline:
                    raise TimeoutError(f"re-reading {token.text()}: {sorted(tp.partition for tp in remaining)} "
                                       f"not read in {REREAD_TIMEOUT_S:.0f} s")
            return rows
        finally:
            await reader.stop()

    async def _report_lag(self) -> None:
        while True:
            await asyncio.sleep(5)
            for tp in self.consumer.assignment():
                end = self.consumer.highwater(tp)
                try:
                    done = await self.consumer.committed(tp)
                except Exception:
                    continue
                if end is not None and done is not None:
                    CONSUMER_LAG.labels(self.group, tp.topic, str(tp.partition)).set(max(0, end - done))


def reread_done(position: int, highwater: int | None, first: int, last: int) -> bool:
    """Nothing more of ``[first, last]`` can come: the reader is past it, or the partition ends before it.

    ``highwater`` is None until a fetch response for the partition arrived (a broker that is restarting):
    then nothing is known yet and the reader goes on.
    """
    return position > last or (highwater is not None and highwater <= first)


class _CompleteOnAssign(ConsumerRebalanceListener):
    def __init__(self, sink: UsageSink) -> None:
        self.sink = sink

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        async with self.sink.lock:  # an insert in flight finishes and commits first
            await self.sink.settle()
            self.sink.pending.drop(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        # No consuming before the leftovers are complete: the same offsets re-read into a batch with another
        # token would leave out the facts the leftover batch stored (another token's), and the daily
        # rollup would miss them for good. A failure (a broker restarting) is retried until it succeeds.
        delay = 0.5
        async with self.sink.lock:
            await self.sink.settle()
            while True:
                try:
                    await self.sink.complete_leftovers(set(assigned))
                    return
                except Exception:
                    LEFTOVER_ERRORS.inc()
                    log.exception("completing leftover usage batches failed; retrying in %.1f s", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
