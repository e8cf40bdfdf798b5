"""Nothing acknowledged is lost: SIGKILL any process mid-flight and every request still ends right."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.topics import RESULTS
from tests.sse import first_token
from tests.test_requests_api import FRANCE, wait_terminal

pytestmark = pytest.mark.integration

TERMINAL = ("succeeded", "failed", "canceled")


async def _wait_status(api: httpx.AsyncClient, rid: str, status: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while (await api.get(f"/v1/requests/{rid}")).json()["status"] != status:
        assert time.monotonic() < deadline, f"{rid} never reached {status}"
        await asyncio.sleep(0.05)


async def test_sigkill_inference_worker_mid_generation_still_succeeds(api: httpx.AsyncClient, stack) -> None:  # type: ignore[no-untyped-def]
    victim = next(p for p in stack.processes if p.name == "inference-pro")
    story = {"messages": [{"role": "user", "content": "Explain what a Kafka consumer group is in two sentences."}],
             "max_tokens": 200}
    rid = (await api.post("/v1/requests", json=story)).json()["id"]
    await _wait_status(api, rid, "running")
    await first_token(api, rid)  # mid-generation: it has produced text and has more to go
    victim.kill()
    # a restarted member of the group takes the partition; the uncommitted request is delivered again
    stack.processes.remove(victim)
    stack.spawn("inference-pro", "worker", "inference", "--tier", "pro")
    done = await wait_terminal(api, rid, timeout=300)
    assert done["status"] == "succeeded", done
    assert done["usage"]["completion_tokens"] > 0


async def _wait_produced(bootstrap: str, ids: set[str], timeout: float = 240) -> None:
    """Until `results` holds a terminal lifecycle event of each of `ids` (read from the start)."""
    consumer = AIOKafkaConsumer(RESULTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    ended: dict[str, str] = {}
    try:
        deadline = time.monotonic() + timeout
        while set(ended) != ids:
            assert time.monotonic() < deadline, f"terminal events on results for {sorted(ended)} of {sorted(ids)}"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    try:
                        event = json.loads(record.value)
                    except ValueError:
                        continue
                    if isinstance(event, dict) and event.get("request_id") in ids and event.get("type") in TERMINAL:
                        ended[event["request_id"]] = event["type"]
    finally:
        await consumer.stop()


async def test_sigkill_result_writer_state_still_converges(api: httpx.AsyncClient, stack, kafka) -> None:  # type: ignore[no-untyped-def]
    writer = next(p for p in stack.processes if p.name == "results")
    writer.kill()
    stack.processes.remove(writer)
    ids = [(await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 8})).json()["id"]
           for _ in range(3)]
    await _wait_produced(kafka.bootstrap, set(ids))  # the worker finished them while nobody writes state
    for rid in ids:
        assert (await api.get(f"/v1/requests/{rid}")).json()["status"] in ("queued", "running")
    stack.spawn("results", "worker", "results")
    for rid in ids:
        done = await wait_terminal(api, rid)
        assert done["status"] == "succeeded"
        assert done["output"]["text"].startswith("The capital of France")


async def test_malformed_message_is_dead_lettered_and_the_worker_carries_on(
    api: httpx.AsyncClient, stack, kafka,  # type: ignore[no-untyped-def]
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait("requests.pro", b"\xff this is not json", key=b"poison-1")
        await producer.send_and_wait("requests.pro", json.dumps({"request_id": "req_poison2", "tier": "pro"}).encode(),
                                     key=b"poison-2")
    finally:
        await producer.stop()
    # the worker keeps serving
    rid = (await api.post("/v1/requests", json={"messages": FRANCE, "max_tokens": 8})).json()["id"]
    assert (await wait_terminal(api, rid))["status"] == "succeeded"
    consumer = AIOKafkaConsumer("requests.dlq", bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    ours = {"poison-1", "poison-2"}
    try:  # the topic is shared: other letters (earlier tests, earlier runs on the broker) come first
        letters = []
        deadline = time.monotonic() + 60
        while not ours <= {letter["key"] for letter in letters}:
            assert time.monotonic() < deadline, f"requests.dlq has no letters of {sorted(ours)}: {letters}"
            batch = await consumer.getmany(timeout_ms=500)
            letters += [json.loads(r.value) for rs in batch.values() for r in rs]
    finally:
        await consumer.stop()
    mine = [letter for letter in letters if letter["key"] in ours]
    assert all(letter["error_code"] == "invalid_request_message" and letter["source_topic"] == "requests.pro"
               for letter in mine), mine
