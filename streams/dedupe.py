"""Deduplication screen: an event id already seen at another place in ``usage.events`` is dropped.

Every id is remembered with where it was first seen (partition, offset). A message is a duplicate when
its id was first seen at a *different* offset. The same message read again (the worker died after
recording the id but before its output and offset commit were durable) is not a duplicate: it is
emitted again, and the usage service drops the repeat by event id. Without that rule a crash in that
window would lose the fact.

The ids are kept in a Faust table (changelogged, so a restarted worker remembers them) as *segments*:
one record per source partition per processed batch, ``{"t": first_seen_epoch_s, "ids": [[id, offset],
...]}`` under the key ``"<partition>/<first offset>"``. One changelog record per batch instead of one
per event is what keeps the stream fast; lookups use an in-memory index rebuilt from the table after
recovery. Segments older than the TTL are deleted (tombstoned) by a periodic sweep; the TTL is longer
than ``usage.events`` retention, so no replay can bring back an id that was already forgotten. The
table is written with an explicit partition (the source's): Faust's implicit "current event" would
name only one message's partition in a batch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol

SEGMENT_MAX_IDS = 2000  # keeps one changelog record well under the broker's 1 MB message limit


class ChangeloggedTable(Protocol):
    """The part of a Faust table this screen uses (``faust.Table`` satisfies it)."""

    @property
    def data(self) -> MutableMapping[Any, Any]: ...

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any: ...


class SeenEvents:
    """Event ids already passed downstream, with where they were first seen, expiring after ``ttl_s``."""

    def __init__(self, table: ChangeloggedTable, ttl_s: float) -> None:
        self.table = table
        self.ttl_s = ttl_s
        self._where: dict[str, tuple[int, int]] = {}  # event id -> (partition, offset) first seen
        self._pending: dict[int, list[list[Any]]] = {}  # partition -> [[id, offset], ...] not yet written
        # (first_seen, partition, key) in write order: processing time only grows, so the oldest segment
        # is always on the left and the sweep never scans the whole table.
        self._segments: deque[tuple[float, int, str]] = deque()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._where

    def is_duplicate(self, event_id: str, partition: int, offset: int) -> bool:
        """Seen before at another offset (the same message re-read after a crash is not a duplicate)."""
        first = self._where.get(event_id)
        return first is not None and first != (partition, offset)

    def remember(self, partition: int, offset: int, event_id: str) -> None:
        """Record where an id was first seen (written to the table by the next :meth:`flush`)."""
        if event_id not in self._where:
            self._where[event_id] = (partition, offset)
            self._pending.setdefault(partition, []).append([event_id, offset])

    def flush(self, now: float) -> int:
        """Write the ids remembered since the last flush: one segment record per partition (per 2000 ids)."""
        written = 0
        for partition, ids in self._pending.items():
            for i in range(0, len(ids), SEGMENT_MAX_IDS):
                chunk = ids[i:i + SEGMENT_MAX_IDS]
                key = f"{partition}/{chunk[0][1]}"
                value = {"t": int(now), "ids": chunk}
                self.table.data[key] = value
                self.table.send_changelog(partition, key, value)
                self._segments.append((now, partition, key))
                written += 1
        self._pending.clear()
        return written

    def reindex(self) -> None:
        """Rebuild the index and the expiry order from the table (after recovery from the changelog)."""
        self._where.clear()
        order = []
        for key, value in list(self.table.data.items()):
            partition = int(str(key).split("/", 1)[0])
            for event_id, offset in value["ids"]:
                self._where.setdefault(event_id, (partition, int(offset)))
            order.append((float(value["t"]), partition, key))
        self._segments = deque(sorted(order))

    def expire(self, now: float, owns: Callable[[int], bool]) -> int:
        """Forget segments written more than ``ttl_s`` ago; tombstones only go to partitions this worker owns."""
        horizon = now - self.ttl_s
        expired = 0
        while self._segments and self._segments[0][0] < horizon:
            _, partition, key = self._segments.popleft()
            value = self.table.data.get(key)
            if value is None or not owns(partition):
                continue
            for event_id, offset in value["ids"]:
                if self._where.get(event_id) == (partition, int(offset)):
                    del self._where[event_id]
            self.table.data.pop(key, None)
            self.table.send_changelog(partition, key, None, value_serializer="raw")
            expired += len(value["ids"])
        return expired
