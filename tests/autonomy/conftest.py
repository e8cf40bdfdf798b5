"""Fixtures of the autonomy suite: a tenant with an admin key and a member key, a gateway and a
webhook dispatcher whose SSRF allow-list admits loopback only (where the test receiver listens)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.services import free_ports
from tests.stack import Stack, StackProcess
from tests.webhooks.receiver import Receiver

ALLOW_LOOPBACK = {"LOTABOTS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32"}
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def autonomy_receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="session")
def autonomy_gateway(stack: Stack) -> str:
    port = free_ports(1)[0]
    stack.spawn("gateway-autonomy", "serve", "gateway",
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
    raise RuntimeError(f"autonomy gateway not ready: {stack.tail('gateway-autonomy')}")


@pytest.fixture(scope="package")
def autonomy_dispatcher(stack: Stack) -> Iterator[StackProcess]:
    # Same retry schedule as the webhook tests' dispatcher, and stopped when this package ends: two
    # members of the dispatcher group with different schedules would leave retry-topic messages due
    # minutes later at the head of a partition, holding the other suite's retries behind them.
    from tests.webhooks.conftest import DISPATCHER_ENV

    process = stack.spawn("webhooks-autonomy", "worker", "webhooks", extra_env={**DISPATCHER_ENV, **ALLOW_LOOPBACK})
    yield process
    process.stop()


@dataclass
class Team:
    """One tenant seen through three credentials: an admin key, a member key, and another member key."""

    tenant_id: str
    admin: httpx.AsyncClient
    member: httpx.AsyncClient
    other: httpx.AsyncClient
    admin_key_id: str
    member_key_id: str


async def _team(base_url: str, postgres: Any) -> tuple[Team, list[httpx.AsyncClient]]:
    from gateway.api_keys import create_api_key
    from gateway.tenants import create_tenant
    from lotabots.db import make_engine
    from lotabots.tiers import load_tier_config
    from tests.stack import REPO

    engine = make_engine(postgres.url)
    try:  # the tenant's first key holds every scope (admin); the others the default member scopes
        tenant_id, admin = await create_tenant(engine, load_tier_config(REPO / "lotabots" / "tiers.toml"),
                                               "autonomy", "pro")
        member = await create_api_key(engine, tenant_id, "member")
        other = await create_api_key(engine, tenant_id, "other")
    finally:
        await engine.dispose()
    clients = [httpx.AsyncClient(base_url=base_url, timeout=30, headers={"Authorization": f"Bearer {k.key}"})
               for k in (admin, member, other)]
    return Team(tenant_id, *clients, admin.id, member.id), clients


@pytest.fixture
async def team(autonomy_gateway: str, postgres: Any) -> AsyncIterator[Team]:
    t, clients = await _team(autonomy_gateway, postgres)
    yield t
    for c in clients:
        await c.aclose()


@pytest.fixture
async def rival(autonomy_gateway: str, postgres: Any) -> AsyncIterator[Team]:
    """A second tenant."""
    t, clients = await _team(autonomy_gateway, postgres)
    yield t
    for c in clients:
        await c.aclose()


async def set_tenant(team: Team, default: str, maximum: str = "agent") -> None:
    r = await team.admin.put("/v1/autonomy/tenant", json={"default_level": default, "max_level": maximum})
    assert r.status_code == 200, r.text


async def endpoint(team: Team, receiver: Receiver, path: str) -> tuple[str, str]:
    """A registered endpoint that also receives every lifecycle event of the tenant's requests (so a
    test knows the dispatcher handled an event); returns (endpoint id, signing secret)."""
    r = await team.admin.post("/v1/webhooks/endpoints", json={"url": receiver.url(path), "all_requests": True})
    assert r.status_code == 201, r.text
    return str(r.json()["id"]), str(r.json()["secret"])


def events_of(receiver: Receiver, path: str, request_id: str, event_type: str) -> list[Any]:
    return [x for x in receiver.at(path) if x.event_type == event_type and x.request_id == request_id]


async def submit(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    r = await client.post("/v1/requests", json={"messages": QUESTION, "max_tokens": 8, **body})
    assert r.status_code == 202, r.text
    return dict(r.json())


async def settle(client: httpx.AsyncClient, request_id: str, statuses: set[str],
                 timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/requests/{request_id}", params={"wait": 5})
        last = r.json()
        if last.get("status") in statuses:
            return last
    raise AssertionError(f"{request_id} never reached {statuses}: {last}")
