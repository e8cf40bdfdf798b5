"""Long-poll: time from a request's completion (its terminal event on `results`) to the waiting
client's response, versus clients polling every 100 ms, in the same run.

Real PostgreSQL, a real Kafka broker and the real gateway process. Requests are submitted on a tier
no worker serves, clients park on `GET /v1/requests/{id}?wait=30` (or poll), and the bench itself
produces each request's `succeeded` event at a paced rate, so "completion" has an exact timestamp.
Usage: python bench/bench_long_poll.py [--requests 200] [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from _common import REPO, wait_http


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]


async def scenario(base: str, tenant_id: str, key: str, bootstrap: str, n: int, rate: float,
                   mode: str) -> list[float]:
    from aiokafka import AIOKafkaProducer

    from lotabots.ids import new_id
    from schemas.events import LifecycleType, RequestLifecycleEvent

    headers = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=60, limits=limits) as client:
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        ids = [(await client.post("/v1/requests", json=body)).json()["id"] for _ in range(n)]
        done_at: dict[str, float] = {}
        answered: dict[str, float] = {}

        async def long_poll(rid: str) -> None:
            while True:
                r = await client.get(f"/v1/requests/{rid}", params={"wait": 30})
                if r.json()["status"] == "succeeded":
                    answered[rid] = time.perf_counter()
                    return

        async def poll(rid: str) -> None:
            while True:
                r = await client.get(f"/v1/requests/{rid}")
                if r.json()["status"] == "succeeded":
                    answered[rid] = time.perf_counter()
                    return
                await asyncio.sleep(0.1)

        waiters = [asyncio.create_task((long_poll if mode == "long-poll" else poll)(rid)) for rid in ids]
        await asyncio.sleep(1.0)  # let every client park
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for rid in ids:
                event = RequestLifecycleEvent(
                    event_id=new_id("evt"), request_id=rid, tenant_id=tenant_id, tier="enterprise",
                    type=LifecycleType.SUCCEEDED, at=datetime.now(UTC), output="done", finish_reason="stop",
                    prompt_tokens=10, completion_tokens=1, finished_at=datetime.now(UTC),
                )
                await producer.send_and_wait("results", event.model_dump_json().encode(), key=rid.encode())
                done_at[rid] = time.perf_counter()
                await asyncio.sleep(1 / rate)
        finally:
            await producer.stop()
        await asyncio.wait_for(asyncio.gather(*waiters), 120)
    return [(answered[r] - done_at[r]) * 1000 for r in ids]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--rate", type=float, default=100)
    args = ap.parse_args()

    from gateway.tenants import create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import free_ports, kafka_service, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-longpoll-"))
    tiers = load_tier_config(REPO / "lotabots" / "tiers.toml")
    with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(tiers)))
        migrate(pg.url)

        async def tenant() -> tuple[str, str]:
            engine = make_engine(pg.url)
            tenant_id, key = await create_tenant(engine, tiers, "bench", "enterprise")
            await engine.dispose()
            return tenant_id, key.key

        tenant_id, key = asyncio.run(tenant())
        port = free_ports(1)[0]
        env = {**os.environ, "LOTABOTS_DATABASE_URL": pg.url, "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
               "LOTABOTS_DATA_DIR": str(tmp / "data"), "LOTABOTS_LOG_LEVEL": "WARNING"}
        gateway = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "serve", "gateway", "--port", str(port)],
                                   cwd=REPO, env=env)
        # polling clients see completion once the result writer stored it; long-poll wakes on the event
        writer = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "worker", "results"], cwd=REPO, env=env)
        try:
            wait_http(f"http://127.0.0.1:{port}/readyz")
            base = f"http://127.0.0.1:{port}"
            out = {mode: asyncio.run(scenario(base, tenant_id, key, kafka.bootstrap, args.requests, args.rate, mode))
                   for mode in ("long-poll", "poll-100ms")}
        finally:
            for process in (gateway, writer):
                process.terminate()
                process.wait(30)
    for mode, lat in out.items():
        print(f"{mode:10s}: completion -> client response  p50 {statistics.median(lat):6.1f} ms"
              f"  p99 {pct(lat, 0.99):6.1f} ms  (n={len(lat)}, {args.rate:.0f} completions/s)")
    lp, po = out["long-poll"], out["poll-100ms"]
    print(f"long-poll vs 100 ms polling: p50 {statistics.median(po) / statistics.median(lp):.1f}x lower")


if __name__ == "__main__":
    main()
