-- Per-tenant per-day rollup, fed by a materialized view on every insert into usage_events.
-- SummingMergeTree: rows with the same key are summed on merge, so reads always sum() ... GROUP BY.
-- The view's target keeps its own dedup log (non_replicated_deduplication_window) so that a retried
-- block, inserted with deduplicate_blocks_in_dependent_materialized_views = 1, is not counted twice.
CREATE TABLE IF NOT EXISTS lotabots_usage.usage_daily
(
    tenant_id          String,
    day                Date,
    tier               LowCardinality(String),
    model              LowCardinality(String),
    autonomy_level     LowCardinality(String),
    events             UInt64,
    requests           UInt64,
    rejections         UInt64,
    prompt_tokens      UInt64,
    completion_tokens  UInt64,
    request_cost       Decimal(38, 12),
    input_cost         Decimal(38, 12),
    output_cost        Decimal(38, 12),
    cost               Decimal(38, 12)
)
ENGINE = SummingMergeTree((events, requests, rejections, prompt_tokens, completion_tokens,
                           request_cost, input_cost, output_cost, cost))
PARTITION BY toYYYYMM(day)
ORDER BY (tenant_id, day, tier, model, autonomy_level)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS lotabots_usage.usage_daily_mv TO lotabots_usage.usage_daily AS
SELECT
    tenant_id,
    toDate(event_time) AS day,
    tier,
    model,
    autonomy_level,
    count() AS events,
    sum(requests) AS requests,
    sum(rejections) AS rejections,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(request_cost) AS request_cost,
    sum(input_cost) AS input_cost,
    sum(output_cost) AS output_cost,
    sum(cost) AS cost
FROM lotabots_usage.usage_events
GROUP BY tenant_id, day, tier, model, autonomy_level;
