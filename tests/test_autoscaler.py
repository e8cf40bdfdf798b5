"""The local autoscaler on real Kafka with the simulated test backend.

A burst on a 4-partition test tier scales its consumer group from the minimum (1) to the partition cap
(4) and, once the lag has drained, back to 1 by stopping workers gracefully; every request of the burst
succeeds exactly once (one terminal event per request on `results`, one terminal state in the table).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from inference.simulated import simulated_reply
from schemas.topics import RESULTS
from tests.stack import REPO, Stack

pytestmark = pytest.mark.integration

TIER = "burst"
BURST = 60
MAX_TOKENS = 24
TERMINAL = {"succeeded", "failed", "canceled"}

BURST_TIER = f"""
[tiers.{TIER}]
request_partitions = 4
workers_min = 1
workers_max = 6            # above the partitions: the partition count must cap it at 4
max_tokens_cap = 64
priority = 1
[tiers.{TIER}.scaling]
lag_threshold = 4
activation_lag_threshold = 0
[tiers.{TIER}.rate_limits]
requests_per_minute = 6000
concurrent_requests = 256
[tiers.{TIER}.quotas]
tokens_per_day = 10_000_000
tokens_per_month = 100_000_000
[tiers.{TIER}.prices]
per_request = "0"
[tiers.{TIER}.k8s]
cpu = "4"
memory = "8Gi"
pods = 10
"""


@pytest.fixture(scope="module")
def burst_stack(kafka, postgres, session_tmp: Path) -> Iterator[tuple[Stack, str, Path]]:  # type: ignore[no-untyped-def]
    """Gateway + result writer + autoscaler (simulated backend) for a temporary 4-partition tier."""
    from gateway.tenants import create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import free_ports

    root = session_tmp / "autoscaler"
    (root / "logs").mkdir(parents=True, exist_ok=True)
    tiers_file = root / "tiers.toml"
    tiers_file.write_text((REPO / "lotabots" / "tiers.toml").read_text() + BURST_TIER)
    tiers = load_tier_config(tiers_file)
    asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(tiers)))
    migrate(postgres.url)

    async def tenant() -> str:
        engine = make_engine(postgres.url)
        try:
            return (await create_tenant(engine, tiers, "burst-test", TIER))[1].key
        finally:
            await engine.dispose()

    api_key = asyncio.run(tenant())
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "LOTABOTS_DATA_DIR": str(root / "data"),
        "LOTABOTS_DATABASE_URL": postgres.url,
        "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "LOTABOTS_GATEWAY_PORT": str(port),
        "LOTABOTS_TIERS_FILE": str(tiers_file),
        "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "LOTABOTS_INFERENCE_BACKEND": "simulated",
        "LOTABOTS_SIMULATED_MS_PER_TOKEN": "25",
        # short windows so the test sees a whole up-and-down cycle; same rules as the defaults
        "LOTABOTS_AUTOSCALE_POLL_INTERVAL_S": "0.5",
        "LOTABOTS_AUTOSCALE_SCALE_UP_PERIOD_S": "5",
        "LOTABOTS_AUTOSCALE_SCALE_DOWN_WINDOW_S": "3",
        "LOTABOTS_AUTOSCALE_SCALE_DOWN_PERIOD_S": "1.5",
        "LOTABOTS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    stack = Stack(env, root / "logs", f"http://127.0.0.1:{port}")
    stack.spawn("gateway", "serve", "gateway")
    stack.spawn("results", "worker", "results")
    stack.spawn("autoscaler", "autoscale", "--tier", TIER)
    try:
        stack.wait_gateway()
        yield stack, api_key, root / "data" / "autoscaler" / "status.json"
    finally:
        stack.stop_all()


def _status(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _diagnostics(stack: Stack, data_dir: Path) -> str:
    worker_logs = sorted((data_dir / "logs").glob(f"inference-{TIER}-*.log"))
    return "\n".join([f"--- autoscaler\n{stack.tail('autoscaler', 2000)}"] +
                     [f"--- {p.name}\n{p.read_text(errors='replace')[-1500:]}" for p in worker_logs])


async def test_burst_scales_up_to_the_partition_cap_and_back_with_each_request_done_once(
    burst_stack: tuple[Stack, str, Path], kafka,  # type: ignore[no-untyped-def]
) -> None:
    stack, api_key, status_file = burst_stack
    data_dir = status_file.parent.parent
    body = {"max_tokens": MAX_TOKENS}
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30,
                                 headers={"Authorization": f"Bearer {api_key}"}) as api:
        # one request first: the minimum worker is up and owns every partition before the burst
        warm = (await api.post("/v1/requests", json={**body, "messages": [{"role": "user", "content": "hi"}]}))
        assert warm.status_code == 202, warm.text
        ids = [warm.json()["id"]]
        await _until(lambda: _poll_done(api, ids[:1]), 120, "the warm-up request never finished",
                     lambda: _diagnostics(stack, data_dir))
        assert _status(status_file)["tiers"][TIER]["workers"] == 1

        for i in range(BURST):
            r = await api.post("/v1/requests", json={**body, "messages": [{"role": "user", "content": f"burst {i}"}]})
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])

        # while the burst drains: watch the group grow, then shrink back once the lag is gone
        seen_workers: list[int] = []
        seen_desired: list[int] = []

        async def sample() -> bool:
            t = _status(status_file).get("tiers", {}).get(TIER, {})
            if t:
                seen_workers.append(t["workers"])
                seen_desired.append(t["desired"])
            return bool(t) and max(seen_workers) > 1 and t["lag"] == 0 and t["workers"] == 1 \
                and t["desired"] == 1 and t["stopping"] == 0

        await _until(sample, 300, "the tier never scaled up and back down to its minimum",
                     lambda: f"workers seen {seen_workers[-50:]}\n{_diagnostics(stack, data_dir)}")
        final = _status(status_file)["tiers"][TIER]

        # every request reached exactly one terminal state in the requests table, with the backend's text;
        # no lag means the workers committed their outcomes, not that the result writer has stored them all
        await _until(lambda: _poll_done(api, ids), 120, "not every request of the burst was stored terminal",
                     lambda: stack.tail("results", 2000))
        rows = [(await api.get(f"/v1/requests/{rid}")).json() for rid in ids]
    assert [r["status"] for r in rows] == ["succeeded"] * len(ids), [r for r in rows if r["status"] != "succeeded"]
    assert {r["output"]["text"] for r in rows} == {simulated_reply(MAX_TOKENS)}

    # scaled from the minimum to the cap: 4 partitions, although workers_max is 6
    assert max(seen_desired) == 4 and max(seen_workers) == 4, (seen_desired, seen_workers)
    # back at the minimum by graceful stops: every stopped worker drained and exited 0, none was killed
    assert final["exits"] == {"stopped": 3, "crashed": 0, "killed": 0}, final
    assert [e["returncode"] for e in final["recent_exits"]] == [0, 0, 0], final["recent_exits"]
    assert final["last_scale"]["to"] == 1 and final["partitions"] == 4

    # exactly once on the wire: one terminal event per request on `results`, read to its end
    terminals = await _read_terminal_events(kafka.bootstrap, set(ids))
    assert set(terminals) == set(ids)
    duplicated = {rid: kinds for rid, kinds in terminals.items() if kinds != ["succeeded"]}
    assert not duplicated, duplicated

    # SIGTERM to the autoscaler stops its last worker gracefully too
    auto = next(p for p in stack.processes if p.name == "autoscaler")
    auto.stop(timeout=90)
    assert auto.proc is not None and auto.proc.returncode == 0
    after = _status(status_file)
    assert after["state"] == "stopped" and after["tiers"][TIER]["workers"] == 0
    assert after["tiers"][TIER]["exits"] == {"stopped": 4, "crashed": 0, "killed": 0}


async def _poll_done(api: httpx.AsyncClient, ids: list[str]) -> bool:
    for rid in ids:
        if (await api.get(f"/v1/requests/{rid}")).json()["status"] not in TERMINAL:
            return False
    return True


async def _until(check, timeout: float, message: str, diagnostics=lambda: "") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{message}\n{diagnostics()}")
        await asyncio.sleep(0.25)


async def _read_terminal_events(bootstrap: str, ids: set[str]) -> dict[str, list[str]]:
    """Terminal lifecycle types per request id, reading every partition of `results` to its end now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        meta = await admin.describe_topics([RESULTS])
    finally:
        await admin.close()
    tps = [TopicPartition(RESULTS, p["partition"]) for p in meta[0]["partitions"]]
    assert tps, "no partitions of results"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: dict[str, list[str]] = defaultdict(list)
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=1000)
            for records in batch.values():
                for record in records:
                    event = json.loads(record.value)
                    if event["request_id"] in ids and event["type"] in TERMINAL:
                        found[event["request_id"]].append(event["type"])
        return dict(found)
    finally:
        await consumer.stop()
