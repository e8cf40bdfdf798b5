"""Spend a tenant's daily token quota with concurrent submits and check the overshoot bound."""

from __future__ import annotations

import asyncio

import httpx

from gateway.limits.quota_periods import prompt_token_bound
from schemas.events import ChatMessage
from tests.limits.gateways import wait_terminal

COUNT = [{"role": "user", "content": "Count to three."}]


async def exhaust_quota(clients: list[httpx.AsyncClient], limit: int, *, wave: int = 8, max_tokens: int = 8) -> None:
    """Submit waves of `wave` concurrent requests (spread over `clients`) until the quota refuses with
    nothing in flight; then the tokens really used are at least the quota and exceed it by less than one
    request's reservation, and the gateway's count equals the sum of what the requests report."""
    body = {"messages": COUNT, "max_tokens": max_tokens}
    reservation = max_tokens + prompt_token_bound([ChatMessage(**m) for m in COUNT])
    admitted: list[tuple[httpx.AsyncClient, str]] = []
    widest_wave, final = 0, None
    for _ in range(80):
        targets = [clients[i % len(clients)] for i in range(wave)]
        responses = await asyncio.gather(*(c.post("/v1/requests", json=body) for c in targets))
        ids = []
        for client, r in zip(targets, responses, strict=True):
            if r.status_code == 202:
                ids.append((client, r.json()["id"]))
                continue
            assert r.status_code == 429, r.text
            error = r.json()["error"]
            assert error["code"] in ("quota_exceeded", "concurrency_limited"), error
            if error["code"] == "quota_exceeded" and error["details"]["reserved_tokens"] == 0:
                final = error  # refused on tokens really used: it stays refused until the day ends
        widest_wave = max(widest_wave, len(ids))
        admitted += ids
        for client, request_id in ids:
            await wait_terminal(client, request_id)
        if final is not None:
            assert not ids
            break
    assert final is not None, "the quota never refused"
    used = []
    for client, request_id in admitted:
        done = await wait_terminal(client, request_id)
        assert done["status"] == "succeeded", done
        used.append(done["usage"]["total_tokens"])
    total = sum(used)
    assert widest_wave >= 2  # requests really were admitted concurrently
    assert max(used) <= reservation  # a reservation bounds what its request uses
    assert final["details"]["used_tokens"] == total  # the gateway counted exactly what ran
    assert limit <= total <= limit - 1 + reservation, (total, limit, reservation)
