"""`GET /v1/requests/{id}/stream`: a request's output as Server-Sent Events (docs/openai.md#native-streaming).

Events: `token` (`id:` the text position after the delta, data `{"delta", "position"}`), `restart` (a run
taken over by another worker wrote different text: the text starts again at position 0), one final
`done` whose data is the request resource, and `: keep-alive` comments while nothing happens. A client
resumes with `Last-Event-ID` (or `?after=N`); a finished request's stream replays its stored text.
Disconnecting does not cancel the request unless it asked (`cancel_on_disconnect=true`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request

from gateway.errors import ApiError
from gateway.openapi_docs import SSE_EVENT, errors
from gateway.request_models import request_resource
from gateway.security import Principal, authorize
from gateway.sse import KEEPALIVE, EventStreamResponse, sse_event
from gateway.text_follower import Delta, Done, KeepAlive, Restart, StreamItem, follow_output
from gateway.token_stream import TokenStreamTail

router = APIRouter(prefix="/v1/requests", tags=["requests"])
_cancels: set[asyncio.Task[Any]] = set()  # cancel-on-disconnect tasks in flight (the loop keeps weak refs)


async def start(app: FastAPI) -> None:
    app.state.token_tail = TokenStreamTail(app.state.settings)
    await app.state.token_tail.start()
    app.state.results_tail.subscribe(app.state.token_tail.on_result)


async def stop(app: FastAPI) -> None:
    await app.state.token_tail.stop()


def resume_position(last_event_id: str | None, after: int | None) -> int:
    """Where a resumed stream starts: `?after=N` wins over `Last-Event-ID` (both are text positions)."""
    if after is not None:
        return after
    if not last_event_id:
        return 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must be a text position (an integer)") from None
    if value < 0:
        raise ApiError(422, "invalid_last_event_id", "Last-Event-ID must not be negative")
    return value


def output_items(request: Request, who: Principal, resource: dict[str, Any],
                 after: int) -> AsyncIterator[list[StreamItem]]:
    """The follower over this replica's tails for one of the caller's requests."""
    state = request.app.state
    service = state.request_service
    return follow_output(state.token_tail, state.results_tail, lambda: service.get(who, resource["id"]),
                         resource, after, state.settings.stream_keepalive_s)


def cancel_when_gone(request: Request, who: Principal, request_id: str) -> Callable[[], None]:
    """``on_disconnect`` for `cancel_on_disconnect`: cancel the request if it is still going."""
    service = request.app.state.request_service

    async def cancel() -> None:
        try:
            await service.cancel(who, request_id)
        except ApiError:
            pass  # already finished: nothing to cancel

    def on_disconnect() -> None:
        task = asyncio.get_running_loop().create_task(cancel())
        _cancels.add(task)
        task.add_done_callback(_cancels.discard)

    return on_disconnect


async def _native(items: AsyncIterator[list[StreamItem]]) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    async for batch in items:
        out = []
        for item in batch:
            if isinstance(item, Delta):
                out.append(sse_event(orjson.dumps({"delta": item.text, "position": item.end}), "token", str(item.end)))
            elif isinstance(item, KeepAlive):
                out.append(KEEPALIVE)
            elif isinstance(item, Restart):
                out.append(sse_event(orjson.dumps({"reason": item.reason, "position": 0}), "restart"))
            elif isinstance(item, Done):
                out.append(sse_event(orjson.dumps(item.resource), "done"))
        yield b"".join(out)


def native_stream(request: Request, who: Principal, resource: dict[str, Any], after: int = 0, *,
                  cancel_on_disconnect: bool = False, status_code: int = 200,
                  headers: dict[str, str] | None = None) -> EventStreamResponse:
    """The SSE answer for one request (also what `POST /v1/requests` with `"stream": true` returns)."""
    on_disconnect = cancel_when_gone(request, who, resource["id"]) if cancel_on_disconnect else None
    return EventStreamResponse(_native(output_items(request, who, resource, after)), status_code=status_code,
                               headers=headers, on_disconnect=on_disconnect)


@router.get(
    "/{request_id}/stream", response_model=None, response_class=EventStreamResponse,
    openapi_extra={"parameters": [{"name": "Last-Event-ID", "in": "header", "required": False,
                                   "schema": {"type": "string"},
                                   "description": "resume after this text position (an SSE client sends it)"}]},
    responses={200: {"content": {"text/event-stream": {"schema": SSE_EVENT, "example":
                                 'retry: 2000\n\nevent: token\nid: 3\ndata: {"delta":"Hi!","position":3}\n\n'}},
                     "description": "`token` events, `restart` if another worker's run wrote different text, "
                                    "then one `done` event whose data is the request"},
               **errors(422, e422="`Last-Event-ID` is not a non-negative integer (`invalid_last_event_id`), "
                                  "or an invalid parameter")},
)
async def stream_request(
    request_id: str, request: Request,
    after: Annotated[int | None, Query(ge=0, description="resume after this text position")] = None,
    cancel_on_disconnect: Annotated[bool, Query(description="cancel the request if the client leaves")] = False,
) -> EventStreamResponse:
    """The request's output as it is generated (Server-Sent Events). Resume with `Last-Event-ID` (a text
    position) or `?after=N` (which wins). `cancel_on_disconnect=true` also needs `requests:write`."""
    who = await authorize(request, "requests:read")
    position = resume_position(request.headers.get("last-event-id"), after)
    if cancel_on_disconnect and not who.has_scope("requests:write"):
        raise ApiError(403, "insufficient_scope", "cancel_on_disconnect needs the 'requests:write' scope",
                       required_scope="requests:write")
    resource = request_resource(await request.app.state.request_service.get(who, request_id))
    return native_stream(request, who, resource, position, cancel_on_disconnect=cancel_on_disconnect)

