"""The OpenAI-compatible surface, driven by the official `openai` SDK against the real stack.

Real Kafka, PostgreSQL and the real model; every call goes the way of `POST /v1/requests` (auth, tier,
limits, usage facts, autonomy), so what the SDK gets is checked against the native API too.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from tests.conftest import _new_tenant
from tests.test_requests_api import FRANCE, wait_terminal

pytestmark = pytest.mark.integration

MODEL = "smollm2-135m-instruct"
STORY = [{"role": "user", "content": "Explain what a Kafka consumer group is in a few sentences."}]


@pytest.fixture
async def client(stack, pro_tenant) -> AsyncIterator[AsyncOpenAI]:  # type: ignore[no-untyped-def]
    async with AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key=pro_tenant[1], max_retries=0,
                           timeout=300) as sdk:
        yield sdk


async def billed(api: httpx.AsyncClient, expected: tuple[int, int, int], timeout: float = 120) -> tuple[int, ...]:
    """The tenant's billed (requests, prompt, completion) once it equals ``expected`` (or the last seen)."""
    deadline = time.monotonic() + timeout
    seen: tuple[int, ...] = ()
    while time.monotonic() < deadline:
        totals = (await api.get("/v1/usage")).json()["totals"]
        seen = (totals["requests"], totals["prompt_tokens"], totals["completion_tokens"])
        if seen == expected:
            break
        await asyncio.sleep(0.5)
    return seen


# ---- chat completions -----------------------------------------------------------------------------
async def test_chat_completion_returns_the_reference_greedy_text(client: AsyncOpenAI, api: httpx.AsyncClient,
                                                                 reference: dict) -> None:
    case = reference["cases"][0]
    completion = await client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": case["prompt"]}], temperature=0, max_tokens=48)
    assert completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == case["output_text"]
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == len(case["input_ids"])
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    native = await wait_terminal(api, completion.id)  # the completion IS a request (stored as the writer lands it)
    assert native["status"] == "succeeded" and native["output"]["text"] == case["output_text"]
    assert native["usage"]["completion_tokens"] == completion.usage.completion_tokens
    listed = (await api.get("/v1/requests", params={"limit": 10})).json()["data"]
    assert completion.id in {r["id"] for r in listed}


async def test_text_parts_system_messages_stop_and_max_completion_tokens(client: AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(
        model=f"{MODEL}-fp32", temperature=0, max_completion_tokens=5,
        messages=[{"role": "developer", "content": "You are terse."},
                  {"role": "user", "content": [{"type": "text", "text": "What is the capital "},
                                               {"type": "text", "text": "of France?"}]}])
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 5
    stopped = await client.chat.completions.create(model=MODEL, messages=FRANCE, temperature=0, max_tokens=40,
                                                   stop=["France"])
    assert stopped.choices[0].finish_reason == "stop"
    assert "France" not in (stopped.choices[0].message.content or "")


async def test_streamed_chat_deltas_add_up_to_the_result_and_usage_is_what_is_billed(
    client: AsyncOpenAI, api: httpx.AsyncClient, usage_pipeline,  # type: ignore[no-untyped-def]
) -> None:
    stream = await client.chat.completions.create(model=MODEL, messages=STORY, temperature=0, max_tokens=60,
                                                  stream=True, stream_options={"include_usage": True})
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text_chunks = [c for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(text_chunks) >= 2  # progressive
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    last = chunks[-1]  # as the spec says: usage on a final chunk with no choices
    assert last.choices == [] and last.usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    native = await wait_terminal(api, last.id)
    assert text == native["output"]["text"]
    assert finish == [native["output"]["finish_reason"]]
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (
        native["usage"]["prompt_tokens"], native["usage"]["completion_tokens"])
    expected = (1, last.usage.prompt_tokens, last.usage.completion_tokens)
    assert await billed(api, expected) == expected


async def test_models_list_and_retrieve(client: AsyncOpenAI) -> None:
    ids = [m.id async for m in client.models.list()]
    assert ids == [MODEL, f"{MODEL}-fp32"]
    model = await client.models.retrieve(f"{MODEL}-fp32")
    assert model.id == f"{MODEL}-fp32" and model.object == "model" and model.owned_by == "lotabots"
    with pytest.raises(openai.NotFoundError) as missing:
        await client.models.retrieve("gpt-4o")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError) as unknown:
        await client.chat.completions.create(model="gpt-4o", messages=FRANCE)
    assert unknown.value.code == "model_not_found" and unknown.value.param == "model"


async def test_a_bad_key_raises_authentication_error(stack) -> None:  # type: ignore[no-untyped-def]
    async with AsyncOpenAI(base_url=f"{stack.gateway_url}/v1", api_key="lb_not_a_key", max_retries=0) as sdk:
        with pytest.raises(openai.AuthenticationError) as raised:
            await sdk.chat.completions.create(model=MODEL, messages=FRANCE)
        with pytest.raises(openai.AuthenticationError):
            await sdk.models.list()
    assert raised.value.status_code == 401 and raised.value.type == "authentication_error"


@pytest.mark.parametrize(("params", "param"), [
    ({"n": 2}, "n"),
    ({"temperature": 3.5}, "temperature"),
    ({"response_format": {"type": "json_object"}}, "response_format.type"),
    ({"presence_penalty": 0.5}, "presence_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream_options": {"include_usage": True}}, None),  # only with stream: true
    ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role"),
    ({"messages": []}, "messages"),
])
async def test_an_invalid_parameter_raises_bad_request_with_param(client: AsyncOpenAI, params: dict[str, Any],
                                                                  param: str | None) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        await client.chat.completions.create(**{"model": MODEL, "messages": FRANCE, **params})
    assert raised.value.status_code == 400
    assert raised.value.type == "invalid_request_error" and raised.value.code == "invalid_request"
    if param is not None:
        assert raised.value.param == param, raised.value.body


