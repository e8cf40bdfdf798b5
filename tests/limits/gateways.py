"""Gateways with small limits for the limits tests: spawned as real processes next to the session stack."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from lotabots.tiers import TierConfig
from tests.limits.helpers import tier_table, write_tiers
from tests.services import free_ports
from tests.stack import Stack, StackProcess

# `pro` keeps its topic and the stack's inference worker, with limits small enough to reach in a test;
# `rl_burst` and `rl_flood` have request topics of their own that no worker reads (nothing runs, nothing ends).
PRO_CONCURRENCY = 4
PRO_TOKENS_PER_DAY = 600
BURST_RPM = 12
FLOOD_RPM = 300


def write_limits_tiers(path: Path) -> TierConfig:
    return write_tiers(
        path,
        pro={"rate_limits": {"requests_per_minute": 600, "concurrent_requests": PRO_CONCURRENCY},
             "quotas": {"tokens_per_day": PRO_TOKENS_PER_DAY}},
        rl_burst=tier_table(rpm=BURST_RPM, concurrency=1000),
        rl_flood=tier_table(rpm=FLOOD_RPM, concurrency=100_000),
    )


@dataclass
class SpawnedGateway:
    process: StackProcess
    url: str


def spawn_gateway(stack: Stack, name: str, tiers_file: Path, **env: str) -> SpawnedGateway:
    port = free_ports(1)[0]
    process = stack.spawn(name, "serve", "gateway", extra_env={
        "LOTABOTS_GATEWAY_PORT": str(port), "LOTABOTS_TIERS_FILE": str(tiers_file), **env})
    gateway = SpawnedGateway(process, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not process.alive():
            raise RuntimeError(f"gateway {name} exited: {stack.tail(name)}")
        try:
            if httpx.get(f"{gateway.url}/readyz", timeout=1).status_code == 200:
                return gateway
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gateway {name} not ready: {stack.tail(name)}")


async def wait_terminal(client: httpx.AsyncClient, request_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    body: dict = {}
    while time.monotonic() < deadline:
        r = await client.get(f"/v1/requests/{request_id}")
        assert r.status_code == 200, r.text
        body = r.json()
        if body["status"] in ("succeeded", "failed", "canceled"):
            return body
        await asyncio.sleep(0.2)
    raise AssertionError(f"request {request_id} not terminal: {body}")
