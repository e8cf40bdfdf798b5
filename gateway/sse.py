"""A `text/event-stream` response that notices a client leaving while the stream is idle.

Starlette's StreamingResponse on ASGI 2.4 servers learns of a disconnect only when a write fails, so an
idle stream (a request waiting in the queue) would hold its resources until the next keep-alive. This
response listens for `http.disconnect` beside the writer, stops the stream at once, and tells the route
(``on_disconnect``) when the client left before the stream ended (`cancel_on_disconnect`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

SSE_HEADERS = {
    "Cache-Control": "no-cache, no-transform",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
    "Connection": "keep-alive",
}


def sse_event(data: bytes, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE event; ``data`` is a single line of JSON."""
    head = b""
    if event:
        head += b"event: " + event.encode() + b"\n"
    if id is not None:
        head += b"id: " + id.encode() + b"\n"
    return head + b"data: " + data + b"\n\n"


KEEPALIVE = b": keep-alive\n\n"


class EventStreamResponse(Response):
    """Streams ``events`` (chunks of encoded events) as `text/event-stream`."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], *, status_code: int = 200,
                 headers: dict[str, str] | None = None, on_disconnect: Callable[[], None] | None = None) -> None:
        self.events = events
        self.status_code = status_code
        self.stream_headers = {**SSE_HEADERS, **(headers or {})}
        self.on_disconnect = on_disconnect
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw_headers = [(b"content-type", b"text/event-stream; charset=utf-8")]
        raw_headers += [(k.lower().encode(), v.encode()) for k, v in self.stream_headers.items()]
        writer = asyncio.current_task()
        assert writer is not None
        left = False

        async def listen() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            left = True
            writer.cancel()

        listener = asyncio.create_task(listen())
        finished = False
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            finished = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left:
                raise
            writer.uncancel()
        except OSError:
            left = True
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await listener
            with contextlib.suppress(Exception):
                await self.events.aclose()  # type: ignore[attr-defined]
            if left and not finished and self.on_disconnect is not None:
                self.on_disconnect()
