"""Submit → poll → result over HTTP against the real stack (PostgreSQL, Kafka, the real model)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from tests.sse import first_token

pytestmark = pytest.mark.integration

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


async def wait_terminal(api: httpx.AsyncClient, request_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await api.get(f"/v1/requests/{request_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"request {request_id} not terminal: {body}")


async def test_submit_then_poll_returns_the_greedy_answer(api: httpx.AsyncClient, reference: dict) -> None:
    case = reference["cases"][0]
    r = await api.post("/v1/requests", json={"messages": [{"role": "user", "content": case["prompt"]}],
                                            "max_tokens": 48})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/requests/{body['id']}"
    assert body["status"] == "queued"
    done = await wait_terminal(api, body["id"])
    assert done["status"] == "succeeded", done
    assert done["output"]["text"] == case["output_text"]
    assert done["output"]["finish_reason"] == "stop"
    assert done["usage"]["prompt_tokens"] == len(case["input_ids"])
    assert done["usage"]["completion_tokens"] == len(case["output_ids"]) - 1  # the reference counts <|im_end|>
    assert done["timings"]["started_at"] and done["timings"]["finished_at"]


async def test_poll_right_after_202_never_404s(api: httpx.AsyncClient) -> None:
    ids = []
    for _ in range(20):
        r = await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 1})
        assert r.status_code == 202
        poll = await api.get(f"/v1/requests/{r.json()['id']}")
        assert poll.status_code == 200, poll.text
        ids.append(r.json()["id"])
    for rid in ids:
        assert (await wait_terminal(api, rid))["status"] == "succeeded"


async def test_idempotency_key_makes_retries_safe(api: httpx.AsyncClient) -> None:
    key = str(uuid.uuid4())
    body = {"messages": FRANCE, "max_tokens": 4}
    first = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
    again = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again.headers.get("idempotent-replayed") == "true"
    other = await api.post("/v1/requests", json={**body, "max_tokens": 5}, headers={"Idempotency-Key": key})
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    listed = (await api.get("/v1/requests", params={"limit": 100})).json()["data"]
    assert sum(1 for r in listed if r["id"] == first.json()["id"]) == 1


async def test_concurrent_retries_with_one_key_create_one_request(api: httpx.AsyncClient) -> None:
    key = str(uuid.uuid4())
    body = {"messages": FRANCE, "max_tokens": 2}
    answers = await asyncio.gather(*[api.post("/v1/requests", json=body, headers={"Idempotency-Key": key})
                                     for _ in range(8)])
    assert {a.status_code for a in answers} == {202}
    assert len({a.json()["id"] for a in answers}) == 1


async def test_cancel_mid_generation_ends_canceled_with_partial_counts(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/requests", json={
        "messages": [{"role": "user", "content": "Write a very long story about a dragon and a knight."}],
        "max_tokens": 1000})
    rid = r.json()["id"]
    deadline = time.monotonic() + 120
    while (await api.get(f"/v1/requests/{rid}")).json()["status"] != "running":  # stored: the cancel sees it
        assert time.monotonic() < deadline, "never started"
        await asyncio.sleep(0.05)
    await first_token(api, rid)  # it has generated text (a sleep after `running` does not say so)
    c = await api.post(f"/v1/requests/{rid}/cancel")
    assert c.status_code == 202, c.text
    done = await wait_terminal(api, rid)
    assert done["status"] == "canceled"
    # the worker's canceled event carries what it had generated before stopping between steps
    deadline = time.monotonic() + 60
    while not (done["usage"] and done["usage"]["completion_tokens"]):
        assert time.monotonic() < deadline, f"the canceled event's counts never landed: {done}"
        await asyncio.sleep(0.1)
        done = (await api.get(f"/v1/requests/{rid}")).json()
    assert 0 < done["usage"]["completion_tokens"] < 1000
    assert done["output"]["finish_reason"] == "canceled"
    again = await api.post(f"/v1/requests/{rid}/cancel")
    assert again.status_code == 202 and again.json()["status"] == "canceled"


async def test_cancel_of_a_finished_request_is_a_conflict(api: httpx.AsyncClient) -> None:
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 1})).json()["id"]
    assert (await wait_terminal(api, rid))["status"] == "succeeded"
    r = await api.post(f"/v1/requests/{rid}/cancel")
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "request_already_finished"


async def test_another_tenants_request_is_404(api: httpx.AsyncClient, stack, postgres) -> None:  # type: ignore[no-untyped-def]
    from lotabots.db import make_engine
    from tests.conftest import _new_tenant

    engine = make_engine(postgres.url)
    _, other_key = await _new_tenant(engine, "pro")
    await engine.dispose()
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 1})).json()["id"]
    async with httpx.AsyncClient(base_url=stack.gateway_url, headers={"Authorization": f"Bearer {other_key}"}) as other:
        for r in (await other.get(f"/v1/requests/{rid}"), await other.post(f"/v1/requests/{rid}/cancel")):
            assert r.status_code == 404
            assert r.json()["error"]["code"] == "request_not_found"
        assert all(x["id"] != rid for x in (await other.get("/v1/requests")).json()["data"])


async def test_list_paginates_with_a_cursor(api: httpx.AsyncClient) -> None:
    made = [(await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 1})).json()["id"]
            for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await api.get("/v1/requests", params=params)).json()
        seen += [r["id"] for r in page["data"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen[:5] == list(reversed(made))  # newest first, no gaps, no repeats
    assert len(seen) == len(set(seen))


@pytest.mark.parametrize("body, code", [
    ({"messages": []}, "invalid_request"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "invalid_request"),
    ({"messages": FRANCE, "max_tokens": 0}, "invalid_request"),
    ({"messages": FRANCE, "max_tokens": 100000}, "max_tokens_exceeds_tier_cap"),
    ({"messages": FRANCE, "temperature": 9}, "invalid_request"),
    ({"messages": FRANCE, "surprise": 1}, "invalid_request"),
])
async def test_bad_input_is_a_4xx_with_a_stable_code(api: httpx.AsyncClient, body: dict, code: str) -> None:
    r = await api.post("/v1/requests", json=body)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == code


async def test_malformed_json_and_bad_cursor_are_4xx(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/requests", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = await api.get("/v1/requests", params={"cursor": "!!!"})
    assert r.status_code in (200, 422)
    r = await api.get("/v1/requests", params={"limit": 1000})
    assert r.status_code == 422


async def test_missing_or_wrong_credentials_are_401(stack) -> None:  # type: ignore[no-untyped-def]
    async with httpx.AsyncClient(base_url=stack.gateway_url) as anon:
        r = await anon.post("/v1/requests", json={"messages": FRANCE})
        assert r.status_code == 401 and "www-authenticate" in r.headers
        r = await anon.get("/v1/requests", headers={"Authorization": "Bearer lbk_000000000000_" + "x" * 40})
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthenticated"


async def test_seeded_sampling_is_reproducible_and_stop_sequences_cut(api: httpx.AsyncClient) -> None:
    body = {"messages": [{"role": "user", "content": "Give me three tips for writing clear emails."}],
            "max_tokens": 24, "temperature": 0.8, "top_p": 0.9, "seed": 7}
    a, b = [(await api.post("/v1/requests", json=body)).json()["id"] for _ in range(2)]
    ra, rb = await wait_terminal(api, a), await wait_terminal(api, b)
    assert ra["output"]["text"] == rb["output"]["text"]
    stop = {"messages": FRANCE, "max_tokens": 48, "stop": [" is"]}
    rs = await wait_terminal(api, (await api.post("/v1/requests", json=stop)).json()["id"])
    assert rs["output"]["text"] == "The capital of France"
    assert rs["output"]["finish_reason"] == "stop"


async def test_prefer_wait_on_submit_returns_the_finished_request(api: httpx.AsyncClient) -> None:
    r = await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 48},
                       headers={"Prefer": "wait=120"})
    assert r.status_code == 202
    assert r.headers["preference-applied"] == "wait=60"  # capped by long_poll_max_s
    body = r.json()
    assert body["status"] == "succeeded"
    assert body["output"]["text"] == "The capital of France is Paris."
    assert body["usage"]["completion_tokens"] == 7


async def test_get_with_wait_holds_until_terminal_then_answers_once(api: httpx.AsyncClient) -> None:
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 16})).json()["id"]
    r = await api.get(f"/v1/requests/{rid}", params={"wait": 60})
    assert r.status_code == 200
    assert r.json()["status"] == "succeeded"


async def test_wait_returns_the_current_state_when_time_runs_out(api: httpx.AsyncClient) -> None:
    long = {"messages": [{"role": "user", "content": "Write a very long story about the sea."}], "max_tokens": 1000}
    rid = (await api.post("/v1/requests", json=long)).json()["id"]
    r = await api.get(f"/v1/requests/{rid}", params={"wait": 0.5})
    assert r.status_code == 200
    assert r.json()["status"] in ("queued", "running")
    assert (await api.post(f"/v1/requests/{rid}/cancel")).status_code == 202
    # the client's own timeout must outlast the server-side wait (the fixture's default is 30 s)
    canceled = (await api.get(f"/v1/requests/{rid}", params={"wait": 60}, timeout=90)).json()
    assert canceled["status"] == "canceled", canceled


async def test_python_client_submit_wait_cancel_list(stack, pro_tenant) -> None:  # type: ignore[no-untyped-def]
    from lotabots.client import LotaBotsClient, NotFound

    def run() -> None:
        with LotaBotsClient(stack.gateway_url, pro_tenant[1]) as lb:
            req = lb.submit(FRANCE, max_tokens=48, idempotency_key="client-1")
            assert lb.submit(FRANCE, max_tokens=48, idempotency_key="client-1")["id"] == req["id"]
            done = lb.wait(req["id"], timeout=240)
            assert done["output"]["text"] == "The capital of France is Paris."
            assert any(r["id"] == req["id"] for r in lb.list(limit=50)["data"])
            try:
                lb.get("req_does_not_exist")
            except NotFound as exc:
                assert exc.code == "request_not_found"
            else:
                raise AssertionError("expected NotFound")

    await asyncio.to_thread(run)


async def test_a_nul_in_a_submit_field_looked_up_in_postgresql_is_a_422_not_a_500(api: httpx.AsyncClient) -> None:
    """Found by schemathesis (seed 20261207): `webhook_endpoint_id` with a NUL reached a PostgreSQL
    lookup on the submit fast lane, which had no mapping for it."""
    r = await api.post("/v1/requests", json={"messages": [{"role": "user", "content": "hi"}],
                                             "webhook_endpoint_id": "wh\u0000x"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_text"), r.text
