-- Raw usage facts: one row per billable fact (deduplicated by event id upstream and in the sink).
-- Tenant first in the sort key (every read is per tenant), monthly partitions (invoices are monthly,
-- old months drop as whole partitions), TTL for raw rows (the daily rollup and invoices outlive them).
-- non_replicated_deduplication_window: a retried insert with the same insert_deduplication_token is
-- dropped (plain MergeTree keeps no dedup log without it).
CREATE TABLE IF NOT EXISTS lotabots_usage.usage_events
(
    tenant_id          String,
    event_time         DateTime64(3, 'UTC'),
    event_id           String,
    event_type         LowCardinality(String),
    kind               LowCardinality(String),
    tier               LowCardinality(String),
    request_id         String,
    api_key_id         String,
    model              LowCardinality(String),
    autonomy_level     LowCardinality(String),
    status             LowCardinality(String),
    finish_reason      LowCardinality(String),
    reason             LowCardinality(String),
    requests           UInt32,
    rejections         UInt32,
    prompt_tokens      UInt64,
    completion_tokens  UInt64,
    latency_ms         UInt32,
    price_per_request  Decimal(38, 12),
    price_per_1k_input Decimal(38, 12),
    price_per_1k_output Decimal(38, 12),
    request_cost       Decimal(38, 12),
    input_cost         Decimal(38, 12),
    output_cost        Decimal(38, 12),
    cost               Decimal(38, 12),
    source_partition   UInt16,
    source_offset      UInt64,
    insert_token       String,
    inserted_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX event_id_bloom event_id TYPE bloom_filter(0.01) GRANULARITY 4,
    -- the sink's restart check reads the recently inserted rows only
    INDEX inserted_at_minmax inserted_at TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (tenant_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL 25 MONTH
SETTINGS non_replicated_deduplication_window = 10000;
