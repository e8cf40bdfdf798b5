"""Token streaming on the native API, end to end: worker → `results.tokens` → gateway → SSE.

Real Kafka, PostgreSQL and the real model. Positions are characters of output text: a `token` event's
`id` is the position after its delta, so `Last-Event-ID` resumes with no gap and no duplicate.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from lotabots.client import LotaBotsClient
from tests.sse import data, open_stream, read_all, tokens_text
from tests.stack import REPO
from tests.test_requests_api import FRANCE, wait_terminal

pytestmark = pytest.mark.integration

STORY = [{"role": "user", "content": "Explain what a Kafka consumer group is in a few sentences."}]


def assert_tiles(events: list[Any], start: int = 0) -> None:
    """Token events tile the text from ``start``: each id is the previous id plus the delta's length."""
    position = start
    for event in events:
        if event.event == "token":
            body = data(event)
            position += len(body["delta"])
            assert int(event.id) == body["position"] == position, (event, position)


async def test_post_with_stream_true_streams_tokens_then_the_finished_request(api: httpx.AsyncClient,
                                                                             reference: dict) -> None:
    case = reference["cases"][0]
    events = await read_all(api, "POST", "/v1/requests", json={
        "messages": [{"role": "user", "content": case["prompt"]}], "max_tokens": 48, "stream": True})
    tokens = [e for e in events if e.event == "token"]
    assert len(tokens) >= 2, events  # progressive, not one blob at the end
    assert [e.event for e in events][-1] == "done"
    assert all(e.event == "token" for e in events[:-1])
    done = data(events[-1])
    assert done["status"] == "succeeded"
    assert tokens_text(events) == done["output"]["text"] == case["output_text"]
    assert_tiles(events)
    # the stream's end comes from the results tail; the stored row follows when the result writer has it
    assert (await wait_terminal(api, done["id"]))["output"]["text"] == case["output_text"]


async def test_accept_event_stream_on_post_streams_too(api: httpx.AsyncClient) -> None:
    async with open_stream(api, "POST", "/v1/requests", json={"messages": FRANCE, "max_tokens": 8},
                           headers={"Accept": "text/event-stream"}) as (response, events):
        assert response.status_code == 200
        assert response.headers["location"].startswith("/v1/requests/")
        assert response.headers["cache-control"].startswith("no-cache")
        got = [e async for e in events]
    assert got[-1].event == "done"
    assert tokens_text(got) == data(got[-1])["output"]["text"]


async def test_reconnecting_with_last_event_id_delivers_every_token_exactly_once(api: httpx.AsyncClient) -> None:
    rid = (await api.post("/v1/requests", json={"messages": STORY, "max_tokens": 120})).json()["id"]
    first: list[Any] = []
    async with open_stream(api, "GET", f"/v1/requests/{rid}/stream") as (response, events):
        assert response.status_code == 200
        async for event in events:
            first.append(event)
            if sum(e.event == "token" for e in first) == 3:
                break  # the client drops the connection mid-generation
    assert first[-1].event == "token"
    last_id = first[-1].id
    assert (await api.get(f"/v1/requests/{rid}")).json()["status"] in ("queued", "running")
    rest = await read_all(api, "GET", f"/v1/requests/{rid}/stream", headers={"Last-Event-ID": last_id})
    final = data(rest[-1])
    assert rest[-1].event == "done" and final["status"] == "succeeded"
    assert tokens_text(first) + tokens_text(rest) == final["output"]["text"]
    assert_tiles(first)
    assert_tiles(rest, int(last_id))
    ids = [int(e.id) for e in first + rest if e.event == "token"]
    assert ids == sorted(set(ids))  # no duplicate, in order


async def test_a_finished_requests_stream_replays_its_text(api: httpx.AsyncClient) -> None:
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 16})).json()["id"]
    final = await wait_terminal(api, rid)
    text = final["output"]["text"]
    replay = await read_all(api, "GET", f"/v1/requests/{rid}/stream")
    assert tokens_text(replay) == text and data(replay[-1])["status"] == "succeeded"
    assert_tiles(replay)
    cut = len(text) // 2
    tail = await read_all(api, "GET", f"/v1/requests/{rid}/stream", params={"after": cut})
    assert tokens_text(tail) == text[cut:]
    assert_tiles(tail, cut)
    nothing = await read_all(api, "GET", f"/v1/requests/{rid}/stream", headers={"Last-Event-ID": str(len(text))})
    assert [e.event for e in nothing] == ["done"]


async def test_disconnecting_does_not_cancel_unless_asked(api: httpx.AsyncClient) -> None:
    async def drop_after_first_token(body: dict[str, Any]) -> str:
        async with open_stream(api, "POST", "/v1/requests", json=body) as (response, events):
            rid = response.headers["location"].rsplit("/", 1)[1]
            async for event in events:
                if event.event == "token":
                    break
        return rid

    kept = await drop_after_first_token({"messages": STORY, "max_tokens": 60, "stream": True})
    canceled = await drop_after_first_token({"messages": STORY, "max_tokens": 200, "stream": True,
                                             "cancel_on_disconnect": True})
    assert (await wait_terminal(api, canceled))["status"] == "canceled"
    done = await wait_terminal(api, kept)
    assert done["status"] == "succeeded" and done["usage"]["completion_tokens"] > 1


