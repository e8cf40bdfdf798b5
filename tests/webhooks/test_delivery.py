"""Webhook delivery end to end: gateway, Kafka, the real model, the dispatcher process, a real receiver.

Signatures are verified with the `standardwebhooks` package (independent of the dispatcher's code).
The dispatcher runs a compressed retry schedule (tests/webhooks/conftest.py: ~0.5s, 1.5s, 5s).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from tests.stack import StackProcess
from tests.webhooks.conftest import JITTER, SCHEDULE_S, create_endpoint, dead_letters, submit, wait_until
from tests.webhooks.receiver import Answer, Received, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("dispatcher")]

TOO_LONG = [{"role": "user", "content": "hello " * 5000}, {"role": "assistant", "content": "hello " * 5000},
            {"role": "user", "content": "hello " * 5000}]  # far past the model's context: the request fails


def _path() -> str:
    return f"hooks/{uuid.uuid4().hex[:12]}"


def _verified(secret: str, got: Received) -> dict:
    return Webhook(secret).verify(got.body, got.headers)  # raises unless authentic and fresh


async def _delivery(api: httpx.AsyncClient, webhook_id: str) -> dict:
    r = await api.get(f"/v1/webhooks/deliveries/{webhook_id}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_succeeded_failed_and_canceled_events_arrive_signed(hook_api: httpx.AsyncClient,
                                                                  receiver: Receiver) -> None:
    path = _path()
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["completed"],
                                     description="terminal events")
    assert endpoint["secret"].startswith("whsec_")
    assert "secret" not in (await hook_api.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()  # shown once
    named = {"webhook_endpoint_id": endpoint["id"]}
    ok = await submit(hook_api, **named)
    failing = await submit(hook_api, **named, messages=TOO_LONG, max_tokens=1024)
    canceled = await submit(hook_api, **named, max_tokens=1024)
    assert (await hook_api.post(f"/v1/requests/{canceled}/cancel")).status_code == 202

    wanted = {ok: "request.succeeded", failing: "request.failed", canceled: "request.canceled"}
    got = await receiver.wait_for(path, lambda rs: {(r.request_id, r.event_type) for r in rs} >= set(wanted.items()))
    assert {r.event_type for r in got} <= set(wanted.values())  # `completed` filters out `started`
    for item in got:
        payload = _verified(endpoint["secret"], item)
        assert payload["type"] == wanted[item.request_id]
        assert payload["data"]["status"] == payload["type"].removeprefix("request.")
        assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
        # the payload is the request resource the poll endpoint returns (once the writer has caught up)
        await _stored_as(hook_api, item.request_id, _without_timings(payload["data"]))
        delivery = await _delivery(hook_api, item.webhook_id)
        assert delivery["request_id"] == item.request_id and delivery["endpoint_id"] == endpoint["id"]
    by_type = {r.event_type: r.json["data"] for r in got}
    assert by_type["request.succeeded"]["output"]["text"]
    assert by_type["request.failed"]["error"]["code"]


async def test_a_direct_webhook_url_gets_every_event_signed_with_the_tenant_secret(
    hook_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    path = _path()
    rid = await submit(hook_api, webhook=receiver.url(path))
    secret = (await hook_api.get("/v1/webhooks/default-secret")).json()["secret"]
    got = await receiver.wait_for(path, lambda rs: {r.event_type for r in rs} >= {"request.started",
                                                                                   "request.succeeded"})
    assert {r.request_id for r in got} == {rid}
    for item in got:
        assert _verified(secret, item)["data"]["id"] == rid
    listed = (await hook_api.get("/v1/webhooks/deliveries", params={"request_id": rid})).json()["data"]
    assert {d["event_type"] for d in listed} == {"request.started", "request.succeeded"}
    assert {d["id"] for d in listed} == {r.webhook_id for r in got}


async def test_500_twice_then_200_gives_three_attempts_with_one_webhook_id_and_growing_back_off(
    hook_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    path = _path()
    receiver.script(path, Answer(500), Answer(500), Answer(200))
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["succeeded"])
    await submit(hook_api, webhook_endpoint_id=endpoint["id"])
    got = await receiver.wait_for(path, lambda rs: any(r.answered == 200 for r in rs))
    assert [r.answered for r in got] == [500, 500, 200]
    assert len({r.webhook_id for r in got}) == 1
    for item in got:
        _verified(endpoint["secret"], item)
    # the dispatcher never delivers before the scheduled delay, which grows between attempts
    gaps = [b.at - a.at for a, b in zip(got, got[1:], strict=False)]
    assert gaps[0] >= SCHEDULE_S[0] * (1 - JITTER) and gaps[1] >= SCHEDULE_S[1] * (1 - JITTER)
    delivery = await wait_until(lambda: _succeeded(hook_api, got[0].webhook_id))
    log = delivery["attempt_log"]
    assert [a["status_code"] for a in log] == [500, 500, 200] and delivery["attempts"] == 3
    waits = [(datetime.fromisoformat(a["next_attempt_at"]) - datetime.fromisoformat(a["attempted_at"]))
             .total_seconds() for a in log[:2]]
    assert waits[1] > waits[0]
    assert all(a["latency_ms"] >= 0 and a["response_body"] for a in log)
    per_endpoint = (await hook_api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries")).json()["data"]
    assert [d["id"] for d in per_endpoint] == [got[0].webhook_id] and per_endpoint[0]["status"] == "succeeded"
    failed_only = await hook_api.get(f"/v1/webhooks/endpoints/{endpoint['id']}/deliveries", params={"status": "failed"})
    assert failed_only.json()["data"] == []


async def _stored_as(api: httpx.AsyncClient, request_id: str, expected: dict, timeout: float = 120) -> dict:
    """Poll until the stored request equals `expected` (timings aside). A terminal status alone is not the
    writer having caught up: a request canceled while queued is `canceled` at once (the gateway's own
    write, no counts), and the worker's `canceled` event with its counts and text is stored after it."""
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        body = (await api.get(f"/v1/requests/{request_id}")).json()
        if _without_timings(body) == expected:
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"{request_id} never stored as its webhook payload: polled {body}, payload {expected}")