async def test_rate_limited_calls_raise_rate_limit_error_and_the_sdk_retry_honours_retry_after(
    stack, postgres,  # type: ignore[no-untyped-def]
) -> None:
    from gateway.tenants import create_tenant
    from lotabots.db import make_engine
    from lotabots.tiers import load_tier_config
    from tests.limits.gateways import spawn_gateway
    from tests.stack import REPO

    engine = make_engine(postgres.url)
    try:
        _, key = await create_tenant(engine, load_tier_config(REPO / "lotabots" / "tiers.toml"), "rl", "pro")
    finally:
        await engine.dispose()
    gateway = await asyncio.to_thread(
        spawn_gateway, stack, "gateway-openai-rl", REPO / "lotabots" / "tiers.toml",
        LOTABOTS_RATE_LIMIT_KEY_OVERRIDES=json.dumps({key.id: {"requests_per_minute": 6}}))
    attempts: list[tuple[float, int, str | None]] = []

    async def record(response: httpx.Response) -> None:
        attempts.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))

    try:
        async with httpx.AsyncClient(event_hooks={"response": [record]}, timeout=300) as http, \
                AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key.key, max_retries=0, http_client=http) as sdk:
            refused = None
            for _ in range(12):  # the burst, then a refusal
                try:
                    await sdk.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=1)
                except openai.RateLimitError as exc:
                    refused = exc
                    break
            assert refused is not None, attempts
            assert refused.status_code == 429 and refused.type == "rate_limit_error"
            retry_after = int(refused.response.headers["retry-after"])
            assert 1 <= retry_after <= 60
            attempts.clear()
            done = await sdk.with_options(max_retries=2).chat.completions.create(
                model=MODEL, messages=FRANCE, max_tokens=1)
        assert done.choices[0].finish_reason == "length"
        assert [a[1] for a in attempts] == [429, 200]  # one refusal, then the SDK's retry got through
        assert attempts[1][0] - attempts[0][0] >= int(attempts[0][2] or 0) - 0.5  # it waited Retry-After
    finally:
        gateway.process.stop()


async def test_autonomy_levels_that_need_a_human_or_no_ai_answer_documented_errors(
    client: AsyncOpenAI, api: httpx.AsyncClient,
) -> None:
    with pytest.raises(openai.PermissionDeniedError) as no_ai:
        await client.chat.completions.create(model=MODEL, messages=FRANCE, extra_body={"autonomy_level": "no_ai"})
    assert no_ai.value.code == "autonomy_no_ai"
    with pytest.raises(openai.ConflictError) as waits:
        await client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=4,
                                             extra_body={"autonomy_level": "collaborator"})
    assert waits.value.code == "approval_required"
    rid = waits.value.message.split("request ", 1)[1].split(" ", 1)[0]
    assert (await api.get(f"/v1/requests/{rid}")).json()["status"] in ("queued", "running", "awaiting_approval")
    assisted = await client.chat.completions.create(model=MODEL, messages=FRANCE, max_tokens=48, temperature=0,
                                                    extra_body={"autonomy_level": "assisted"})
    native = await wait_terminal(api, assisted.id)
    assert native["autonomy"]["level"] == "assisted"
    assert assisted.choices[0].message.content == native["output"]["text"]


