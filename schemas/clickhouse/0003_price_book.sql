-- The price book: every tier's prices from the time they took effect (written from lotabots/tiers.toml
-- by `lotabots usage migrate` whenever they change). Usage rows carry the prices they were billed at;
-- this table says what the list prices were, for finance.
CREATE TABLE IF NOT EXISTS lotabots_usage.price_book
(
    tier                 LowCardinality(String),
    effective_from       DateTime64(3, 'UTC'),
    per_request          Decimal(38, 12),
    per_1k_input_tokens  Decimal(38, 12),
    per_1k_output_tokens Decimal(38, 12),
    currency             LowCardinality(String) DEFAULT 'USD'
)
ENGINE = ReplacingMergeTree
ORDER BY (tier, effective_from);