def _without_timings(resource: dict) -> dict:
    return {k: v for k, v in resource.items() if k != "timings"}


async def _succeeded(api: httpx.AsyncClient, webhook_id: str) -> dict | None:
    delivery = await _delivery(api, webhook_id)
    return delivery if delivery["status"] == "succeeded" else None


async def test_retry_after_on_429_is_honoured(hook_api: httpx.AsyncClient, receiver: Receiver) -> None:
    path = _path()
    receiver.script(path, Answer(429, {"Retry-After": "3"}), Answer(200))
    await submit(hook_api, webhook=receiver.url(path), webhook_events_filter=["succeeded"])
    got = await receiver.wait_for(path, lambda rs: any(r.answered == 200 for r in rs))
    assert [r.answered for r in got] == [429, 200]
    assert got[1].at - got[0].at >= 3.0  # the schedule alone would have retried after ~0.5s


async def test_410_disables_the_endpoint_with_a_reason_and_dead_letters_the_delivery(
    hook_api: httpx.AsyncClient, receiver: Receiver, kafka
) -> None:
    path = _path()
    receiver.script(path, Answer(410))
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["succeeded"])
    await submit(hook_api, webhook_endpoint_id=endpoint["id"])
    (first,) = await receiver.wait_for(path, lambda rs: len(rs) >= 1)

    async def disabled() -> dict | None:
        body = (await hook_api.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
        return body if not body["enabled"] else None

    shown = await wait_until(disabled)
    assert "410" in shown["disabled_reason"] and shown["disabled_at"]
    delivery = await _delivery(hook_api, first.webhook_id)
    assert delivery["status"] == "failed" and delivery["attempts"] == 1 and delivery["last_status_code"] == 410
    letters = await dead_letters(kafka.bootstrap, first.webhook_id)
    assert letters and letters[0]["error_code"] == "endpoint_gone" and letters[0]["url"] == receiver.url(path)
    # a disabled endpoint cannot be named, and receives nothing more
    r = await hook_api.post("/v1/requests", json={"messages": [{"role": "user", "content": "x"}],
                                                  "webhook_endpoint_id": endpoint["id"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_endpoint_disabled"
    assert len(receiver.at(path)) == 1


async def test_a_rotated_secret_signs_alongside_the_old_one_until_the_overlap_ends(
    hook_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    path = _path()
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["succeeded"])
    old = endpoint["secret"]
    rotated = (await hook_api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret",
                                   json={"overlap_s": 3600})).json()
    new = rotated["secret"]
    assert new != old and len(rotated["secrets"]) == 2
    first_id = await submit(hook_api, webhook_endpoint_id=endpoint["id"])
    (during,) = await receiver.wait_for(path, lambda rs: len(rs) >= 1)
    assert during.request_id == first_id
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    _verified(old, during)
    _verified(new, during)

    # rotating again with no overlap: only the newest secret signs from now on
    newest = (await hook_api.post(f"/v1/webhooks/endpoints/{endpoint['id']}/rotate-secret",
                                  json={"overlap_s": 0})).json()["secret"]
    await submit(hook_api, webhook_endpoint_id=endpoint["id"])
    after = (await receiver.wait_for(path, lambda rs: len(rs) >= 2))[1]
    _verified(newest, after)
    for stale in (old, new):
        with pytest.raises(WebhookVerificationError):
            _verified(stale, after)


async def test_an_endpoint_failing_continuously_is_disabled_and_says_why(
    hook_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    path = _path()
    receiver.script(path, Answer(500))
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["succeeded"])
    await submit(hook_api, webhook_endpoint_id=endpoint["id"])

    async def disabled() -> dict | None:
        body = (await hook_api.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).json()
        return body if not body["enabled"] else None

    shown = await wait_until(disabled, timeout=180)
    assert "failed since" in shown["disabled_reason"] and "HTTP 500" in shown["disabled_reason"]
    assert shown["failing_since"] is not None
    assert all(r.answered == 500 for r in receiver.at(path)) and len(receiver.at(path)) >= 2


async def test_replay_resends_failed_deliveries_with_the_same_webhook_id(
    hook_api: httpx.AsyncClient, receiver: Receiver, kafka
) -> None:
    path = _path()
    attempts = len(SCHEDULE_S) + 1
    receiver.script(path, *[Answer(500)] * (2 * attempts), Answer(200))
    since = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    ids = [await submit(hook_api, webhook=receiver.url(path), webhook_events_filter=["succeeded"])
           for _ in range(2)]
    got = await receiver.wait_for(path, lambda rs: len(rs) >= 2 * attempts)
    webhook_ids = {r.webhook_id for r in got}
    assert len(webhook_ids) == 2 and {r.request_id for r in got} == set(ids)

    async def all_failed() -> bool:
        return all([(await _delivery(hook_api, w))["status"] == "failed" for w in webhook_ids])

    await wait_until(all_failed)
    for webhook_id in webhook_ids:  # the last attempt failed: dead-lettered with what was sent
        (letter,) = await dead_letters(kafka.bootstrap, webhook_id)
        assert letter["error_code"] == "retries_exhausted" and letter["attempts"] == attempts
        assert letter["last_status_code"] == 500 and letter["source_topic"].startswith("webhooks.retry.")
    one = sorted(webhook_ids)[0]
    r = await hook_api.post(f"/v1/webhooks/deliveries/{one}/replay")
    assert r.status_code == 202, r.text
    replayed = await receiver.wait_for(path, lambda rs: any(x.answered == 200 for x in rs))
    assert replayed[-1].webhook_id == one
    done = await wait_until(lambda: _succeeded(hook_api, one))
    assert done["attempt_log"][-1]["replay"] is True and done["attempts"] == attempts + 1

    r = await hook_api.post("/v1/webhooks/deliveries/replay-failed", json={"since": since})
    assert r.status_code == 202 and r.json() == {"replayed": 1}
    other = (webhook_ids - {one}).pop()
    await wait_until(lambda: _succeeded(hook_api, other))
    assert [x.webhook_id for x in receiver.at(path)].count(other) == attempts + 1
    first_page = (await hook_api.get("/v1/webhooks/deliveries", params={"limit": 1})).json()
    second_page = (await hook_api.get("/v1/webhooks/deliveries",
                                      params={"limit": 1, "cursor": first_page["next_cursor"]})).json()
    assert {d["id"] for d in first_page["data"] + second_page["data"]} == webhook_ids
    assert second_page["next_cursor"] is None


async def test_webhook_resources_are_scoped_to_their_tenant(
    hook_api: httpx.AsyncClient, hook_gateway: str, receiver: Receiver, postgres
) -> None:
    from lotabots.db import make_engine
    from tests.conftest import _new_tenant

    endpoint = await create_endpoint(hook_api, receiver.url(_path()))
    engine = make_engine(postgres.url)
    try:
        _, other_key = await _new_tenant(engine, "pro")
    finally:
        await engine.dispose()
    async with httpx.AsyncClient(base_url=hook_gateway, headers={"Authorization": f"Bearer {other_key}"}) as other:
        assert (await other.get(f"/v1/webhooks/endpoints/{endpoint['id']}")).status_code == 404
        assert (await other.get("/v1/webhooks/endpoints")).json()["data"] == []
        r = await other.post("/v1/requests", json={"messages": [{"role": "user", "content": "x"}],
                                                   "webhook_endpoint_id": endpoint["id"]})
        assert r.status_code == 422 and r.json()["error"]["code"] == "webhook_endpoint_not_found"
        assert (await other.delete(f"/v1/webhooks/endpoints/{endpoint['id']}")).status_code == 404


def test_the_dispatcher_is_still_running(dispatcher: StackProcess) -> None:
    assert dispatcher.alive()