# ---- responses (background mode) ------------------------------------------------------------------
async def _until(client: AsyncOpenAI, response_id: str, statuses: set[str], timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        response = await client.responses.retrieve(response_id)
        if response.status in statuses:
            return response
        assert time.monotonic() < deadline, response
        await asyncio.sleep(0.2)


async def test_background_response_create_retrieve_completed(client: AsyncOpenAI, api: httpx.AsyncClient) -> None:
    created = await client.responses.create(model=MODEL, input="What is the capital of France?", background=True,
                                            temperature=0, max_output_tokens=24)
    assert created.status == "queued" and created.background is True
    done = await _until(client, created.id, {"completed", "incomplete", "failed"})
    native = await wait_terminal(api, created.id)  # one id space
    assert native["status"] == "succeeded"
    assert done.output_text == native["output"]["text"]
    assert done.usage is not None and done.usage.output_tokens == native["usage"]["completion_tokens"]


async def test_background_response_cancel(client: AsyncOpenAI) -> None:
    created = await client.responses.create(model=MODEL, input=STORY, background=True, max_output_tokens=400)
    cancelled = await client.responses.cancel(created.id)
    assert cancelled.id == created.id
    final = await _until(client, created.id, {"cancelled", "completed", "incomplete", "failed"})
    assert final.status == "cancelled"
    with pytest.raises(openai.BadRequestError):
        done = await client.responses.create(model=MODEL, input="hi", max_output_tokens=2)
        await client.responses.cancel(done.id)


async def test_response_stream_resumes_from_starting_after_with_exactly_the_missing_events(
    client: AsyncOpenAI,
) -> None:
    stream = await client.responses.create(model=MODEL, input=STORY, background=True, stream=True,
                                           temperature=0, max_output_tokens=80)
    first = []
    async for event in stream:
        first.append(event)
        if sum(e.type == "response.output_text.delta" for e in first) == 3:
            break
    await stream.close()
    response_id = first[0].response.id
    cut = first[-1].sequence_number
    resumed = [e async for e in await client.responses.retrieve(response_id, stream=True, starting_after=cut)]
    assert resumed[-1].type == "response.completed"
    replay = [e async for e in await client.responses.retrieve(response_id, stream=True)]

    def key(e: Any) -> tuple[Any, ...]:
        return e.type, e.sequence_number, getattr(e, "delta", None)

    assert [key(e) for e in first + resumed] == [key(e) for e in replay]
    numbers = [e.sequence_number for e in first + resumed]
    assert numbers == sorted(set(numbers))
    text = "".join(e.delta for e in first + resumed if e.type == "response.output_text.delta")
    assert text == resumed[-1].response.output_text


async def test_non_background_response_returns_the_finished_response(client: AsyncOpenAI) -> None:
    done = await client.responses.create(model=MODEL, input=[{"role": "user", "content": "What is 2+2?"}],
                                         instructions="Answer briefly.", temperature=0, max_output_tokens=16)
    assert done.status in ("completed", "incomplete") and done.output_text
    assert done.instructions == "Answer briefly."


# ---- bad input on every new route ----------------------------------------------------------------
async def test_bad_input_on_every_openai_route_is_4xx_in_openais_error_shape(stack, pro_tenant, api) -> None:  # type: ignore[no-untyped-def]
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 1})).json()["id"]
    await wait_terminal(api, rid)
    chat = {"model": MODEL, "messages": FRANCE}
    cases: list[tuple[str, str, Any, int]] = [
        ("POST", "/v1/chat/completions", b"{not json", 400),
        ("POST", "/v1/chat/completions", [1, 2], 400),
        ("POST", "/v1/chat/completions", {"messages": FRANCE}, 400),
        ("POST", "/v1/chat/completions", {**chat, "tools": [{"type": "function"}]}, 400),
        ("POST", "/v1/chat/completions", {**chat, "messages": [{"role": "user", "content": 5}]}, 400),
        ("POST", "/v1/chat/completions", {**chat, "stop": ["a", "b", "c", "d", "e"]}, 400),
        ("POST", "/v1/chat/completions", {**chat, "logprobs": True}, 400),
        ("POST", "/v1/chat/completions", {**chat, "model": "nope"}, 404),
        ("POST", "/v1/responses", b"", 400),
        ("POST", "/v1/responses", {"model": MODEL}, 400),
        ("POST", "/v1/responses", {"model": MODEL, "input": "x", "tools": [{"type": "web_search"}]}, 400),
        ("POST", "/v1/responses", {"model": MODEL, "input": "x", "text": {"format": {"type": "json_schema"}}}, 400),
        ("POST", "/v1/responses", {"model": "nope", "input": "x"}, 404),
        ("GET", "/v1/responses/resp_nope", None, 404),
        ("GET", f"/v1/responses/{rid}?stream=true&starting_after=-5", None, 400),
        ("GET", f"/v1/responses/{rid}?stream=maybe", None, 400),
        ("POST", f"/v1/responses/{rid}/cancel", None, 400),
        ("POST", "/v1/responses/resp_nope/cancel", None, 404),
        ("GET", "/v1/models/nope", None, 404),
        ("DELETE", "/v1/models", None, 405),
    ]
    for method, path, body, status in cases:
        kw: dict[str, Any] = {"content": body} if isinstance(body, bytes) else ({"json": body} if body is not None else {})
        if isinstance(body, bytes):
            kw["headers"] = {"Content-Type": "application/json"}
        r = await api.request(method, path, **kw)
        assert r.status_code == status, (method, path, body, r.status_code, r.text)
        error = r.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}, r.text
        assert error["message"] and error["code"]
    # another tenant's response is not found, and reads need a key
    from lotabots.db import make_engine

    engine = make_engine(stack.env["LOTABOTS_DATABASE_URL"])
    try:
        _, other = await _new_tenant(engine, "pro")
    finally:
        await engine.dispose()
    r = await api.get(f"/v1/responses/{rid}", headers={"Authorization": f"Bearer {other}"})
    assert r.status_code == 404 and r.json()["error"]["type"] == "invalid_request_error"
    r = await api.get(f"/v1/responses/{rid}", headers={"Authorization": ""})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
