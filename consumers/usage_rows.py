"""The ClickHouse row of a billable fact, and the insert token that names a batch.

Kept apart from the sink so the bench's raw baseline and the tests build rows the same way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from lotabots.clickhouse import USAGE_DATABASE

USAGE_EVENTS_TABLE = f"{USAGE_DATABASE}.usage_events"

# The columns the sink writes (inserted_at takes its default), in insert order.
ROW_COLUMNS: tuple[str, ...] = (
    "tenant_id", "event_time", "event_id", "event_type", "kind", "tier", "request_id", "api_key_id", "model",
    "autonomy_level", "status", "finish_reason", "reason", "requests", "rejections", "prompt_tokens",
    "completion_tokens", "latency_ms", "price_per_request", "price_per_1k_input", "price_per_1k_output",
    "request_cost", "input_cost", "output_cost", "cost", "source_partition", "source_offset", "insert_token",
)
_STR = ("tenant_id", "event_id", "event_type", "kind", "tier")
_OPT_STR = ("request_id", "api_key_id", "model", "autonomy_level", "status", "finish_reason", "reason")
_INT = ("requests", "rejections", "prompt_tokens", "completion_tokens", "latency_ms")
_DEC = ("price_per_request", "price_per_1k_input", "price_per_1k_output", "request_cost", "input_cost",
        "output_cost", "cost")
EVENT_ID = ROW_COLUMNS.index("event_id")
TENANT_ID = ROW_COLUMNS.index("tenant_id")
EVENT_TIME = ROW_COLUMNS.index("event_time")
TOKEN = ROW_COLUMNS.index("insert_token")
SOURCE_PARTITION = ROW_COLUMNS.index("source_partition")


class BadBillable(ValueError):
    """A usage.billable message that cannot become a row (poison)."""


def billable_rows(raw: bytes | None, partition: int, offset: int) -> list[list[Any]]:
    """One ``usage.billable`` message (a BillableBatch) as rows; the insert token is filled in per batch.

    Decoded with orjson and checked field by field rather than through pydantic: this is the sink's hot
    path, and the producer (the Faust app) already validated every fact against the same model.
    """
    try:
        value = orjson.loads(raw or b"")
        tenant_id, facts = value["tenant_id"], value["facts"]
    except Exception as exc:
        raise BadBillable(f"not a billable batch: {type(exc).__name__}: {exc}") from exc
    if not isinstance(facts, list) or not facts:
        raise BadBillable("a billable batch needs a non-empty list of facts")
    rows = [billable_row(fact, partition, offset) for fact in facts]
    if any(row[TENANT_ID] != tenant_id for row in rows):
        raise BadBillable("every fact of a billable batch belongs to the batch's tenant")
    return rows


def billable_row(value: Any, partition: int, offset: int) -> list[Any]:
    """One billable fact (a BillableUsage as decoded JSON) as a row."""
    try:
        row: dict[str, Any] = {k: _text(value[k]) for k in _STR}
        row.update({k: _text(value.get(k) or "") for k in _OPT_STR})
        row.update({k: _count(value.get(k, 0)) for k in _INT})
        row.update({k: Decimal(str(value[k])) for k in _DEC})
        row["event_time"] = datetime.fromisoformat(value["event_time"])
    except BadBillable:
        raise
    except Exception as exc:
        raise BadBillable(f"{type(exc).__name__}: {exc}") from exc
    if row["event_time"].tzinfo is None or not row["tenant_id"] or not row["event_id"]:
        raise BadBillable("event_time must carry a UTC offset; tenant_id and event_id must be set")
    row.update(source_partition=partition, source_offset=offset, insert_token="")
    return [row[c] for c in ROW_COLUMNS]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise BadBillable(f"expected a string, got {type(value).__name__}")
    return value


def _count(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadBillable(f"expected a non-negative integer, got {value!r}")
    return value


@dataclass(frozen=True)
class BatchToken:
    """A batch's offset ranges per partition; its text is the ClickHouse ``insert_deduplication_token``.

    The same ranges always give the same token, so re-inserting a batch that ClickHouse already took
    (after a crash before the offset commit) is dropped by ClickHouse, in the table and, with
    ``deduplicate_blocks_in_dependent_materialized_views``, in the daily rollup.
    """

    topic: str
    ranges: tuple[tuple[int, int, int], ...]  # (partition, first offset, last offset), sorted

    def text(self) -> str:
        return f"{self.topic}|" + ",".join(f"{p}:{a}-{b}" for p, a, b in self.ranges)

    @classmethod
    def parse(cls, text: str) -> BatchToken:
        topic, _, body = text.rpartition("|")
        ranges = []
        for part in body.split(","):
            m = re.fullmatch(r"(\d+):(\d+)-(\d+)", part)
            if not m:
                raise ValueError(f"not a batch token: {text!r}")
            ranges.append((int(m.group(1)), int(m.group(2)), int(m.group(3))))
        return cls(topic, tuple(sorted(ranges)))
