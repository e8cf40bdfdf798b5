"""Who receives a lifecycle event, under which webhook-id, and with which body. Pure logic.

Destinations of one request's event: its direct `webhook` URL (filtered by `webhook_events_filter`),
the endpoint it names (`webhook_endpoint_id`, filtered by the request's filter and the endpoint's
event types), and every enabled `all_requests` endpoint of its tenant (filtered by event types).

The body is the request resource as the poll endpoint shows it, at this event: the stored row with
the event applied on top, because the result writer may not have stored the event yet.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import orjson

from gateway.request_models import request_resource
from schemas.autonomy_levels import ACTION_EVENT_TYPE, AutonomyLevel
from schemas.events import LifecycleType, RequestLifecycleEvent
from schemas.webhook_events import filter_matches, webhook_event_type


@dataclass(frozen=True)
class PlannedDelivery:
    """One event to one destination, before it is stored."""

    id: str
    tenant_id: str
    endpoint_id: str | None
    request_id: str
    event_type: str
    url: str
    payload: str
    event_at: datetime


def webhook_id(request_id: str, event_type: str, destination: str) -> str:
    """Deterministic: a redelivered or re-emitted event to the same destination keeps its webhook-id."""
    digest = hashlib.sha256(f"{request_id}|{event_type}|{destination}".encode()).digest()
    return "msg_" + base64.b32encode(digest).decode()[:26].lower()


def resource_at_event(row: Any, event: RequestLifecycleEvent) -> dict[str, Any]:
    """The poll endpoint's resource for `row`, with `event` applied as the result writer would apply it."""
    values = dict(row._mapping) if hasattr(row, "_mapping") else dict(vars(row))
    status = event.type.status
    values["status"] = status.value
    if event.worker:
        values["worker"] = event.worker
    if event.type is LifecycleType.STARTED:
        values["started_at"] = values.get("started_at") or event.started_at or event.at
        values.update(output=None, finish_reason=None, error_code=None, error_message=None,
                      prompt_tokens=None, completion_tokens=None, finished_at=None)
    else:
        values.update(output=event.output, finish_reason=event.finish_reason, error_code=event.error_code,
                      error_message=event.error_message, prompt_tokens=event.prompt_tokens,
                      completion_tokens=event.completion_tokens,
                      first_token_at=event.first_token_at or values.get("first_token_at"))
        values["started_at"] = values.get("started_at") or event.started_at
        if status.terminal:
            values["finished_at"] = event.finished_at or event.at
    return request_resource(SimpleNamespace(**values))


def payload_of(row: Any, event: RequestLifecycleEvent) -> str:
    """The webhook body: Standard Webhooks' envelope around the request resource."""
    return orjson.dumps({
        "type": webhook_event_type(event.type),
        "timestamp": event.at.isoformat(),
        "data": resource_at_event(row, event),
    }).decode()


def plan_deliveries(row: Any, event: RequestLifecycleEvent, endpoints: Iterable[Any]) -> list[PlannedDelivery]:
    """Every delivery `event` of `row` causes. `endpoints`: enabled endpoints of the row's tenant that
    are either `all_requests` or the one the row names."""
    destinations: dict[str, tuple[str | None, str]] = {}
    request_filter = row.webhook_events
    if row.webhook_url and filter_matches(request_filter, event.type):
        destinations[row.webhook_url] = (None, row.webhook_url)
    for ep in endpoints:
        if ep.tenant_id != row.tenant_id or not ep.enabled or not filter_matches(ep.event_types, event.type):
            continue
        named = ep.id == row.webhook_endpoint_id and filter_matches(request_filter, event.type)
        if named or ep.all_requests:
            destinations[ep.id] = (ep.id, ep.url)
    planned = []
    if destinations:
        body = payload_of(row, event)
        kind = webhook_event_type(event.type)
        planned = [
            PlannedDelivery(webhook_id(row.id, kind, key), row.tenant_id, endpoint_id, row.id, kind, url, body,
                            event.at)
            for key, (endpoint_id, url) in destinations.items()
        ]
    action = plan_action(row, event, endpoints)
    return planned if action is None else [*planned, action]


def action_runs(row: Any, event: RequestLifecycleEvent) -> bool:
    """Levels of autonomy (docs/autonomy.md): the requested action runs when the request succeeds at
    Agent, or after a human accepted it (approve/edit) at Collaborator or Expert; never otherwise."""
    action = getattr(row, "action", None)
    level_name = getattr(row, "autonomy_level", None)
    if not action or not level_name or event.type is not LifecycleType.SUCCEEDED:
        return False
    level = AutonomyLevel(level_name)
    if level is AutonomyLevel.AGENT:
        return True
    return level.needs_decision and getattr(row, "decision", None) in ("approved", "edited")


def plan_action(row: Any, event: RequestLifecycleEvent, endpoints: Iterable[Any]) -> PlannedDelivery | None:
    """The `request.action` delivery of the final output to the action's endpoint, when it runs."""
    if not action_runs(row, event):
        return None
    endpoint = next((ep for ep in endpoints if ep.id == row.action.get("endpoint_id")
                     and ep.tenant_id == row.tenant_id and ep.enabled), None)
    if endpoint is None:
        return None
    body = orjson.dumps({
        "type": ACTION_EVENT_TYPE, "timestamp": event.at.isoformat(),
        "data": {"id": row.id, "object": "action", "action": row.action, "autonomy_level": row.autonomy_level,
                 "task": getattr(row, "task", None), "context": getattr(row, "context", None),
                 "output": event.output, "decision": getattr(row, "decision", None),
                 "decided_by": getattr(row, "decided_by", None)},
    }).decode()
    return PlannedDelivery(webhook_id(row.id, ACTION_EVENT_TYPE, endpoint.id), row.tenant_id, endpoint.id, row.id,
                           ACTION_EVENT_TYPE, endpoint.url, body, event.at)
