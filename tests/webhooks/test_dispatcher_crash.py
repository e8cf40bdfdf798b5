"""SIGKILL the dispatcher mid-delivery: every terminal event is still delivered, with the same webhook-id.

The receiver holds the first deliveries (slow answers), so the dispatcher is killed while waiting on
them; its offsets were not committed, so the next dispatcher delivers again under the same ids.
"""

from __future__ import annotations

import uuid

import httpx
import pytest
from standardwebhooks import Webhook

from tests.stack import Stack
from tests.webhooks.conftest import create_endpoint, spawn_dispatcher, submit, wait_until
from tests.webhooks.receiver import Answer, Receiver

pytestmark = pytest.mark.integration


async def test_sigkill_mid_delivery_loses_no_terminal_event_and_keeps_webhook_ids(
    stack: Stack, hook_api: httpx.AsyncClient, receiver: Receiver
) -> None:
    path = f"crash/{uuid.uuid4().hex[:12]}"
    receiver.script(path, Answer(200, delay_s=60))  # hold every delivery: the dispatcher waits mid-request
    endpoint = await create_endpoint(hook_api, receiver.url(path), event_types=["completed"])
    first = spawn_dispatcher(stack, "webhooks-crash-1")
    try:
        ids = [await submit(hook_api, webhook_endpoint_id=endpoint["id"]) for _ in range(3)]

        async def all_terminal() -> bool:
            statuses = [(await hook_api.get(f"/v1/requests/{i}")).json()["status"] for i in ids]
            return all(s in ("succeeded", "failed", "canceled") for s in statuses)

        await wait_until(all_terminal, timeout=240)
        await receiver.wait_for(path, lambda rs: len(rs) >= 1)
    finally:
        first.kill()  # SIGKILL while at least one delivery is waiting for its answer
    held = receiver.at(path)  # arrived, never answered: the dispatcher died waiting
    before = {r.request_id: r.webhook_id for r in held}
    assert before and not first.alive()

    receiver.script(path, Answer(200))  # the receiver recovers
    second = spawn_dispatcher(stack, "webhooks-crash-2")
    try:
        got = await receiver.wait_for(
            path, lambda rs: {r.request_id for r in rs[len(held):]} >= set(ids), timeout=180)
    finally:
        second.stop()
    delivered = got[len(held):]
    ids_of: dict[str, set[str]] = {}
    for r in got:
        ids_of.setdefault(r.request_id, set()).add(r.webhook_id)
        Webhook(endpoint["secret"]).verify(r.body, r.headers)
    assert set(ids_of) == set(ids)
    assert all(len(v) == 1 for v in ids_of.values())  # one webhook-id per terminal event, across the crash
    for request_id, webhook_id in before.items():
        assert any(r.request_id == request_id and r.webhook_id == webhook_id for r in delivered)
    for webhook_id in {r.webhook_id for r in got}:
        body = await wait_until(lambda w=webhook_id: _succeeded(hook_api, w))
        assert body["status"] == "succeeded"


async def _succeeded(api: httpx.AsyncClient, webhook_id: str) -> dict | None:
    body = (await api.get(f"/v1/webhooks/deliveries/{webhook_id}")).json()
    return body if body["status"] == "succeeded" else None
