"""Kafka client construction and (de)serialisation of wire models, shared by every process."""

from __future__ import annotations

import asyncio
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel

from lotabots.settings import Settings

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decode(model: type[M], raw: bytes | None) -> M:
    if raw is None:
        raise ValueError("empty message value")
    return model.model_validate_json(raw)


def make_producer(settings: Settings, *, client_id: str, linger_ms: int = 0,
                  max_batch_size: int = 16384) -> AIOKafkaProducer:
    # acks=all + idempotence: a produce that returned is durable on the broker and never duplicated by retries.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
        max_batch_size=max_batch_size,
        request_timeout_ms=30_000,
    )


def make_consumer(settings: Settings, *topics: str, group_id: str | None, client_id: str, **kw) -> AIOKafkaConsumer:  # type: ignore[no-untyped-def]
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
        max_poll_interval_ms=settings.kafka_max_poll_interval_ms,
        **kw,
    )


class StickyPartitions:
    """Partition choice for messages whose order does not matter (Kafka's sticky-partitioner idea, KIP-480).

    Hashing a unique key spreads consecutive messages over every partition, so each record batch holds
    one message and both client and broker pay per-message overhead. Staying on one partition for a
    few milliseconds (or `batch` messages) fills real batches; moving on keeps the load even.
    """

    def __init__(self, producer: AIOKafkaProducer, *, batch: int = 64, linger_s: float = 0.005) -> None:
        self._producer = producer
        self._batch = batch
        self._linger_s = linger_s
        self._current: dict[str, tuple[int, int, float]] = {}  # topic -> (partition, sent, since)

    def partition(self, topic: str) -> int | None:
        import random
        import time

        now = time.monotonic()
        state = self._current.get(topic)
        if state is not None and state[1] < self._batch and now - state[2] < self._linger_s:
            self._current[topic] = (state[0], state[1] + 1, state[2])
            return state[0]
        partitions = self._producer.client.cluster.partitions_for_topic(topic)
        if not partitions:
            return None  # metadata not known yet: let the producer hash the key
        choices = sorted(partitions)
        if state is not None and len(choices) > 1:
            choices.remove(state[0]) if state[0] in choices else None
        chosen = random.choice(choices)
        self._current[topic] = (chosen, 1, now)
        return chosen


async def stop_tail(task: asyncio.Task[None] | None, consumer: AIOKafkaConsumer) -> None:
    """Stop a group-less tail: cancel its reading task, wait for it to end, then close the consumer."""
    if task:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
    await consumer.stop()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str,
                           timeout_s: float | None = None) -> list[TopicPartition]:
    """All partitions of `topic`, refreshing metadata until the topic is known (or `timeout_s` passes:
    then an empty list). For group-less consumers that assign themselves every partition."""
    import asyncio
    import time

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if deadline is not None and time.monotonic() >= deadline:
            return []
        await consumer._client.force_metadata_update()  # noqa: SLF001 - aiokafka has no public call for this
        if not consumer.partitions_for_topic(topic):
            await asyncio.sleep(0.2)
