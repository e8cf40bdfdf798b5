"""One end-to-end test per level of autonomy, with the real model, the real worker, result writer and
webhook dispatcher (docs/autonomy.md's table): whether the model ran, the status path, what the user
gets, and whether and when the requested action was delivered."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer
from standardwebhooks import Webhook

from schemas.usage import usage_message_events
from tests.autonomy.conftest import Team, endpoint, events_of, set_tenant, settle, submit
from tests.webhooks.receiver import Receiver

ACTION = "request.action"


async def _usage_level(bootstrap: str, request_id: str, timeout: float = 60) -> str:
    """The autonomy level on the request's `inference.completed` usage fact (read from the start)."""
    consumer = AIOKafkaConsumer("usage.events", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:  # a message is one CloudEvent or a CloudEvents batch
                        facts = usage_message_events(record.value)
                    except ValueError:  # the shared topic also carries other suites' poison events
                        continue
                    for fact in facts:
                        if isinstance(fact, dict) and fact.get("id") == f"{request_id}:inference":
                            return str(fact["data"]["autonomy_level"])
    finally:
        await consumer.stop()
    raise AssertionError(f"no inference usage fact for {request_id}")


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value)


async def test_no_ai_never_invokes_the_model_and_is_recorded(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any, kafka: Any,
) -> None:
    await set_tenant(team, "no_ai")
    ep, _ = await endpoint(team, autonomy_receiver, "/no-ai")
    refused = await team.member.post("/v1/requests", json={
        "messages": [{"role": "user", "content": "hi"}], "action": {"type": "deliver_webhook", "endpoint_id": ep}})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "action_not_allowed_at_level"

    accepted = await submit(team.member)
    assert accepted["status"] == "succeeded"  # ended at once, in the gateway
    assert accepted["output"] is None
    assert accepted["autonomy"]["no_ai"] is True and accepted["autonomy"]["level"] == "no_ai"
    polled = (await team.member.get(f"/v1/requests/{accepted['id']}")).json()
    assert polled["status"] == "succeeded" and polled["output"] is None
    assert polled["timings"]["started_at"] is None  # no worker ever started it
    assert polled["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert await _usage_level(kafka.bootstrap, accepted["id"]) == "no_ai"
    # webhooks still tell the endpoint the request ended (and no action ran)
    await autonomy_receiver.wait_for("/no-ai", lambda got: bool(
        [x for x in got if x.event_type == "request.succeeded" and x.request_id == accepted["id"]]))
    assert events_of(autonomy_receiver, "/no-ai", accepted["id"], ACTION) == []


async def test_assisted_gives_suggestions_and_never_runs_actions(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any, kafka: Any,
) -> None:
    await set_tenant(team, "assisted")
    ep, _ = await endpoint(team, autonomy_receiver, "/assisted")
    refused = await team.member.post("/v1/requests", json={
        "messages": [{"role": "user", "content": "hi"}], "action": {"type": "deliver_webhook", "endpoint_id": ep}})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "action_not_allowed_at_level"

    accepted = await submit(team.member, max_tokens=24)
    done = await settle(team.member, accepted["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded"
    assert done["usage"]["completion_tokens"] > 0  # the model ran
    view = done["autonomy"]
    assert view["presentation"] == "suggestions" and view["needs_decision"] is False
    assert 1 <= len(view["suggestions"]) <= 3 and all(s.strip() for s in view["suggestions"]), (done["output"], view)
    assert await _usage_level(kafka.bootstrap, accepted["id"]) == "assisted"
    await autonomy_receiver.wait_for("/assisted", lambda got: bool(
        [x for x in got if x.event_type == "request.succeeded" and x.request_id == accepted["id"]]))
    assert events_of(autonomy_receiver, "/assisted", accepted["id"], ACTION) == []


async def test_collaborator_drafts_and_acts_only_after_acceptance(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any, kafka: Any,
) -> None:
    await set_tenant(team, "collaborator")
    ep, secret = await endpoint(team, autonomy_receiver, "/collaborator")
    accepted = await submit(team.member, action={"type": "deliver_webhook", "endpoint_id": ep})
    assert accepted["autonomy"]["action"] == {"type": "deliver_webhook", "endpoint_id": ep,
                                              "runs": "after_acceptance"}
    draft = await settle(team.member, accepted["id"], {"awaiting_approval", "failed", "succeeded"})
    assert draft["status"] == "awaiting_approval"
    assert draft["output"]["text"] and draft["autonomy"]["presentation"] == "draft"
    assert draft["autonomy"]["needs_decision"] is True
    # the awaiting_approval webhook went out, the action did not
    await autonomy_receiver.wait_for("/collaborator", lambda got: bool(
        [x for x in got if x.event_type == "request.awaiting_approval" and x.request_id == accepted["id"]]))
    assert events_of(autonomy_receiver, "/collaborator", accepted["id"], ACTION) == []
    assert await _usage_level(kafka.bootstrap, accepted["id"]) == "collaborator"

    r = await team.member.post(f"/v1/requests/{accepted['id']}/approve")
    assert r.status_code == 200, r.text
    final = r.json()
    assert final["status"] == "succeeded" and final["output"]["text"] == draft["output"]["text"]
    got = await autonomy_receiver.wait_for("/collaborator", lambda got: bool(
        [x for x in got if x.event_type == ACTION and x.request_id == accepted["id"]]))
    action = next(x for x in got if x.event_type == ACTION and x.request_id == accepted["id"])
    Webhook(secret).verify(action.body, action.headers)  # signed like every webhook
    assert action.json["data"]["output"] == draft["output"]["text"]
    assert action.json["data"]["decision"] == "approved"
    assert _at(action.json["timestamp"]) >= _at(final["autonomy"]["decision"]["at"])


async def test_expert_advises_and_acts_only_after_the_user_confirms(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any,
) -> None:
    await set_tenant(team, "expert")
    ep, _ = await endpoint(team, autonomy_receiver, "/expert")
    accepted = await submit(team.member, action={"type": "deliver_webhook", "endpoint_id": ep})
    advice = await settle(team.member, accepted["id"], {"awaiting_approval", "failed", "succeeded"})
    assert advice["status"] == "awaiting_approval"
    assert advice["output"]["text"] and advice["autonomy"]["presentation"] == "advice"
    assert advice["autonomy"]["action"]["runs"] == "after_confirmation"
    await autonomy_receiver.wait_for("/expert", lambda got: bool(
        [x for x in got if x.event_type == "request.awaiting_approval" and x.request_id == accepted["id"]]))
    assert events_of(autonomy_receiver, "/expert", accepted["id"], ACTION) == []

    decision = "Paris, confirmed after reading the advice."
    r = await team.member.post(f"/v1/requests/{accepted['id']}/edit", json={"text": decision})
    assert r.status_code == 200, r.text
    assert r.json()["output"]["text"] == decision
    got = await autonomy_receiver.wait_for("/expert", lambda got: bool(
        [x for x in got if x.event_type == ACTION and x.request_id == accepted["id"]]))
    assert next(x for x in got if x.event_type == ACTION).json["data"]["output"] == decision


async def test_agent_answers_and_acts_immediately(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any, kafka: Any,
) -> None:
    ep, secret = await endpoint(team, autonomy_receiver, "/agent")  # no policy: the platform default, agent
    accepted = await submit(team.member, action={"type": "deliver_webhook", "endpoint_id": ep})
    assert accepted["autonomy"]["level"] == "agent" and accepted["autonomy"]["rule"]["scope"] == "platform_default"
    done = await settle(team.member, accepted["id"], {"succeeded", "failed"})
    assert done["status"] == "succeeded" and done["output"]["text"]
    assert done["autonomy"]["presentation"] == "final" and done["autonomy"]["decision"] is None
    got = await autonomy_receiver.wait_for("/agent", lambda got: bool(
        [x for x in got if x.event_type == ACTION and x.request_id == accepted["id"]]))
    action = next(x for x in got if x.event_type == ACTION and x.request_id == accepted["id"])
    Webhook(secret).verify(action.body, action.headers)
    assert action.json["data"]["output"] == done["output"]["text"]
    assert action.json["data"]["decision"] is None  # nobody had to decide
    assert await _usage_level(kafka.bootstrap, accepted["id"]) == "agent"
    r = await team.member.post(f"/v1/requests/{accepted['id']}/approve")
    assert r.status_code == 409 and r.json()["error"]["code"] == "decision_not_applicable"
