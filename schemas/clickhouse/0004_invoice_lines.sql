-- Invoice lines per tenant per month: one line per tier and item (requests, input tokens, output
-- tokens), summed from the daily rollup. Amounts are the exact sums of what each fact was billed at.
CREATE VIEW IF NOT EXISTS lotabots_usage.invoice_lines AS
SELECT tenant_id, period, tier, item, quantity, amount
FROM
(
    SELECT tenant_id, formatDateTime(day, '%Y-%m') AS period, tier,
           sum(requests) AS requests, sum(prompt_tokens) AS prompt_tokens,
           sum(completion_tokens) AS completion_tokens, sum(request_cost) AS request_cost,
           sum(input_cost) AS input_cost, sum(output_cost) AS output_cost
    FROM lotabots_usage.usage_daily
    GROUP BY tenant_id, period, tier
)
ARRAY JOIN
    ['requests', 'input_tokens', 'output_tokens'] AS item,
    [requests, prompt_tokens, completion_tokens] AS quantity,
    [request_cost, input_cost, output_cost] AS amount
WHERE quantity > 0 OR amount > 0;
