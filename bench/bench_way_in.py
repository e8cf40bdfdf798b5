"""The way in, piece by piece: what one unloaded submit waits on before a worker can start it.

bench_streaming.py prints "submit -> worker start" as one figure (about 8-11 ms p50 on this machine).
This bench times its two waits alone, one at a time with a pause between (no batching can help):
a PostgreSQL transaction inserting one row (the request's durable record), and a Kafka produce with
the gateway's producer settings (acks=all, idempotent) from send to acknowledgement, at linger 0 and
at the gateway's default linger (settings.gateway_linger_ms).

Usage: .venv/bin/python bench/bench_way_in.py [--n 30]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from _common import REPO


def summary(label: str, values: list[float]) -> str:
    values = sorted(values)
    return (f"{label:<42} p50 {values[len(values) // 2]:6.2f} ms  min {values[0]:6.2f}  "
            f"max {values[-1]:6.2f}  (n={len(values)})")


async def measure(pg_url: str, bootstrap: str, n: int, lingers: list[int]) -> None:
    from aiokafka import AIOKafkaProducer
    from sqlalchemy import text

    from lotabots.db import make_engine

    engine = make_engine(pg_url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE way_in (id text PRIMARY KEY, body jsonb)"))
    pg: list[float] = []
    for i in range(n):
        t0 = time.perf_counter()
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO way_in VALUES (:id, '{}')"), {"id": str(i)})
        pg.append((time.perf_counter() - t0) * 1000)
        await asyncio.sleep(0.05)
    await engine.dispose()
    print(summary("PostgreSQL: insert one row, commit", pg))
    for linger in lingers:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                    linger_ms=linger)
        await producer.start()
        acks: list[float] = []
        try:
            await (await producer.send("requests.pro", b"warm-up", partition=0))
            for _ in range(n):
                t0 = time.perf_counter()
                await (await producer.send("requests.pro", b"x" * 500, partition=0))
                acks.append((time.perf_counter() - t0) * 1000)
                await asyncio.sleep(0.05)
        finally:
            await producer.stop()
        print(summary(f"Kafka: produce to ack, acks=all, linger {linger} ms", acks))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=30)
    args = ap.parse_args()

    from lotabots.db import migrate
    from lotabots.settings import Settings
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import kafka_service, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-way-in-"))
    tiers = load_tier_config(REPO / "lotabots" / "tiers.toml")
    lingers = sorted({0, Settings().gateway_linger_ms})
    with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(tiers)))
        migrate(pg.url)
        asyncio.run(measure(pg.url, kafka.bootstrap, args.n, lingers))


if __name__ == "__main__":
    main()
