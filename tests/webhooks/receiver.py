"""A real HTTP webhook receiver on loopback for the tests: scripted answers, every delivery recorded.

It runs in its own thread (a stdlib ThreadingHTTPServer), so it answers while the test's event loop
waits. Each path has a script of answers (status, headers, delay), used in order; the last repeats.
Signatures are checked by the tests with the `standardwebhooks` package, not the dispatcher's code.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    """One POST as it arrived: lower-cased headers, raw body, arrival time, and what we answered."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event_type(self) -> str:
        return self.json["type"]

    @property
    def request_id(self) -> str:
        return self.json["data"]["id"]


class Receiver:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self._served: dict[str, int] = {}
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                answer = receiver._next_answer(self.path)
                receiver._record(Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body,
                                          time.time(), answer.status))
                if answer.delay_s:
                    time.sleep(answer.delay_s)
                try:
                    payload = b'{"ok": true}'
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the dispatcher went away mid-delivery (the crash tests do that)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook-receiver", daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def script(self, path: str, *answers: Answer) -> None:
        with self._lock:
            self._scripts["/" + path.lstrip("/")] = list(answers)

    def _next_answer(self, path: str) -> Answer:
        with self._lock:
            script = self._scripts.get(path) or [Answer()]
            n = self._served.get(path, 0)
            self._served[path] = n + 1
            return script[min(n, len(script) - 1)]

    def _record(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def at(self, path: str) -> list[Received]:
        path = "/" + path.lstrip("/")
        with self._lock:
            return [r for r in self.received if r.path == path]

    async def wait_for(self, path: str, done: Callable[[list[Received]], bool], timeout: float = 180) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if done(got):
                return got
            await asyncio.sleep(0.1)
        raise AssertionError(f"receiver {path}: condition not met in {timeout}s; got "
                             f"{[(r.event_type, r.answered) for r in self.at(path)]}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
