"""Deduplication screen: an event id already seen at another place in ``usage.events`` is dropped.

The ids live in a Faust table (changelogged, so a restarted worker remembers them), each with where it
was first seen: ``[first_seen_epoch_s, partition, offset]``. A message is a duplicate when its id was
first seen at a *different* offset. The same message read again (the worker died after recording the id
but before its output and offset commit were durable) is not a duplicate: it is emitted again, and the
usage service drops the repeat by event id. Without that rule a crash in that window would lose the fact.

The table is written with an explicit partition (the source message's): the agent works on batches,
where Faust's implicit "current event" would name only one message's partition. Entries older than the
TTL are deleted (tombstoned) by a periodic sweep; the TTL is longer than ``usage.events`` retention, so
no replay can bring back an id that was already forgotten.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, MutableMapping
from typing import Any, Protocol


class ChangeloggedTable(Protocol):
    """The part of a Faust table this screen uses (``faust.Table`` satisfies it)."""

    @property
    def data(self) -> MutableMapping[Any, Any]: ...

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any: ...


class SeenEvents:
    """Event ids already passed downstream, with their first-seen time, expiring after ``ttl_s``."""

    def __init__(self, table: ChangeloggedTable, ttl_s: float) -> None:
        self.table = table
        self.ttl_s = ttl_s
        # (first_seen, partition, event_id) in arrival order: processing time only grows, so the
        # oldest entry is always on the left and the sweep never scans the whole table.
        self._order: deque[tuple[float, int, str]] = deque()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self.table.data

    def is_duplicate(self, event_id: str, partition: int, offset: int) -> bool:
        """Seen before at another offset (the same message re-read after a crash is not a duplicate)."""
        first = self.table.data.get(event_id)
        return first is not None and (int(first[1]), int(first[2]) if len(first) > 2 else -1) != (partition, offset)

    def remember(self, partition: int, offset: int, event_id: str, now: float) -> None:
        """Record where an id was first seen (a no-op for an id already recorded)."""
        if event_id in self.table.data:
            return
        value = [int(now), partition, offset]
        self.table.data[event_id] = value
        self.table.send_changelog(partition, event_id, value)
        self._order.append((now, partition, event_id))

    def reindex(self) -> None:
        """Rebuild the expiry order from the table (after recovery from the changelog)."""
        self._order = deque(sorted((float(v[0]), int(v[1]), k) for k, v in list(self.table.data.items())))

    def expire(self, now: float, owns: Callable[[int], bool]) -> int:
        """Forget ids first seen more than ``ttl_s`` ago; tombstones only go to partitions this worker owns."""
        horizon = now - self.ttl_s
        expired = 0
        while self._order and self._order[0][0] < horizon:
            _, partition, event_id = self._order.popleft()
            value = self.table.data.get(event_id)
            if value is None or float(value[0]) >= horizon:
                continue
            if owns(partition):
                self.table.data.pop(event_id, None)
                self.table.send_changelog(partition, event_id, None, value_serializer="raw")
                expired += 1
        return expired
