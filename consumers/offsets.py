"""Which offsets may be committed: the lowest offset still in flight per partition (commit-after-effect)."""

from __future__ import annotations

import logging
from typing import Any

from aiokafka import TopicPartition

log = logging.getLogger(__name__)

class OffsetTracker:
    """Messages of one partition finish out of order; only a contiguous done prefix is committable."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, set[int]] = {}
        self._next: dict[TopicPartition, int] = {}  # one past the highest offset seen
        self._committed: dict[TopicPartition, int] = {}

    def begin(self, tp: TopicPartition, offset: int) -> None:
        self._pending.setdefault(tp, set()).add(offset)
        self._next[tp] = max(self._next.get(tp, 0), offset + 1)

    def done(self, tp: TopicPartition, offset: int) -> None:
        self._pending.get(tp, set()).discard(offset)

    def committable(self) -> dict[TopicPartition, int]:
        """Offsets to commit now (only those that moved since the last call to `mark_committed`)."""
        out = {}
        for tp, nxt in self._next.items():
            pending = self._pending.get(tp)
            position = min(pending) if pending else nxt
            if self._committed.get(tp) != position:
                out[tp] = position
        return out

    def mark_committed(self, offsets: dict[TopicPartition, int]) -> None:
        self._committed.update(offsets)

    def forget(self, tps: set[TopicPartition]) -> None:
        for tp in tps:
            self._pending.pop(tp, None)
            self._next.pop(tp, None)
            self._committed.pop(tp, None)

    def in_flight(self, tp: TopicPartition) -> int:
        return len(self._pending.get(tp, ()))

    async def commit(self, consumer: Any, only: set[TopicPartition] | None = None) -> None:
        """Commit what is committable on the partitions `consumer` holds (of `only`, if given); a failed
        commit is logged and retried with the next one (the offsets stay committable)."""
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in self.committable().items() if tp in assigned and (only is None or tp in only)}
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
            self.mark_committed(offsets)
        except Exception:
            log.warning("offset commit failed; it is retried", exc_info=True)
