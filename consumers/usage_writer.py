"""Writing usage rows into ClickHouse so that each fact is counted once, whatever was retried.

Two guards, each for its own failure:

* a batch is inserted with ``insert_deduplication_token`` = its offset ranges (``BatchToken``): the same
  batch inserted again (the sink died after ClickHouse took it, before the offset commit) is dropped by
  ClickHouse, and with ``deduplicate_blocks_in_dependent_materialized_views = 1`` the daily rollup's view
  checks its own dedup log, so a block that reached the table but not the view is completed, not doubled;
* facts already in the table under another token (an event id the Faust app emitted twice after a crash)
  are left out of the batch before the insert.

The client is synchronous (chDB runs in-process): call these from one worker thread.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, timedelta
from typing import Any

from clickhouse_connect.driver.binding import format_str

from consumers.usage_rows import EVENT_ID, EVENT_TIME, ROW_COLUMNS, TENANT_ID, TOKEN, USAGE_EVENTS_TABLE
from lotabots.usage_metrics import (
    CLICKHOUSE_BATCH_ROWS,
    CLICKHOUSE_INSERT_SECONDS,
    USAGE_DUPLICATES_SKIPPED,
    USAGE_ROWS_INSERTED,
)

# Session settings of the writer: the view dedup switch, and room for a batch's event-id list.
WRITER_SESSION = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "insert_deduplicate": 1,
    "max_query_size": 64 * 1024 * 1024,
}
LEFTOVER_LOOKBACK = timedelta(days=7)


@dataclass(frozen=True)
class InsertOutcome:
    rows: int  # rows handed to ClickHouse (ClickHouse may still drop the block as a repeat)
    duplicates: int  # facts left out because ClickHouse already had them under another batch


_PLAIN = re.compile(r"[A-Za-z0-9_:.\-]+")


def event_id_filter(ids: Iterable[str]) -> str:
    """``event_id IN ...`` for a batch's ids, cheap for ClickHouse to parse.

    A list of 5,000 string literals costs ClickHouse ~4 µs per literal to parse (measured with chDB here);
    one string it splits itself costs a fraction of that. Event ids are plain (letters, digits, ``_:.-``,
    never a comma) and travel in that one string; anything else gets the client's escaping.
    """
    plain: list[str] = []
    other: list[str] = []
    for event_id in ids:
        (plain if _PLAIN.fullmatch(event_id) else other).append(event_id)
    terms = []
    if plain:
        terms.append(f"event_id IN (SELECT arrayJoin(splitByChar(',', '{','.join(plain)}')))")
    if other:
        terms.append(f"event_id IN ({','.join(format_str(v) for v in other)})")
    return "(" + " OR ".join(terms or ["0"]) + ")"


class UsageWriter:
    """Inserts batches of usage rows (``consumers.usage_rows.ROW_COLUMNS``)."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def insert_batch(self, rows: list[list[Any]], token: str) -> InsertOutcome:
        unique: dict[str, list[Any]] = {}
        for row in rows:
            unique.setdefault(row[EVENT_ID], row)  # the same fact twice in one batch: keep the first
        existing = self.existing_ids(list(unique.values()), token)
        keep = [row for event_id, row in unique.items() if event_id not in existing]
        for row in keep:
            row[TOKEN] = token
        if keep:
            started = time.perf_counter()
            self.client.insert(USAGE_EVENTS_TABLE, keep, column_names=list(ROW_COLUMNS),
                               settings={"insert_deduplication_token": token})
            CLICKHOUSE_INSERT_SECONDS.observe(time.perf_counter() - started)
            CLICKHOUSE_BATCH_ROWS.observe(len(keep))
            USAGE_ROWS_INSERTED.labels("usage_events").inc(len(keep))
        skipped = len(rows) - len(keep)
        if skipped:
            USAGE_DUPLICATES_SKIPPED.inc(skipped)
        return InsertOutcome(len(keep), skipped)

    def existing_ids(self, rows: list[list[Any]], token: str) -> set[str]:
        """Event ids of ``rows`` already stored by another batch.

        A repeated fact carries the original's tenant and time, so the lookup is bounded by the sort
        key's prefix (tenant, time range) and only reads the granules the batch could collide with.
        """
        if not rows:
            return set()
        # Bound parameters reach ClickHouse as wall-clock text to whole seconds (clickhouse-connect drops
        # the fraction and the offset), so the range is widened to whole UTC seconds: [lo, hi + 1 s).
        times = [row[EVENT_TIME].astimezone(UTC).replace(tzinfo=None, microsecond=0) for row in rows]
        result = self.client.query(
            f"SELECT event_id FROM {USAGE_EVENTS_TABLE} "
            "WHERE tenant_id IN %(tenants)s AND event_time >= %(lo)s AND event_time < %(hi)s "
            f"AND {event_id_filter(row[EVENT_ID] for row in rows)} AND insert_token != %(token)s",
            parameters={"tenants": sorted({row[TENANT_ID] for row in rows}), "lo": min(times),
                        "hi": max(times) + timedelta(seconds=1), "token": token},
        )
        return {r[0] for r in result.result_rows}

    def leftover_tokens(self, committed: dict[int, int], topic: str = "usage.billable") -> list[str]:
        """Tokens of batches stored at or past the committed offsets (taken by ClickHouse, not committed)."""
        if not committed:
            return []
        where = " OR ".join(f"(source_partition = {int(p)} AND source_offset >= {int(o)})"
                            for p, o in sorted(committed.items()))
        result = self.client.query(
            f"SELECT insert_token, min(source_offset) AS first FROM {USAGE_EVENTS_TABLE} "
            f"WHERE inserted_at >= now64(3) - INTERVAL {LEFTOVER_LOOKBACK.days} DAY AND ({where}) "
            "AND startsWith(insert_token, %(prefix)s) GROUP BY insert_token ORDER BY first",
            parameters={"prefix": f"{topic}|"},
        )
        return [r[0] for r in result.result_rows]
