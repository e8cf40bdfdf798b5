"""Human decisions on Collaborator requests: accept, edit, reject; refusals of double decisions,
another tenant's request and another member's request; the audit trail of who decided what, when."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from typing import Any

from tests.autonomy.conftest import Team, endpoint, events_of, set_tenant, settle, submit
from tests.webhooks.receiver import Receiver

ACTION = "request.action"


async def _draft(team: Team, **body: Any) -> dict[str, Any]:
    accepted = await submit(team.member, **body)
    draft = await settle(team.member, accepted["id"], {"awaiting_approval", "failed", "succeeded"})
    assert draft["status"] == "awaiting_approval", draft
    await _stored_awaiting(team, draft["id"])
    return draft


async def _stored_awaiting(team: Team, request_id: str, timeout: float = 60) -> None:
    """The long-poll answers `awaiting_approval` from the lifecycle event, possibly before the result writer
    stored it; what the tests do next (a cancel, a plain GET) reads the stored row."""
    deadline = time.monotonic() + timeout
    stored: dict[str, Any] = {}
    while time.monotonic() < deadline:
        stored = (await team.member.get(f"/v1/requests/{request_id}")).json()
        if stored["status"] == "awaiting_approval":
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{request_id} never stored as awaiting_approval: {stored}")


async def test_edit_makes_the_edited_text_final_and_the_audit_tells_who_and_when(
    team: Team, rival: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any,
) -> None:
    await set_tenant(team, "collaborator")
    ep, _ = await endpoint(team, autonomy_receiver, "/edit")
    draft = await _draft(team, task="email", context="support",
                         action={"type": "deliver_webhook", "endpoint_id": ep})
    rid = draft["id"]

    # another tenant cannot see or decide it; another member of the tenant may not decide it
    r = await rival.admin.post(f"/v1/requests/{rid}/approve")
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"
    assert (await rival.admin.get(f"/v1/requests/{rid}/audit")).status_code == 404
    r = await team.other.post(f"/v1/requests/{rid}/approve")
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_request_owner"

    r = await team.member.post(f"/v1/requests/{rid}/edit", json={"text": "Paris.", "comment": "shorter"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "succeeded" and r.json()["output"]["text"] == "Paris."
    assert r.json()["autonomy"]["decision"]["kind"] == "edited"

    # deciding again is refused, whatever the verb
    for verb in ("approve", "reject"):
        again = await team.member.post(f"/v1/requests/{rid}/{verb}")
        assert again.status_code == 409 and again.json()["error"]["code"] == "request_already_decided"
    got = await autonomy_receiver.wait_for("/edit", lambda got: bool(
        [x for x in got if x.event_type == ACTION and x.request_id == rid]))
    assert [x.json["data"]["output"] for x in got if x.event_type == ACTION and x.request_id == rid][0] == "Paris."
    polled = (await team.member.get(f"/v1/requests/{rid}")).json()
    assert polled["status"] == "succeeded" and polled["output"]["text"] == "Paris."  # the writer kept it

    async def audit() -> list[dict[str, Any]]:
        r = await team.member.get(f"/v1/requests/{rid}/audit")
        assert r.status_code == 200, r.text
        return list(r.json()["data"])

    expected = ["level_resolved", "edited", "action_executed"]
    deadline = time.monotonic() + 60
    entries = await audit()
    while [e["event"] for e in entries] != expected:  # the delivery log is written after the 2xx
        assert time.monotonic() < deadline, f"the audit never read {expected}: {entries}"
        await asyncio.sleep(0.2)
        entries = await audit()
    resolved, edited, executed = entries
    assert resolved["actor"] == team.member_key_id and resolved["level"] == "collaborator"
    assert resolved["detail"]["rule"]["scope"] == "tenant_default"
    assert (resolved["detail"]["task"], resolved["detail"]["context"]) == ("email", "support")
    assert edited["actor"] == team.member_key_id and edited["actor_kind"] == "api_key"
    assert edited["detail"]["draft"] == draft["output"]["text"] and edited["detail"]["final"] == "Paris."
    assert edited["detail"]["comment"] == "shorter" and edited["detail"]["action_authorized"] is True
    assert executed["actor"] == "platform" and executed["detail"]["endpoint_id"] == ep
    times = [datetime.fromisoformat(e["at"]) for e in entries]
    assert times == sorted(times)


async def test_reject_cancels_and_never_runs_the_action(
    team: Team, autonomy_receiver: Receiver, autonomy_dispatcher: Any,
) -> None:
    await set_tenant(team, "collaborator")
    ep, _ = await endpoint(team, autonomy_receiver, "/reject")
    draft = await _draft(team, action={"type": "deliver_webhook", "endpoint_id": ep})
    rid = draft["id"]
    r = await team.member.post(f"/v1/requests/{rid}/cancel")  # the decision is a reject, not a cancel
    assert r.status_code == 409 and r.json()["error"]["code"] == "request_awaiting_approval", r.text
    assert (await team.member.get(f"/v1/requests/{rid}")).json()["status"] == "awaiting_approval"
    r = await team.admin.post(f"/v1/requests/{rid}/reject", json={"comment": "not what I meant"})
    assert r.status_code == 200, r.text  # a tenant admin may decide a member's request
    assert r.json()["status"] == "canceled" and r.json()["autonomy"]["decision"]["kind"] == "rejected"
    await autonomy_receiver.wait_for("/reject", lambda got: bool(
        [x for x in got if x.event_type == "request.canceled" and x.request_id == rid]))
    assert events_of(autonomy_receiver, "/reject", rid, ACTION) == []
    entries = (await team.member.get(f"/v1/requests/{rid}/audit")).json()["data"]
    assert [(e["event"], e["actor"]) for e in entries] == [
        ("level_resolved", team.member_key_id), ("rejected", team.admin_key_id)]
    assert entries[1]["detail"]["action_authorized"] is False


async def test_double_approve_is_refused_and_approve_keeps_the_draft(
    team: Team, autonomy_dispatcher: Any,
) -> None:
    await set_tenant(team, "collaborator")
    draft = await _draft(team)
    rid = draft["id"]
    first = await team.member.post(f"/v1/requests/{rid}/approve")
    assert first.status_code == 200 and first.json()["output"]["text"] == draft["output"]["text"]
    second = await team.member.post(f"/v1/requests/{rid}/approve")
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "request_already_decided"
    assert second.json()["error"]["details"]["decision"] == "approved"
