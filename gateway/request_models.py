"""HTTP bodies of the requests API (what clients send and what the poll endpoint returns)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.autonomy_view import autonomy_view
from schemas.autonomy_levels import AutonomyLevel
from schemas.events import ChatMessage
from schemas.webhook_events import WebhookEventName


class RequestAction(BaseModel):
    """What the platform does with the final output on the user's behalf, when the level allows it."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["deliver_webhook"]
    endpoint_id: Annotated[str, Field(min_length=1, max_length=40)]


class SubmitRequestBody(BaseModel):
    """`POST /v1/requests`."""

    model_config = ConfigDict(extra="forbid")
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=256)]
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=0.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(default_factory=list, max_length=8)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    conversation_id: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # webhooks (docs/webhooks.md): a direct URL with an event filter (Replicate style), or a registered endpoint
    webhook: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    webhook_events_filter: Annotated[list[WebhookEventName], Field(min_length=1, max_length=6)] | None = None
    webhook_endpoint_id: Annotated[str, Field(min_length=1, max_length=40)] | None = None
    # levels of autonomy (docs/autonomy.md): what the request is for, the level it asks for (never above
    # the resolved one), and what to do with the final output
    task: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    context: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    autonomy_level: AutonomyLevel | None = None
    action: RequestAction | None = None
    # token streaming (docs/openai.md): answer with the SSE stream once the request is durable
    stream: bool = False
    cancel_on_disconnect: bool = False


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def request_resource(row: Any) -> dict[str, Any]:
    """The request as the poll endpoint (and webhooks) show it."""
    created, started, first, finished = row.created_at, row.started_at, row.first_token_at, row.finished_at
    timings: dict[str, Any] = {
        "created_at": _iso(created), "started_at": _iso(started),
        "first_token_at": _iso(first), "finished_at": _iso(finished),
    }
    if started and created:
        timings["queue_ms"] = round((_aware(started) - _aware(created)).total_seconds() * 1000, 1)
    if finished and started:
        timings["run_ms"] = round((_aware(finished) - _aware(started)).total_seconds() * 1000, 1)
    prompt, completion = row.prompt_tokens, row.completion_tokens
    return {
        "id": row.id,
        "object": "request",
        "status": row.status,
        "tier": row.tier,
        "conversation_id": row.conversation_id,
        "created_at": _iso(created),
        "input": row.input,
        "params": row.params,
        "output": None if row.output is None else {"text": row.output, "finish_reason": row.finish_reason},
        "error": None if row.error_code is None else {"code": row.error_code, "message": row.error_message},
        "usage": None if prompt is None else {
            "prompt_tokens": prompt, "completion_tokens": completion or 0, "total_tokens": prompt + (completion or 0),
        },
        "timings": timings,
        "autonomy": autonomy_view(row),
    }


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)
