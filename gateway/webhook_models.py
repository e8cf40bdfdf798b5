"""HTTP bodies of the webhooks API and how endpoints and deliveries are shown."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from gateway.webhook_secrets import SecretInfo
from schemas.webhook_events import WebhookEventName

Url = Annotated[str, Field(min_length=1, max_length=2048)]
EventTypes = Annotated[list[WebhookEventName], Field(max_length=6)]


class CreateEndpointBody(BaseModel):
    """`POST /v1/webhooks/endpoints`. `event_types` empty = every event."""

    model_config = ConfigDict(extra="forbid")
    url: Url
    description: Annotated[str, Field(max_length=500)] = ""
    event_types: EventTypes = Field(default_factory=list)
    all_requests: bool = Field(default=False, description="receive every request's events, not only named ones")
    enabled: bool = True


class UpdateEndpointBody(BaseModel):
    """`PATCH /v1/webhooks/endpoints/{id}`: only the fields given change. `enabled: true` clears a disable."""

    model_config = ConfigDict(extra="forbid")
    url: Url | None = None
    description: Annotated[str, Field(max_length=500)] | None = None
    event_types: EventTypes | None = None
    all_requests: bool | None = None
    enabled: bool | None = None


class RotateSecretBody(BaseModel):
    """The old secret keeps signing for `overlap_s` seconds (default: the `webhook_secret_overlap_s` setting)."""

    model_config = ConfigDict(extra="forbid")
    overlap_s: Annotated[int, Field(ge=0, le=7 * 86400, strict=True)] | None = None


def _date_time_text(value: object) -> object:
    """An RFC 3339 string (pydantic would also read a number as seconds since the epoch)."""
    if not isinstance(value, (str, datetime)):
        raise ValueError("a date-time string (RFC 3339) is expected")
    return value


DateTimeText = Annotated[datetime, BeforeValidator(_date_time_text)]


class ReplayFailedBody(BaseModel):
    """Replay every failed delivery created in [since, until) (of one endpoint, if given)."""

    model_config = ConfigDict(extra="forbid")
    since: DateTimeText
    until: DateTimeText | None = None
    endpoint_id: str | None = None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def secret_info(infos: Iterable[SecretInfo]) -> list[dict[str, Any]]:
    return [{"id": s.id, "created_at": _iso(s.created_at), "expires_at": _iso(s.expires_at)} for s in infos]


def endpoint_resource(row: Any, secrets: Iterable[SecretInfo] = ()) -> dict[str, Any]:
    return {
        "id": row.id,
        "object": "webhook_endpoint",
        "url": row.url,
        "description": row.description,
        "event_types": list(row.event_types or []),
        "all_requests": row.all_requests,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "disabled_at": _iso(row.disabled_at),
        "failing_since": _iso(row.failing_since),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "secrets": secret_info(secrets),
    }


def delivery_resource(row: Any, attempts: Iterable[Any] | None = None) -> dict[str, Any]:
    """A delivery; with `attempts` (the detail view) also its payload and attempt log."""
    out: dict[str, Any] = {
        "id": row.id,
        "object": "webhook_delivery",
        "webhook_id": row.id,
        "endpoint_id": row.endpoint_id,
        "request_id": row.request_id,
        "event_type": row.event_type,
        "url": row.url,
        "status": row.status,
        "attempts": row.attempts,
        "next_attempt_at": _iso(row.next_attempt_at),
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "event_at": _iso(row.event_at),
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "delivered_at": _iso(row.delivered_at),
    }
    if attempts is not None:
        out["payload"] = row.payload
        out["attempt_log"] = [
            {"attempt": a.attempt, "attempted_at": _iso(a.attempted_at), "status_code": a.status_code,
             "latency_ms": a.latency_ms, "response_body": a.response_body, "error": a.error,
             "next_attempt_at": _iso(a.next_attempt_at), "replay": a.replay}
            for a in attempts
        ]
    return out
