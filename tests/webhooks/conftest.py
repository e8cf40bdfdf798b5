"""Fixtures of the webhook suite: a loopback receiver, a gateway and a dispatcher that allow loopback.

The session's default gateway (`api`) runs WITHOUT an allow-list, so the SSRF tests see the guard as
production has it; `hook_api` talks to a second gateway process whose allow-list admits 127.0.0.1
only, which is where the receiver listens. No test sends traffic to a non-loopback address.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from tests.services import free_ports
from tests.stack import Stack, StackProcess
from tests.webhooks.receiver import Receiver

ALLOW_LOOPBACK = {"LOTABOTS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32"}
# Compressed schedule: attempts at about 0s, 0.5s, 2s and 7s; an endpoint failing for 6s is disabled.
SCHEDULE_S = (0.5, 1.5, 5.0)
JITTER = 0.1
DISPATCHER_ENV = {
    **ALLOW_LOOPBACK,
    "LOTABOTS_WEBHOOK_RETRY_SCHEDULE_S": ",".join(str(s) for s in SCHEDULE_S),
    "LOTABOTS_WEBHOOK_RETRY_JITTER": str(JITTER),
    "LOTABOTS_WEBHOOK_DISABLE_AFTER_FAILING_S": "6",
    "LOTABOTS_WEBHOOK_READ_TIMEOUT_S": "30",
    "LOTABOTS_WEBHOOK_TOTAL_TIMEOUT_S": "40",
}
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def hook_gateway(stack: Stack) -> str:
    port = free_ports(1)[0]
    stack.spawn("gateway-webhooks", "serve", "gateway",
                extra_env={**ALLOW_LOOPBACK, "LOTABOTS_GATEWAY_PORT": str(port)})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"webhook gateway not ready: {stack.tail('gateway-webhooks')}")


@pytest.fixture
async def hook_api(hook_gateway: str, pro_tenant: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=hook_gateway, timeout=30,
                                 headers={"Authorization": f"Bearer {pro_tenant[1]}"}) as client:
        yield client


def spawn_dispatcher(stack: Stack, name: str = "webhooks", **extra: str) -> StackProcess:
    return stack.spawn(name, "worker", "webhooks", extra_env={**DISPATCHER_ENV, **extra})


@pytest.fixture(scope="module")
def dispatcher(stack: Stack) -> Iterator[StackProcess]:
    process = spawn_dispatcher(stack)
    yield process
    process.stop()


# ---- helpers the tests share ------------------------------------------------------------------------


async def create_endpoint(api: httpx.AsyncClient, url: str, **fields: Any) -> dict[str, Any]:
    r = await api.post("/v1/webhooks/endpoints", json={"url": url, **fields})
    assert r.status_code == 201, r.text
    return r.json()


async def submit(api: httpx.AsyncClient, **body: Any) -> str:
    r = await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 4, **body})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


async def wait_until(probe: Any, timeout: float = 120, interval: float = 0.2) -> Any:
    """Call the async `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met in {timeout}s (last: {last!r})")


async def dead_letters(bootstrap: str, delivery_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """The `webhooks.dlq` entries of one delivery (read from the start, no consumer group)."""
    import json

    consumer = AIOKafkaConsumer("webhooks.dlq", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while not found and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            found += [letter for records in batch.values() for r in records
                      if (letter := json.loads(r.value))["delivery_id"] == delivery_id]
    finally:
        await consumer.stop()
    return found
