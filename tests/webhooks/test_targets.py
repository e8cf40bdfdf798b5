"""Who receives an event, under which webhook-id, and with which body (pure logic)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from consumers.webhook_targets import plan_deliveries, resource_at_event, webhook_id
from schemas.events import LifecycleType, RequestLifecycleEvent
from schemas.webhook_events import filter_matches

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _row(**kw: Any) -> SimpleNamespace:
    values = dict(
        id="req_1", tenant_id="ten_a", tier="pro", status="queued", status_rank=0, conversation_id=None,
        input={"messages": [{"role": "user", "content": "hi"}]}, params={"max_tokens": 4}, output=None,
        finish_reason=None, error_code=None, error_message=None, prompt_tokens=None, completion_tokens=None,
        idempotency_key=None, request_hash="h", worker=None, created_at=T0, started_at=None, first_token_at=None,
        finished_at=None, updated_at=T0, last_event_offset=None, webhook_endpoint_id=None, webhook_url=None,
        webhook_events=None,
    )
    values.update(kw)
    return SimpleNamespace(**values)


def _event(kind: LifecycleType, **kw: Any) -> RequestLifecycleEvent:
    base: dict[str, Any] = dict(event_id="evt_1", request_id="req_1", tenant_id="ten_a", tier="pro", type=kind,
                                at=T0 + timedelta(seconds=2))
    if kind is LifecycleType.SUCCEEDED:
        base.update(output="Paris", finish_reason="stop", prompt_tokens=10, completion_tokens=2,
                    started_at=T0 + timedelta(seconds=1), finished_at=T0 + timedelta(seconds=2))
    base.update(kw)
    return RequestLifecycleEvent(**base)


def _endpoint(id: str, **kw: Any) -> SimpleNamespace:
    values = dict(id=id, tenant_id="ten_a", url=f"https://hooks.example.com/{id}", event_types=[],
                  all_requests=False, enabled=True)
    values.update(kw)
    return SimpleNamespace(**values)


def test_the_payload_is_the_poll_resource_with_the_event_applied_before_the_writer_stored_it() -> None:
    row = _row()  # the result writer has not applied the event yet: the row still says queued
    resource = resource_at_event(row, _event(LifecycleType.SUCCEEDED))
    assert resource["status"] == "succeeded"
    assert resource["output"] == {"text": "Paris", "finish_reason": "stop"}
    assert resource["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    assert resource["timings"]["finished_at"] == (T0 + timedelta(seconds=2)).isoformat()
    assert resource["input"] == row.input and resource["id"] == "req_1" and resource["object"] == "request"


def test_a_started_event_shows_the_request_running_even_if_the_row_is_already_terminal() -> None:
    row = _row(status="succeeded", output="Paris", finish_reason="stop", finished_at=T0)
    resource = resource_at_event(row, _event(LifecycleType.STARTED, started_at=T0))
    assert resource["status"] == "running" and resource["output"] is None


def test_a_direct_url_with_a_filter_gets_only_the_filtered_events() -> None:
    row = _row(webhook_url="https://r.example.com/h", webhook_events=["completed"])
    assert plan_deliveries(row, _event(LifecycleType.STARTED), []) == []
    (delivery,) = plan_deliveries(row, _event(LifecycleType.SUCCEEDED), [])
    assert delivery.url == "https://r.example.com/h" and delivery.endpoint_id is None
    body = json.loads(delivery.payload)
    assert body["type"] == "request.succeeded" and body["timestamp"] == (T0 + timedelta(seconds=2)).isoformat()
    assert body["data"]["status"] == "succeeded"


def test_endpoints_receive_named_requests_and_all_requests_endpoints_every_request() -> None:
    named = _endpoint("whe_named")
    everything = _endpoint("whe_all", all_requests=True, event_types=["succeeded", "failed"])
    unrelated = _endpoint("whe_other")
    other_tenant = _endpoint("whe_foreign", tenant_id="ten_b", all_requests=True)
    disabled = _endpoint("whe_off", all_requests=True, enabled=False)
    endpoints = [named, everything, unrelated, other_tenant, disabled]
    row = _row(webhook_endpoint_id="whe_named")
    got = {d.endpoint_id for d in plan_deliveries(row, _event(LifecycleType.SUCCEEDED), endpoints)}
    assert got == {"whe_named", "whe_all"}
    started = {d.endpoint_id for d in plan_deliveries(row, _event(LifecycleType.STARTED), endpoints)}
    assert started == {"whe_named"}  # the all-requests endpoint filters to succeeded/failed


def test_the_request_filter_narrows_its_named_endpoint() -> None:
    row = _row(webhook_endpoint_id="whe_named", webhook_events=["failed"])
    assert plan_deliveries(row, _event(LifecycleType.SUCCEEDED), [_endpoint("whe_named")]) == []


def test_webhook_ids_are_stable_per_event_and_destination_and_differ_otherwise() -> None:
    row = _row(webhook_url="https://r.example.com/h")
    a = plan_deliveries(row, _event(LifecycleType.SUCCEEDED, event_id="evt_1"), [])[0]
    b = plan_deliveries(row, _event(LifecycleType.SUCCEEDED, event_id="evt_2"), [])[0]  # re-emitted event
    assert a.id == b.id == webhook_id("req_1", "request.succeeded", "https://r.example.com/h")
    assert webhook_id("req_1", "request.started", "https://r.example.com/h") != a.id
    assert webhook_id("req_1", "request.succeeded", "whe_x") != a.id
    assert a.id.startswith("msg_") and len(a.id) <= 40


def test_completed_stands_for_every_terminal_event() -> None:
    assert all(filter_matches(["completed"], t) for t in ("succeeded", "failed", "canceled"))
    assert not filter_matches(["completed"], "started")
    assert filter_matches(None, "started") and filter_matches([], "awaiting_approval")
