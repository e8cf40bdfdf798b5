"""Reading Server-Sent Events in tests, over a real HTTP connection (the parser is the client's)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from lotabots.client import SseEvent, SseParser


@asynccontextmanager
async def open_stream(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> AsyncIterator[
        tuple[httpx.Response, AsyncIterator[SseEvent]]]:
    """The response and its events (comments skipped), as they arrive."""
    async with client.stream(method, url, timeout=httpx.Timeout(30, read=300), **kw) as response:
        async def events() -> AsyncIterator[SseEvent]:
            parser = SseParser()
            async for line in response.aiter_lines():
                event = parser.feed(line)
                if event is not None:
                    yield event
        yield response, events()


async def read_all(client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> list[SseEvent]:
    """Every event of a stream, up to the server closing it."""
    async with open_stream(client, method, url, **kw) as (response, events):
        assert response.status_code == 200, (await response.aread()).decode()
        assert response.headers["content-type"].startswith("text/event-stream")
        return [event async for event in events]


async def first_token(client: httpx.AsyncClient, request_id: str, timeout: float = 120) -> SseEvent:
    """The first `token` event of the request's native stream: the worker is generating it now (it has
    produced text), which a `running` status or a sleep after it does not say."""
    seen: list[str] = []
    try:
        async with asyncio.timeout(timeout):
            async with open_stream(client, "GET", f"/v1/requests/{request_id}/stream") as (response, events):
                assert response.status_code == 200, (await response.aread()).decode()
                async for event in events:
                    seen.append(event.event)
                    if event.event == "token":
                        return event
    except TimeoutError:
        raise AssertionError(f"no token of {request_id} within {timeout}s; events seen: {seen}") from None
    raise AssertionError(f"the stream of {request_id} ended before any token; events seen: {seen}")


def data(event: SseEvent) -> Any:
    return json.loads(event.data)


def tokens_text(events: list[SseEvent]) -> str:
    """The text a native stream's events add up to, honouring `restart` (the text starts over)."""
    text = ""
    for event in events:
        if event.event == "restart":
            text = ""
        elif event.event == "token":
            text += data(event)["delta"]
    return text
