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
    """One billable fact (a BillableUsage as decoded JSON) as a row, in ``ROW_COLUMNS`` order."""
    try:
        get = value.get
        row = [
            _text(value["tenant_id"]), _time(value["event_time"]), _text(value["event_id"]),
            _text(value["event_type"]), _text(value["kind"]), _text(value["tier"]),
            _text(get("request_id") or ""), _text(get("api_key_id") or ""), _text(get("model") or ""),
            _text(get("autonomy_level") or ""), _text(get("status") or ""), _text(get("finish_reason") or ""),
            _text(get("reason") or ""),
            _count(get("requests", 0)), _count(get("rejections", 0)), _count(get("prompt_tokens", 0)),
            _count(get("completion_tokens", 0)), _count(get("latency_ms", 0)),
            _decimal(value["price_per_request"]), _decimal(value["price_per_1k_input"]),
            _decimal(value["price_per_1k_output"]), _decimal(value["request_cost"]), _decimal(value["input_cost"]),
            _decimal(value["output_cost"]), _decimal(value["cost"]),
            partition, offset, "",
        ]
    except BadBillable:
        raise
    except Exception as exc:
        raise BadBillable(f"{type(exc).__name__}: {exc}") from exc
    if not row[TENANT_ID] or not row[EVENT_ID]:
        raise BadBillable("tenant_id and event_id must be set")
    return row


def _time(value: Any) -> datetime:
    at = datetime.fromisoformat(_text(value))
    if at.tzinfo is None:
        raise BadBillable("event_time must carry a UTC offset")
    return at


_PLAIN_DECIMAL = re.compile(r"-?\d{1,26}(\.\d{1,12})?")


def _decimal(value: Any) -> str | Decimal:
    """A money amount from its exact decimal text. Plain texts (the usual case) are passed on as they are:
    the ClickHouse client parses them once, into the column's Decimal(38, 12); others (``1E-10``) are
    parsed here. Anything that is not a decimal text is poison."""
    if not isinstance(value, str):
        raise BadBillable(f"expected a decimal text, got {type(value).__name__}")
    if _PLAIN_DECIMAL.fullmatch(value):
        return value
    try:
        amount = Decimal(value)
    except ArithmeticError as exc:
        raise BadBillable(f"not a decimal: {value[:50]!r}") from exc
    if not amount.is_finite():
        raise BadBillable(f"not a finite amount: {value[:50]!r}")
    return amount


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
