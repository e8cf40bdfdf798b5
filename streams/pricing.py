"""Enrichment screen: a valid usage fact priced with its tier's prices (exact Decimal arithmetic)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson

from lotabots.tiers import TierPrices
from schemas.usage import (
    KIND_OF,
    BillableUsage,
    InferenceCompletedData,
    RequestAcceptedData,
    RequestRejectedData,
    UsageEvent,
)

_THOUSAND = Decimal(1000)
_EMPTY_TEXT = {k: "" for k in ("request_id", "api_key_id", "model", "autonomy_level", "status", "finish_reason",
                               "reason")}


def price_usage_event(event: UsageEvent, prices: TierPrices) -> BillableUsage:
    """The billable row for one fact: an accepted request pays ``per_request``; an inference pays per token."""
    # model_construct: every input was validated with the event
    return BillableUsage.model_construct(**billable_fields(event, prices))


def billable_json(event: UsageEvent, prices: TierPrices) -> bytes:
    """:func:`price_usage_event` as ``BillableUsage`` JSON, without building the model (the stream's hot path;
    tests pin that both decode to the same fact)."""
    return orjson.dumps(billable_fields(event, prices), default=str)  # Decimal -> its exact text


def billable_fields(event: UsageEvent, prices: TierPrices) -> dict[str, Any]:
    """Every ``BillableUsage`` field of one priced fact."""
    data = event.data
    requests = rejections = prompt = completion = latency = 0
    fields: dict[str, str] = {}
    if isinstance(data, RequestAcceptedData):
        requests = 1
        fields = {"request_id": data.request_id, "api_key_id": data.api_key_id or ""}
    elif isinstance(data, RequestRejectedData):
        rejections = 1
        fields = {"request_id": data.request_id or "", "api_key_id": data.api_key_id or "", "reason": data.reason}
    elif isinstance(data, InferenceCompletedData):
        prompt, completion, latency = data.prompt_tokens, data.completion_tokens, data.latency_ms
        fields = {
            "request_id": data.request_id, "model": data.model, "autonomy_level": data.autonomy_level,
            "status": data.status, "finish_reason": data.finish_reason,
        }
    request_cost = prices.per_request * requests
    input_cost = prices.per_1k_input_tokens * prompt / _THOUSAND
    output_cost = prices.per_1k_output_tokens * completion / _THOUSAND
    return {
        "schema_version": 1, "event_id": event.id, "event_type": event.type, "kind": KIND_OF[event.type],
        "tenant_id": data.tenant_id, "tier": data.tier, **_EMPTY_TEXT, **fields, "event_time": event.time,
        "requests": requests, "rejections": rejections, "prompt_tokens": prompt, "completion_tokens": completion,
        "latency_ms": latency, "price_per_request": prices.per_request,
        "price_per_1k_input": prices.per_1k_input_tokens, "price_per_1k_output": prices.per_1k_output_tokens,
        "request_cost": request_cost, "input_cost": input_cost, "output_cost": output_cost,
        "cost": request_cost + input_cost + output_cost,
    }
