"""Reading a consumer group's lag on a topic from the broker, as KEDA's Kafka scaler does.

Committed offsets come from the group coordinator (OffsetFetch through the admin client), end and
beginning offsets from a group-less consumer (ListOffsets). Nothing here joins the group, so reading
lag never triggers a rebalance of the workers it measures.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from consumers.scaling import PartitionLag, total_lag


class LagUnavailable(RuntimeError):
    """The broker could not say what the lag is (topic missing, broker down); the scaler holds still."""


@dataclass(frozen=True)
class GroupLag:
    """One group on one topic at one instant."""

    group: str
    topic: str
    partitions: list[PartitionLag]

    @property
    def total(self) -> int:
        return total_lag(self.partitions)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


class LagReader:
    """Reads group lag for any number of (group, topic) pairs over two long-lived connections."""

    def __init__(self, bootstrap: str, *, client_id: str = "lotabots-autoscaler") -> None:
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id=client_id,
                                          request_timeout_ms=10_000)
        self._offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, client_id=client_id, group_id=None,
                                         enable_auto_commit=False, request_timeout_ms=10_000)

    async def start(self) -> None:
        await self._admin.start()
        await self._offsets.start()

    async def close(self) -> None:
        """Idempotent; safe after a failed start."""
        with contextlib.suppress(Exception):
            await self._offsets.stop()
        with contextlib.suppress(Exception):
            await self._admin.close()

    async def read(self, group: str, topic: str) -> GroupLag:
        try:
            meta = await self._admin.describe_topics([topic])
        except Exception as exc:
            raise LagUnavailable(f"describe {topic}: {exc!r}") from exc
        if not meta or meta[0].get("error_code") or not meta[0].get("partitions"):
            code = meta[0].get("error_code") if meta else None
            raise LagUnavailable(f"topic {topic} not found on {self.bootstrap} (error {code})")
        tps = sorted((TopicPartition(topic, p["partition"]) for p in meta[0]["partitions"]),
                     key=lambda tp: tp.partition)
        try:
            committed = await self._admin.list_consumer_group_offsets(group, partitions=tps)
            ends = await self._offsets.end_offsets(tps)
            beginnings = await self._offsets.beginning_offsets(tps)
        except Exception as exc:
            raise LagUnavailable(f"offsets of {group} on {topic}: {exc!r}") from exc
        parts = []
        for tp in tps:
            meta_offset = committed.get(tp)
            offset = meta_offset.offset if meta_offset is not None else -1
            parts.append(PartitionLag(tp.partition, offset, ends[tp], beginnings[tp]))
        return GroupLag(group, topic, parts)
