"""Prometheus metrics of the usage pipeline, declared once (the Faust worker and the usage service import them).

Names: ``lotabots_usage_*`` for the pipeline, ``lotabots_consumer_lag`` for any consumer group (labels
group/topic/partition), so one dashboard panel shows every group's lag.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

USAGE_EVENTS_IN = Counter("lotabots_usage_stream_events_total", "usage events read by the stream", ["outcome"])
USAGE_DEAD_LETTERS = Counter("lotabots_usage_dead_letters_total", "usage messages sent to a DLQ", ["stage", "code"])
USAGE_BILLABLE_OUT = Counter("lotabots_usage_billable_total", "priced facts produced to usage.billable", ["kind"])
USAGE_QUOTA_UPDATES = Counter("lotabots_usage_quota_updates_total", "quota-state records produced")
USAGE_SEEN_EXPIRED = Counter("lotabots_usage_dedupe_expired_total", "event ids forgotten after the dedupe TTL")
USAGE_ROWS_INSERTED = Counter("lotabots_usage_rows_inserted_total", "rows inserted into ClickHouse", ["table"])
USAGE_DUPLICATES_SKIPPED = Counter(
    "lotabots_usage_sink_duplicates_total", "billable facts already in ClickHouse (skipped by the sink)"
)
CLICKHOUSE_INSERT_SECONDS = Histogram(
    "lotabots_clickhouse_insert_seconds", "ClickHouse insert latency per batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CLICKHOUSE_BATCH_ROWS = Histogram(
    "lotabots_clickhouse_batch_rows", "rows per ClickHouse insert batch",
    buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000, 50000),
)
CLICKHOUSE_INSERT_ERRORS = Counter("lotabots_clickhouse_insert_errors_total", "ClickHouse inserts that failed (retried)")
LEFTOVER_ERRORS = Counter("lotabots_usage_leftover_errors_total",
                          "tries at completing a leftover usage batch on assignment that failed (retried)")
USAGE_QUERIES = Counter("lotabots_usage_queries_total", "reads served by the usage service", ["endpoint", "outcome"])
CONSUMER_LAG = Gauge("lotabots_consumer_lag", "messages behind the end of the partition", ["group", "topic", "partition"])
