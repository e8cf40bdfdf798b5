"""The usage pipeline as real processes beside the stack: the Faust worker and the usage service.

A session fixture of the root conftest, so any test that checks billing (usage, streaming, the OpenAI
routes) shares one pipeline: the usage service is the only process that opens the chDB directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.services import free_ports
from tests.stack import Stack, StackProcess


@dataclass
class UsagePipeline:
    """Handles on the usage processes; `kill_*` is SIGKILL, `start_*` spawns a fresh process."""

    stack: Stack
    url: str
    stream_health: str
    stream: StackProcess | None = None
    service: StackProcess | None = None

    def start_service(self) -> None:
        self.service = self.stack.spawn("usage-service", "serve", "usage")

    def start_stream(self) -> None:
        port = self.stream_health.rsplit(":", 1)[1]
        self.stream = self.stack.spawn("usage-stream", "worker", "usage-stream", extra_env={
            "LOTABOTS_METRICS_PORT": port, "LOTABOTS_USAGE_STREAM_COMMIT_INTERVAL_S": "0.5"})

    def kill_service(self) -> None:
        assert self.service is not None
        self.service.kill()

    def kill_stream(self) -> None:
        assert self.stream is not None
        self.stream.kill()

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        pending = {f"{self.url}/readyz": "usage-service", f"{self.stream_health}/healthz": "usage-stream"}
        while pending and time.monotonic() < deadline:
            for url in list(pending):
                try:
                    if httpx.get(url, timeout=2).status_code == 200:
                        pending.pop(url)
                except httpx.HTTPError:
                    pass
            time.sleep(0.3)
        if pending:
            names = list(pending.values())
            raise RuntimeError(f"{names} not ready: " + " | ".join(self.stack.tail(n, 2000) for n in names))

    def sql(self, sql: str, tenant_id: str | None = None) -> dict[str, Any]:
        r = httpx.post(f"{self.url}/internal/v1/sql", json={"sql": sql, "tenant_id": tenant_id}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="session")
def usage_pipeline(stack: Stack) -> Iterator[UsagePipeline]:
    pipeline = UsagePipeline(stack, f"http://127.0.0.1:{stack.env['LOTABOTS_USAGE_PORT']}",
                             f"http://127.0.0.1:{free_ports(1)[0]}")
    pipeline.start_service()
    pipeline.start_stream()
    pipeline.wait_ready()
    yield pipeline
    for process in (pipeline.stream, pipeline.service):
        if process is not None:
            process.stop()
