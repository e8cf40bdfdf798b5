"""Kafka client construction and (de)serialisation of wire models, shared by every process."""

from __future__ import annotations

from typing import TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from lotabots.settings import Settings

M = TypeVar("M", bound=BaseModel)


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decode(model: type[M], raw: bytes | None) -> M:
    if raw is None:
        raise ValueError("empty message value")
    return model.model_validate_json(raw)


def make_producer(settings: Settings, *, client_id: str, linger_ms: int = 0) -> AIOKafkaProducer:
    # acks=all + idempotence: a produce that returned is durable on the broker and never duplicated by retries.
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=True,
        linger_ms=linger_ms,
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
