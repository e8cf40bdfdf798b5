"""Mailer: mails/s through `lotabots worker mailer` to a local SMTP server, versus a bare aiosmtplib loop.

Real PostgreSQL and a real Kafka broker are started as processes; the SMTP server is the development
server (`lotabots serve dev-smtp`: one fsynced .eml per Message-ID) in its own process, and the mailer
is the real `lotabots worker mailer` process. N verification events are produced to `auth.events` at
once; the figure is N over the time from the first produce to the last mail stored.

The baseline sends the same N mails (composed the same way, distinct Message-IDs) to the same server
with a bare aiosmtplib loop over the same number of kept-open connections, after the mailer stopped:
the ceiling of the SMTP path on this machine. The mailer's figure is printed as a ratio of it; the
difference is Kafka, the `mail_sent` ledger (claim + `sent` per mail) and offset commits.

Usage: python bench/bench_mailer.py [--mails 2000] [--connections 4] [--runs 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _common import REPO, tree_cpu_seconds


def _events(n: int, tag: str) -> list:  # type: ignore[type-arg]
    from lotabots.ids import new_id
    from schemas.auth_events import AuthEvent, AuthEventType

    expires = datetime.now(UTC) + timedelta(hours=1)
    return [AuthEvent(event_id=new_id("aev"), type=AuthEventType.EMAIL_VERIFICATION_REQUESTED, at=datetime.now(UTC),
                      user_id=f"usr_bench{tag}{i}", tenant_id="ten_bench", email=f"user{tag}{i}@bench.test",
                      link=f"https://console.bench/account/verify-email#token={new_id('tok')}{new_id('tok')}",
                      link_expires_at=expires) for i in range(n)]


async def produce(bootstrap: str, events: list) -> float:  # type: ignore[type-arg]
    from aiokafka import AIOKafkaProducer

    from lotabots.kafka_io import encode
    from schemas.topics import AUTH_EVENTS

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5)
    await producer.start()
    try:
        start = time.time()
        futures = [await producer.send(AUTH_EVENTS, encode(e), key=e.kafka_key.encode()) for e in events]
        for f in futures:
            await f
        return start
    finally:
        await producer.stop()


def stored(mail_dir: Path) -> list[Path]:
    return list(mail_dir.glob("*.eml")) if mail_dir.is_dir() else []


def wait_stored(mail_dir: Path, count: int, timeout: float) -> float:
    """Wait until `count` mails are stored; the newest file's mtime."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        files = stored(mail_dir)
        if len(files) >= count:
            return max(f.stat().st_mtime for f in files)
        time.sleep(0.05)
    raise RuntimeError(f"only {len(stored(mail_dir))}/{count} mails stored in {timeout}s")


async def bare_loop(port: int, events: list, connections: int) -> float:  # type: ignore[type-arg]
    """The same mails sent straight to the server with aiosmtplib over `connections` kept-open connections."""
    import aiosmtplib

    from consumers.mail_compose import compose
    from lotabots.settings import Settings

    settings = Settings()
    messages = [compose(e, settings) for e in events]
    clients = [aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False) for _ in range(connections)]
    for c in clients:
        await c.connect()

    async def worker(client: aiosmtplib.SMTP) -> None:
        while messages:
            await client.send_message(messages.pop())

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in clients))
    elapsed = time.perf_counter() - start
    for c in clients:
        await c.quit()
    return len(events) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=4, help="mailer_concurrency, and the bare loop's connections")
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()

    from lotabots.db import migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue
    from tests.services import free_ports, kafka_service, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-mailer-"))
    with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(load_tier_config(REPO / "lotabots" / "tiers.toml"))))
        migrate(pg.url)
        rows = []
        for run in range(1, args.runs + 1):
            port = free_ports(1)[0]
            data = tmp / f"data{run}"
            env = {**os.environ, "LOTABOTS_DATA_DIR": str(data), "LOTABOTS_DATABASE_URL": pg.url,
                   "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap, "LOTABOTS_LOG_LEVEL": "WARNING",
                   "LOTABOTS_SMTP_HOST": "127.0.0.1", "LOTABOTS_SMTP_PORT": str(port), "LOTABOTS_SMTP_TLS": "none",
                   "LOTABOTS_DEV_SMTP_PORT": str(port), "LOTABOTS_MAILER_GROUP": f"mailer-bench-{run}-{os.getpid()}",
                   "LOTABOTS_MAILER_CONCURRENCY": str(args.connections)}
            # the group starts at the end of the topic: earlier runs' events are not mailed again
            asyncio.run(_start_group_at_end(kafka.bootstrap, env["LOTABOTS_MAILER_GROUP"]))
            server = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "serve", "dev-smtp"], cwd=REPO, env=env)
            mailer = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "worker", "mailer"], cwd=REPO, env=env)
            mail_dir = data / "mail"
            try:
                warm = _events(20, f"w{run}_")
                asyncio.run(produce(kafka.bootstrap, warm))
                wait_stored(mail_dir, len(warm), 120)
                cpu0 = tree_cpu_seconds(mailer.pid)
                start = asyncio.run(produce(kafka.bootstrap, _events(args.mails, f"b{run}_")))
                last = wait_stored(mail_dir, len(warm) + args.mails, 600)
                cpu = tree_cpu_seconds(mailer.pid) - cpu0
                mailer_rate = args.mails / (last - start)
            finally:
                mailer.terminate()
                mailer.wait(60)
            try:
                bare = asyncio.run(bare_loop(port, _events(args.mails, f"r{run}_"), args.connections))
            finally:
                server.terminate()
                server.wait(30)
            rows.append((run, mailer_rate, bare, cpu * 1e6 / args.mails))
            print(f"run {run}: mailer {mailer_rate:.0f} mails/s, bare aiosmtplib {bare:.0f} mails/s, "
                  f"ratio {mailer_rate / bare:.2f}x, mailer CPU {cpu * 1e6 / args.mails:.0f} µs/mail", flush=True)
    print("\n| run | mailer mails/s | bare aiosmtplib mails/s | ratio | mailer CPU per mail |")
    print("| --- | --- | --- | --- | --- |")
    for run, m, b, c in rows:
        print(f"| {run} | {m:.0f} | {b:.0f} | {m / b:.2f}x | {c:.0f} µs |")


async def _start_group_at_end(bootstrap: str, group: str) -> None:
    from aiokafka import AIOKafkaConsumer

    from lotabots.kafka_io import topic_partitions
    from schemas.topics import AUTH_EVENTS

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = await topic_partitions(consumer, AUTH_EVENTS, timeout_s=30)
        consumer.assign(tps)
        await consumer.commit(dict(await consumer.end_offsets(tps)))
    finally:
        await consumer.stop()


if __name__ == "__main__":
    main()