async def test_stream_refusals_are_4xx_with_stable_codes(api: httpx.AsyncClient, stack, pro_tenant) -> None:  # type: ignore[no-untyped-def]
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 2})).json()["id"]
    cases = [
        (api.get(f"/v1/requests/{rid}/stream", headers={"Last-Event-ID": "abc"}), 422, "invalid_last_event_id"),
        (api.get(f"/v1/requests/{rid}/stream", headers={"Last-Event-ID": "-4"}), 422, "invalid_last_event_id"),
        (api.get(f"/v1/requests/{rid}/stream", params={"after": -1}), 422, "invalid_request"),
        (api.get("/v1/requests/req_doesnotexist/stream"), 404, "request_not_found"),
        (api.get(f"/v1/requests/{rid}/stream", headers={"Authorization": "Bearer nope"}), 401, None),
        (api.post("/v1/requests", json={"messages": FRANCE, "stream": "yes please"}), 422, "invalid_request"),
    ]
    for call, status, code in cases:
        r = await call
        assert r.status_code == status, r.text
        if code:
            assert r.json()["error"]["code"] == code
    # another tenant's request does not exist for this one
    from lotabots.db import make_engine
    from tests.conftest import _new_tenant

    engine = make_engine(stack.env["LOTABOTS_DATABASE_URL"])
    try:
        _, other_key = await _new_tenant(engine, "pro")
    finally:
        await engine.dispose()
    r = await api.get(f"/v1/requests/{rid}/stream", headers={"Authorization": f"Bearer {other_key}"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "request_not_found"


async def test_python_client_stream_resumes_after_a_dropped_connection(stack, pro_tenant) -> None:  # type: ignore[no-untyped-def]
    """`LotaBotsClient.stream` through a replica that dies mid-stream: it reconnects (to the stack's
    gateway, behind the same address in real life) and the text comes out whole."""
    from tests.limits.gateways import spawn_gateway

    doomed = await asyncio.to_thread(spawn_gateway, stack, "gateway-doomed", REPO / "lotabots" / "tiers.toml")
    with LotaBotsClient(doomed.url, pro_tenant[1]) as lb:
        rid = lb.submit(STORY, max_tokens=150)["id"]
        stream = lb.stream(rid)
        deltas = iter(stream)
        got = [next(deltas) for _ in range(3)]
        doomed.process.kill()  # the replica holding the stream dies
        lb._http.base_url = httpx.URL(stack.gateway_url)  # the load balancer sends the retry elsewhere
        got += list(deltas)
        final = lb.wait(rid)
    assert final["status"] == "succeeded"
    assert "".join(got) == stream.text == final["output"]["text"]
    assert stream.request is not None and stream.request["id"] == rid


async def test_gateway_replica_killed_mid_stream_the_client_resumes_on_another(stack, pro_tenant) -> None:  # type: ignore[no-untyped-def]
    from tests.limits.gateways import spawn_gateway

    doomed = await asyncio.to_thread(spawn_gateway, stack, "gateway-doomed-2", REPO / "lotabots" / "tiers.toml")
    auth = {"Authorization": f"Bearer {pro_tenant[1]}"}
    first: list[Any] = []
    async with httpx.AsyncClient(base_url=doomed.url, headers=auth) as replica_a:
        async with open_stream(replica_a, "POST", "/v1/requests",
                               json={"messages": STORY, "max_tokens": 150, "stream": True}) as (response, events):
            rid = response.headers["location"].rsplit("/", 1)[1]
            try:
                async for event in events:
                    first.append(event)
                    if sum(e.event == "token" for e in first) == 3:
                        doomed.process.kill()
            except httpx.HTTPError:
                pass  # the connection broke with the replica
    assert 3 <= sum(e.event == "token" for e in first) and first[-1].event == "token"
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers=auth) as replica_b:
        rest = await read_all(replica_b, "GET", f"/v1/requests/{rid}/stream", headers={"Last-Event-ID": first[-1].id})
    final = data(rest[-1])
    assert final["status"] == "succeeded"
    assert tokens_text(first) + tokens_text(rest) == final["output"]["text"]


async def test_sigkill_worker_mid_stream_the_stream_finishes_with_the_final_text_billed_once(
    api: httpx.AsyncClient, stack, pro_tenant, usage_pipeline,  # type: ignore[no-untyped-def]
) -> None:
    """The taken-over run writes the same text (greedy): the stream goes on where it was, or, if the
    text differs, says `restart` and starts over. Either way the text equals the final result and the
    usage billed is the final result's, not both runs'."""
    victim = next(p for p in stack.processes if p.name == "inference-pro" and p.alive())
    events: list[Any] = []
    killed_at = None
    async with open_stream(api, "POST", "/v1/requests",
                           json={"messages": STORY, "max_tokens": 200, "stream": True}) as (response, stream):
        rid = response.headers["location"].rsplit("/", 1)[1]
        async for event in stream:
            events.append(event)
            if killed_at is None and sum(e.event == "token" for e in events) == 4:
                killed_at = len(events)
                victim.kill()
                stack.processes.remove(victim)
                stack.spawn("inference-pro", "worker", "inference", "--tier", "pro")
    assert killed_at is not None and events[-1].event == "done"
    final = data(events[-1])
    assert final["id"] == rid and final["status"] == "succeeded", final
    assert tokens_text(events) == final["output"]["text"]
    assert sum(e.event == "token" for e in events[killed_at:]) >= 1  # the new run's text came as tokens
    expected = (1, final["usage"]["prompt_tokens"], final["usage"]["completion_tokens"])
    deadline = time.monotonic() + 120
    billed: tuple[int, int, int] | None = None
    while time.monotonic() < deadline:
        totals = (await api.get("/v1/usage")).json()["totals"]
        billed = (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"])
        if billed == expected:
            break
        await asyncio.sleep(0.5)
    assert billed == expected, (billed, expected, json.dumps(final))
