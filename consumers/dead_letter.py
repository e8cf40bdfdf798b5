"""The dead-letter step: a poison message goes to its DLQ with the error and source coordinates."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from lotabots.kafka_io import encode
from schemas.events import DeadLetter

log = logging.getLogger(__name__)


class DeadLetterStep:
    def __init__(self, producer: AIOKafkaProducer, topic: str, consumer_name: str) -> None:
        self.producer = producer
        self.topic = topic
        self.consumer_name = consumer_name
        self.count = 0

    async def send(self, record: ConsumerRecord, error_code: str, error_message: str,
                   payload: str | None = None) -> None:
        """`payload` replaces the record's value in the letter (e.g. with its secrets redacted)."""
        raw = record.value or b""
        text = payload if payload is not None else raw.decode(errors="replace")
        letter = DeadLetter(
            source_topic=record.topic, source_partition=record.partition, source_offset=record.offset,
            key=record.key.decode(errors="replace") if record.key else None,
            payload=text[:1_000_000], error_code=error_code,
            error_message=error_message[:2000], consumer=self.consumer_name, at=datetime.now(UTC),
        )
        await self.producer.send_and_wait(self.topic, encode(letter))
        self.count += 1
        log.warning("dead-lettered %s[%d]@%d: %s", record.topic, record.partition, record.offset, error_code)
