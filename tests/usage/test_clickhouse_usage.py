"""ClickHouse (real chDB, in this process): DDL, exactly-once inserts into table and rollup, finance SQL rules."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from consumers.usage_rows import EVENT_TIME, ROW_COLUMNS, USAGE_EVENTS_TABLE, BatchToken, billable_row
from consumers.usage_writer import WRITER_SESSION, UsageWriter
from lotabots.settings import Settings
from lotabots.tiers import load_tier_config
from schemas.usage import UsageEvent
from streams.pricing import price_usage_event

TIERS = load_tier_config(Path(__file__).resolve().parents[2] / "lotabots" / "tiers.toml")
DAY = datetime(2026, 4, 10, 9, 0, tzinfo=UTC)
_ids = itertools.count()


@pytest.fixture(scope="module")
def settings(chdb_url: str) -> Settings:
    return Settings(clickhouse_url=chdb_url, usage_sql_max_rows=50)


@pytest.fixture(scope="module")
def writer_client(settings: Settings) -> Iterator[Any]:
    from lotabots.clickhouse import open_clickhouse
    from schemas.clickhouse.migrate import migrate_clickhouse

    client = open_clickhouse(settings, session_settings=WRITER_SESSION)
    migrate_clickhouse(client, TIERS, server=False)
    again = migrate_clickhouse(client, TIERS, server=False)
    assert not again.applied and not again.prices_recorded and len(again.already) == 4  # idempotent
    yield client
    client.close()


def rows_for(tenant: str, n: int, *, tokens: int = 10, at: datetime = DAY, partition: int = 0,
             first_offset: int = 0, ids: list[str] | None = None) -> list[list[Any]]:
    out = []
    for i in range(n):
        rid = ids[i] if ids else f"req_{next(_ids)}"
        event = UsageEvent(id=f"{rid}:inference", source="/t", type="lotabots.inference.completed", time=at, data={
            "tenant_id": tenant, "tier": "pro", "request_id": rid, "model": "m", "prompt_tokens": tokens,
            "completion_tokens": 1, "latency_ms": 1, "finish_reason": "stop", "status": "succeeded"})
        billed = price_usage_event(event, TIERS.get("pro").prices)
        out.append(billable_row(orjson.loads(billed.model_dump_json()), partition, first_offset + i))
    return out


def totals(client: Any, tenant: str) -> tuple[int, int, int, int]:
    raw = client.query(f"SELECT count(), sum(prompt_tokens) FROM {USAGE_EVENTS_TABLE} WHERE tenant_id = %(t)s",
                       parameters={"t": tenant}).result_rows[0]
    daily = client.query("SELECT sum(events), sum(prompt_tokens) FROM lotabots_usage.usage_daily "
                         "WHERE tenant_id = %(t)s", parameters={"t": tenant}).result_rows[0]
    return int(raw[0]), int(raw[1]), int(daily[0] or 0), int(daily[1] or 0)


def test_a_retried_batch_is_counted_once_in_the_table_and_the_daily_rollup(writer_client: Any) -> None:
    writer = UsageWriter(writer_client)
    batch = rows_for("ten_retry", 5)
    token = BatchToken("usage.billable", ((0, 0, 4),)).text() + "-retry"
    writer.insert_batch([list(r) for r in batch], token)
    writer.insert_batch([list(r) for r in batch], token)  # the sink died before committing: same batch again
    assert totals(writer_client, "ten_retry") == (5, 50, 5, 50)


def test_without_the_view_dedup_setting_a_retried_block_counts_twice_in_the_rollup(
    settings: Settings, writer_client: Any,
) -> None:
    """The measurement behind WRITER_SESSION: the table drops the repeat, the view does not."""
    from lotabots.clickhouse import open_clickhouse

    plain = open_clickhouse(settings, session_settings={"deduplicate_blocks_in_dependent_materialized_views": 0})
    try:
        rows = rows_for("ten_nodedup", 4)
        for row in rows:
            row[-1] = "nodedup-token"
        for _ in range(2):
            plain.insert(USAGE_EVENTS_TABLE, rows, column_names=list(ROW_COLUMNS),
                         settings={"insert_deduplication_token": "nodedup-token"})
        raw_events, raw_tokens, daily_events, daily_tokens = totals(writer_client, "ten_nodedup")
    finally:
        plain.close()
    assert (raw_events, raw_tokens) == (4, 40), "the table deduplicates the retried block"
    assert (daily_events, daily_tokens) == (8, 80), "the rollup counted the retried block twice"


def test_a_block_that_reached_the_table_but_not_the_view_is_completed_by_the_retry(writer_client: Any) -> None:
    """The crash between the table's part and the view's part: the same token fills the rollup, once."""
    writer = UsageWriter(writer_client)
    batch = rows_for("ten_gap", 3)
    token = "usage.billable|7:100-102"
    writer_client.command("DETACH TABLE lotabots_usage.usage_daily_mv")
    try:
        writer.insert_batch([list(r) for r in batch], token)
    finally:
        writer_client.command("ATTACH TABLE lotabots_usage.usage_daily_mv")
    assert totals(writer_client, "ten_gap") == (3, 30, 0, 0)
    writer.insert_batch([list(r) for r in batch], token)
    writer.insert_batch([list(r) for r in batch], token)
    assert totals(writer_client, "ten_gap") == (3, 30, 3, 30)


def test_a_fact_repeated_in_a_later_batch_is_left_out(writer_client: Any) -> None:
    writer = UsageWriter(writer_client)
    ids = [f"req_dup_{i}" for i in range(4)]
    first = writer.insert_batch(rows_for("ten_dup", 4, ids=ids), "usage.billable|1:0-3")
    # the Faust app re-emitted two facts after a crash: they arrive at new offsets, in a new batch
    again = writer.insert_batch(rows_for("ten_dup", 2, ids=ids[:2], first_offset=10) + rows_for("ten_dup", 1),
                                "usage.billable|1:10-12")
    assert (first.rows, again.rows, again.duplicates) == (4, 1, 2)
    assert totals(writer_client, "ten_dup") == (5, 50, 5, 50)


def test_a_repeated_fact_late_in_its_second_or_in_another_offset_is_left_out(writer_client: Any) -> None:
    """The look-up for repeats is bounded by the batch's times: a bound written to whole seconds once
    missed every fact in the last second of the range (found by test_billing_exact: billed twice)."""
    writer = UsageWriter(writer_client)
    ids = [f"req_late_{i}" for i in range(3)]
    late = DAY.replace(microsecond=875_000)
    first = writer.insert_batch(rows_for("ten_late", 3, ids=ids, at=late), "usage.billable|3:0-2")
    again = writer.insert_batch(rows_for("ten_late", 3, ids=ids, at=late, first_offset=10),
                                "usage.billable|3:10-12")
    # the same instant written with another UTC offset is the same fact
    shifted = [list(r) for r in rows_for("ten_late", 1, ids=ids[:1], at=late, first_offset=20)]
    shifted[0][EVENT_TIME] = late.astimezone(timezone(timedelta(hours=2)))
    third = writer.insert_batch(shifted, "usage.billable|3:20-20")
    assert (first.rows, again.rows, again.duplicates, third.rows, third.duplicates) == (3, 0, 3, 0, 1)
    assert totals(writer_client, "ten_late")[:2] == (3, 30)


def test_batches_taken_but_not_committed_are_found_from_the_committed_offsets(writer_client: Any) -> None:
    writer = UsageWriter(writer_client)
    writer.insert_batch(rows_for("ten_left", 2, partition=5, first_offset=900), "usage.billable|5:900-901")
    writer.insert_batch(rows_for("ten_left", 2, partition=5, first_offset=902), "usage.billable|5:902-903")
    assert writer.leftover_tokens({5: 902}) == ["usage.billable|5:902-903"]
    assert writer.leftover_tokens({5: 904}) == []


# ---- finance SQL ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finance(settings: Settings, writer_client: Any) -> Iterator[Any]:
    from consumers.usage_sql import run_finance_sql
    from lotabots.clickhouse import finance_session_settings, open_clickhouse

    writer = UsageWriter(writer_client)
    writer.insert_batch(rows_for("ten_fa", 3, tokens=100), "usage.billable|2:0-2")
    writer.insert_batch(rows_for("ten_fa", 2, tokens=7, at=DAY + timedelta(days=1)), "usage.billable|2:3-4")
    writer.insert_batch(rows_for("ten_fb", 4, tokens=1000), "usage.billable|3:0-3")
    def open_session(extra: dict[str, Any], limits: bool = True) -> Any:
        return open_clickhouse(settings, session_settings={**extra, **finance_session_settings(settings, limits=limits)})

    def run(sql: str, tenant: str | None = "ten_fa") -> Any:
        return run_finance_sql(sql, open_session, tenant)

    yield run


@pytest.mark.parametrize("sql, status, code", [
    ("INSERT INTO lotabots_usage.usage_events (tenant_id) VALUES ('x')", 403, "read_only"),
    ("ALTER TABLE lotabots_usage.usage_events DELETE WHERE 1", 403, "read_only"),
    ("DROP TABLE lotabots_usage.usage_events", 403, "read_only"),
    ("TRUNCATE TABLE lotabots_usage.usage_daily", 403, "read_only"),
    ("CREATE TABLE lotabots_usage.x (a Int8) ENGINE = Memory", 403, "read_only"),
    ("SET max_result_rows = 1000000", 403, "read_only"),
    ("SELECT name FROM system.tables", 403, "database_not_allowed"),
    ("SELECT * FROM lotabots_usage.usage_events WHERE tenant_id IN (SELECT name FROM system.users)", 403,
     "database_not_allowed"),
    ("SELECT * FROM numbers(10)", 403, "table_function_not_allowed"),
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", 403, "read_only"),  # ClickHouse refuses it
    ("SELECT 1 INTO OUTFILE '/tmp/lotabots-finance-out.txt'", 403, "output_clause_not_allowed"),
    ("SELECT 1 SETTINGS readonly = 0", 403, "read_only"),
    ("SELECT 1 FORMAT CSV", 400, "invalid_sql"),
    ("KILL QUERY WHERE 1", 403, "statement_not_allowed"),
    ("SHOW TABLES FROM system", 403, "statement_not_allowed"),
    ("SELECT number FROM system.numbers LIMIT 10", 403, "database_not_allowed"),
    ("SELEC 1", 403, "statement_not_allowed"),
    ("SELECT nope FROM lotabots_usage.usage_events", 400, "invalid_sql"),
    ("SELECT * FROM lotabots_usage.usage_events; DROP TABLE lotabots_usage.usage_events", 403, "read_only"),
])
def test_finance_sql_refuses_what_is_not_a_read_of_the_usage_database(finance: Any, sql: str, status: int,
                                                                       code: str) -> None:
    from consumers.usage_reads import UsageQueryError

    with pytest.raises(UsageQueryError) as refused:
        finance(sql)
    assert (refused.value.status, refused.value.code) == (status, code), refused.value.message
    assert not Path("/tmp/lotabots-finance-out.txt").exists()


def test_writes_are_refused_by_clickhouse_itself_not_by_a_pattern(finance: Any) -> None:
    from consumers.usage_reads import UsageQueryError

    with pytest.raises(UsageQueryError) as refused:
        finance("  /* comment */ INSERT INTO lotabots_usage.price_book (tier) VALUES ('x')")
    assert "Cannot execute query in readonly mode" in refused.value.message


def test_finance_sql_has_a_row_limit(finance: Any) -> None:
    from consumers.usage_reads import UsageQueryError

    with pytest.raises(UsageQueryError) as refused:  # the module's settings cap results at 50 rows
        finance("SELECT a.event_id FROM lotabots_usage.usage_events a, lotabots_usage.usage_events b", None)
    assert (refused.value.status, refused.value.code) == (422, "sql_row_limit_exceeded")


def test_tokens_per_tenant_per_day_are_right_and_scoped_to_the_callers_tenant(finance: Any) -> None:
    sql = ("SELECT tenant_id, day, sum(prompt_tokens) AS tokens FROM lotabots_usage.usage_daily "
           "GROUP BY tenant_id, day ORDER BY tenant_id, day")
    mine = finance(sql, "ten_fa")
    assert mine.columns == ["tenant_id", "day", "tokens"]
    assert mine.rows == [["ten_fa", "2026-04-10", 300], ["ten_fa", "2026-04-11", 14]]
    everyone = finance(sql + " LIMIT 50", None)
    assert ["ten_fb", "2026-04-10", 4000] in everyone.rows and ["ten_fa", "2026-04-10", 300] in everyone.rows
    # the filter holds inside views and subqueries too
    lines = finance("SELECT DISTINCT tenant_id FROM lotabots_usage.invoice_lines", "ten_fb")
    assert lines.rows == [["ten_fb"]]


def test_invoice_lines_sum_what_each_fact_was_billed(writer_client: Any) -> None:
    from consumers.usage_reads import invoices

    result = invoices(writer_client, "2026-04", "ten_fb")
    invoice = result["invoices"][0]
    pro = TIERS.get("pro").prices
    expected_input = pro.per_1k_input_tokens * 4000 / 1000
    expected_output = pro.per_1k_output_tokens * 4 / 1000
    lines = {line["item"]: line for line in invoice["lines"]}
    assert Decimal(lines["input_tokens"]["amount"]) == expected_input and lines["input_tokens"]["quantity"] == 4000
    assert Decimal(lines["output_tokens"]["amount"]) == expected_output
    assert Decimal(invoice["total"]) == expected_input + expected_output
