"""The Python client of the LotaBots API (sync). `submit`, `get`, `wait`, `stream`, `cancel`, `list`.

    from lotabots.client import LotaBotsClient
    with LotaBotsClient("http://127.0.0.1:8000", api_key) as lb:
        req = lb.submit([{"role": "user", "content": "Hi!"}], max_tokens=32)
        for delta in lb.stream(req["id"]):     # tokens as they are generated; resumes after a drop
            print(delta, end="", flush=True)
        print(lb.wait(req["id"])["usage"])
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from lotabots.webhook_verify import verify_webhook  # noqa: F401 - part of the client's public API

TERMINAL = frozenset({"succeeded", "failed", "canceled"})


class LotaBotsError(Exception):
    """An API refusal: `status` (HTTP), `code` (stable machine-readable), `message`."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}


class AuthenticationError(LotaBotsError):
    pass


class PermissionDenied(LotaBotsError):
    pass


class NotFound(LotaBotsError):
    pass


class Conflict(LotaBotsError):
    pass


class RateLimited(LotaBotsError):
    pass


class InvalidRequest(LotaBotsError):
    pass


class ServiceUnavailable(LotaBotsError):
    pass


_BY_STATUS: dict[int, type[LotaBotsError]] = {
    401: AuthenticationError, 403: PermissionDenied, 404: NotFound, 409: Conflict, 422: InvalidRequest,
    429: RateLimited, 503: ServiceUnavailable,
}


class StreamRestarted(LotaBotsError):
    """The request's run was taken over by another worker and wrote different text (docs/openai.md)."""


@dataclass(frozen=True)
class SseEvent:
    event: str  # "message" when the server named none
    data: str
    id: str | None


class SseParser:
    """Server-Sent Events, line by line (the WHATWG rules this API uses: `event`, `data`, `id`, comments)."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SseEvent | None:
        """One line without its end of line; returns an event when ``line`` ends one."""
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SseEvent(self._event or "message", "\n".join(self._data), self._id)
            self._event, self._data, self._id = "", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None


@dataclass
class TextStream:
    """An iterator of a request's text deltas (`LotaBotsClient.stream`); afterwards ``request`` is the
    finished request and ``text`` what the deltas add up to (equal to ``request["output"]["text"]``)."""

    _events: Iterator[SseEvent]
    on_restart: Callable[[], None] | None = None
    text: str = ""
    request: dict[str, Any] | None = None

    def __iter__(self) -> Iterator[str]:
        for event in self._events:
            if event.event == "token":
                delta = json.loads(event.data)["delta"]
                self.text += delta
                yield delta
            elif event.event == "restart":
                if self.on_restart is None:
                    raise StreamRestarted(200, "generation_restarted", "the generation restarted with different "
                                          "text; pass on_restart= to take the new text from the start")
                self.on_restart()
                self.text = ""
            elif event.event == "done":
                self.request = json.loads(event.data)


class LotaBotsClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout)

    def __enter__(self) -> LotaBotsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        response = self._http.request(method, path, **kw)
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            err = response.json()["error"]
        except Exception:
            err = {"code": "http_error", "message": response.text[:200]}
        cls = _BY_STATUS.get(response.status_code, LotaBotsError)
        raise cls(response.status_code, err.get("code", "http_error"), err.get("message", ""), err.get("details"))

    def submit(self, messages: list[dict[str, str]], *, idempotency_key: str | None = None, **params: Any) -> dict[str, Any]:
        """Queue a chat request; retries with the same idempotency key never create a second request."""
        key = idempotency_key or str(uuid.uuid4())
        body = {"messages": messages, **params}
        for attempt in range(5):
            try:
                return self._call("POST", "/v1/requests", json=body, headers={"Idempotency-Key": key})
            except (ServiceUnavailable, httpx.TransportError):
                if attempt == 4:
                    raise
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def get(self, request_id: str, *, wait: float | None = None) -> dict[str, Any]:
        params = {"wait": wait} if wait else None
        return self._call("GET", f"/v1/requests/{request_id}", params=params)

    def stream(self, request_id: str, *, after: int = 0, on_restart: Callable[[], None] | None = None,
               reconnects: int = 10) -> TextStream:
        """The request's text as it is generated, from text position ``after``; a dropped connection is
        resumed where it broke (``Last-Event-ID``), up to ``reconnects`` times in a row. A run taken over
        by another worker that wrote different text calls ``on_restart`` (then the text starts over) or,
        without it, raises :class:`StreamRestarted`."""
        return TextStream(self._stream_events(f"/v1/requests/{request_id}/stream", after, reconnects), on_restart)

    def _stream_events(self, path: str, after: int, reconnects: int) -> Iterator[SseEvent]:
        position, failures = after, 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if position:
                headers["Last-Event-ID"] = str(position)
            try:
                with self._http.stream("GET", path, headers=headers, timeout=httpx.Timeout(self._http.timeout.connect,
                                       read=60.0)) as response:
                    if response.status_code >= 400:
                        response.read()
                        self._raise(response)
                    parser = SseParser()
                    for line in response.iter_lines():
                        event = parser.feed(line)
                        if event is None:
                            continue
                        failures = 0
                        if event.event == "restart":
                            position = 0
                        elif event.id is not None:
                            position = int(event.id)
                        yield event
                        if event.event == "done":
                            return
            except (httpx.TransportError, ServiceUnavailable):
                pass
            failures += 1
            if failures > reconnects:
                raise LotaBotsError(503, "stream_interrupted", f"the stream of {path} broke {failures} times")
            time.sleep(min(0.2 * 2 ** (failures - 1), 5.0))

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/requests/{request_id}/cancel")

    def list(self, *, limit: int = 20, cursor: str | None = None, status: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        if status:
            params["status"] = status
        return self._call("GET", "/v1/requests", params=params)

    def wait(self, request_id: str, *, timeout: float = 300.0, poll_wait: float = 20.0) -> dict[str, Any]:
        """Block until the request is terminal: long-poll first, then poll with growing intervals."""
        deadline = time.monotonic() + timeout
        interval = 0.1
        while True:
            remaining = deadline - time.monotonic()
            req = self.get(request_id, wait=min(poll_wait, max(0.0, remaining)) or None)
            if req["status"] in TERMINAL:
                return req
            if time.monotonic() >= deadline:
                raise TimeoutError(f"request {request_id} still {req['status']} after {timeout}s")
            time.sleep(interval)
            interval = min(interval * 1.5, 2.0)
