"""Webhook dispatcher: deliveries/s to a local receiver, and p50/p99 from terminal result to delivery.

Real PostgreSQL and a real Kafka broker are started as processes; the dispatcher is the real
`lotabots worker webhooks` process (allow-list: 127.0.0.1/32). Synthetic `succeeded` lifecycle events
are produced to `results` for requests rows inserted first (no model in the loop: this measures the
dispatcher), and the tenant has one `all_requests` endpoint at a loopback receiver in this process.

  paced run : events at a steady low rate -> latency from the event's time to the receiver's arrival
  burst run : N events at once             -> deliveries/s the dispatcher sustains (and latency under load)
  baseline  : the same bodies POSTed straight to the same receiver with httpx at the same concurrency
              (the ceiling of the machine's HTTP path): the dispatcher's figure is printed as a ratio.

Usage: python bench/bench_webhooks.py [--burst 2000] [--paced 200] [--rate 20]
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

import orjson
from _common import REPO, tree_cpu_seconds


class Sink:
    """The receiver, run as its own process (`--sink`) so the bench's bookkeeping never slows it down.

    A minimal asyncio HTTP/1.1 keep-alive server: a POST is recorded as (arrival time, request id,
    event time) and answered 204; GET /stats returns the records, GET /samples the last raw deliveries.
    """

    def __init__(self) -> None:
        self.records: list[tuple[float, str, str]] = []
        self.samples: list[tuple[str, dict[str, str]]] = []

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if lines[0].startswith("GET /stats"):
                    out = orjson.dumps(self.records)
                elif lines[0].startswith("GET /samples"):
                    out = orjson.dumps(self.samples[-50:])
                else:
                    now = time.time()
                    payload = orjson.loads(body)
                    self.records.append((now, payload["data"]["id"], payload["timestamp"]))
                    if len(self.samples) < 200 or len(self.records) % 50 == 0:
                        self.samples.append((body.decode(), headers))
                    writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def run_sink() -> None:
    sink = Sink()
    server = await asyncio.start_server(sink.serve, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


class SinkProcess:
    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def get(self, what: str) -> list:  # type: ignore[type-arg]
        import httpx

        return orjson.loads(httpx.get(self.url(what), timeout=30).content)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def setup_tenant(db_url: str, receiver_url: str, settings_env: dict[str, str]) -> tuple[str, str]:
    """A tenant with one all-requests endpoint; returns (tenant_id, endpoint secret)."""
    from gateway.security import Principal
    from gateway.tenants import create_tenant
    from gateway.webhook_models import CreateEndpointBody
    from gateway.webhook_secrets import SigningSecretStore
    from gateway.webhook_service import WebhookService
    from gateway.webhook_signing import SecretBox
    from lotabots.db import make_engine
    from lotabots.settings import Settings
    from lotabots.tiers import load_tier_config

    settings = Settings(**{k.removeprefix("LOTABOTS_").lower(): v for k, v in settings_env.items()})
    engine = make_engine(db_url)
    tenant_id, _ = await create_tenant(engine, load_tier_config(REPO / "lotabots" / "tiers.toml"), "bench", "pro")
    who = Principal(tenant_id, "pro", frozenset({"admin"}), "bench", "api_key")
    service = WebhookService(settings, engine, None, SigningSecretStore(engine, SecretBox.from_settings(settings)))  # type: ignore[arg-type]
    _, _, secret = await service.create_endpoint(who, CreateEndpointBody(url=receiver_url, all_requests=True,
                                                                         event_types=["succeeded"]))
    await engine.dispose()
    return tenant_id, secret


async def insert_requests(db_url: str, tenant_id: str, n: int, tag: str) -> list[str]:
    from lotabots.db import make_engine
    from schemas.relational import requests_table

    now = datetime.now(UTC)
    ids = [f"req_bench{tag}{i:06d}" for i in range(n)]
    rows = [{"id": rid, "tenant_id": tenant_id, "tier": "pro", "status": "running", "status_rank": 1,
             "input": {"messages": [{"role": "user", "content": "What is the capital of France?"}]},
             "params": {"max_tokens": 8}, "request_hash": "bench", "created_at": now, "updated_at": now}
            for rid in ids]
    engine = make_engine(db_url)
    async with engine.begin() as conn:
        for i in range(0, n, 500):
            await conn.execute(requests_table.insert(), rows[i:i + 500])
    await engine.dispose()
    return ids


async def produce_events(bootstrap: str, tenant_id: str, ids: list[str], rate: float | None) -> None:
    from aiokafka import AIOKafkaProducer

    from lotabots.ids import new_id
    from schemas.events import LifecycleType, RequestLifecycleEvent
    from schemas.topics import RESULTS

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=2)
    await producer.start()
    try:
        futures = []
        start = time.monotonic()
        for i, rid in enumerate(ids):
            if rate:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            now = datetime.now(UTC)
            event = RequestLifecycleEvent(
                event_id=new_id("evt"), request_id=rid, tenant_id=tenant_id, tier="pro",
                type=LifecycleType.SUCCEEDED, at=now, output="Paris.", finish_reason="stop", prompt_tokens=12,
                completion_tokens=3, started_at=now, finished_at=now,
            )
            futures.append(await producer.send(RESULTS, event.model_dump_json().encode(), key=rid.encode()))
        for f in futures:
            await f
    finally:
        await producer.stop()


async def wait_arrivals(sink: SinkProcess, ids: set[str], timeout: float) -> list[tuple[float, str]]:
    """(arrival, event time) of the first delivery of each request in `ids`."""
    deadline = time.monotonic() + timeout
    got: dict[str, tuple[float, str]] = {}
    while time.monotonic() < deadline:
        for at, rid, event_ts in await asyncio.to_thread(sink.get, "stats"):
            if rid in ids:
                got.setdefault(rid, (at, event_ts))
        if len(got) >= len(ids):
            return list(got.values())
        await asyncio.sleep(0.5)
    raise RuntimeError(f"only {len(got)}/{len(ids)} deliveries arrived in {timeout}s")


def latencies_ms(arrivals: list[tuple[float, str]]) -> list[float]:
    return [(at - datetime.fromisoformat(ts).timestamp()) * 1000 for at, ts in arrivals]


async def baseline(sink: SinkProcess, bodies: list[bytes], concurrency: int) -> float:
    """The same bodies POSTed straight to the same receiver with httpx, at the same concurrency and over
    the same small pools as the dispatcher (8 in flight each): the machine's HTTP ceiling, in POSTs/s."""
    import httpx

    from consumers.webhook_sender import IN_FLIGHT_PER_POOL

    queue = list(bodies)
    pools = [httpx.AsyncClient(limits=httpx.Limits(max_connections=4 * IN_FLIGHT_PER_POOL))
             for _ in range(max(1, -(-concurrency // IN_FLIGHT_PER_POOL)))]

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            r = await client.post(sink.url("baseline"), content=body, headers={"content-type": "application/json"})
            assert r.status_code == 204

    start = time.perf_counter()
    await asyncio.gather(*(worker(pools[i % len(pools)]) for i in range(concurrency)))
    elapsed = time.perf_counter() - start
    for client in pools:
        await client.aclose()
    return len(bodies) / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--burst", type=int, default=2000)
    ap.add_argument("--paced", type=int, default=200)
    ap.add_argument("--rate", type=float, default=20.0)
    ap.add_argument("--in-flight", type=int, default=128)
    ap.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)  # internal: run the receiver
    args = ap.parse_args()
    if args.sink:
        asyncio.run(run_sink())
        return

    from lotabots.db import migrate
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from lotabots.webhook_verify import verify_webhook
    from schemas.topics import topic_catalogue
    from tests.services import kafka_service, postgres_service

    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    sink = SinkProcess()
    try:
        with postgres_service(tmp / "pg") as pg, kafka_service(tmp / "kafka") as kafka:
            asyncio.run(sync_topics(kafka.bootstrap,
                                    topic_catalogue(load_tier_config(REPO / "lotabots" / "tiers.toml"))))
            migrate(pg.url)
            hook_env = {"LOTABOTS_WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32", "LOTABOTS_DATA_DIR": str(tmp / "data"),
                        "LOTABOTS_WEBHOOK_MAX_IN_FLIGHT": str(args.in_flight)}
            env = {**os.environ, **hook_env, "LOTABOTS_DATABASE_URL": pg.url,
                   "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap, "LOTABOTS_LOG_LEVEL": "WARNING"}
            tenant_id, secret = asyncio.run(setup_tenant(pg.url, sink.url("hooks"), hook_env))
            dispatcher = subprocess.Popen([sys.executable, "-m", "lotabots.cli", "worker", "webhooks"],
                                          cwd=REPO, env=env)
            try:
                # warm-up: the group joins and connections open
                warm = asyncio.run(insert_requests(pg.url, tenant_id, 20, "w"))
                asyncio.run(produce_events(kafka.bootstrap, tenant_id, warm, None))
                asyncio.run(wait_arrivals(sink, set(warm), 120))

                paced = asyncio.run(insert_requests(pg.url, tenant_id, args.paced, "p"))
                asyncio.run(produce_events(kafka.bootstrap, tenant_id, paced, args.rate))
                paced_lat = latencies_ms(asyncio.run(wait_arrivals(sink, set(paced), 120)))

                burst = asyncio.run(insert_requests(pg.url, tenant_id, args.burst, "b"))
                if os.environ.get("BENCH_PROFILE"):  # collapsed stacks of the dispatcher during the burst
                    subprocess.Popen([os.environ.get("PY_SPY", "py-spy"), "record", "-d", "10", "-o", os.environ["BENCH_PROFILE"], "-f", "raw",
                                      "-p", str(dispatcher.pid)])
                cpu_before = tree_cpu_seconds(dispatcher.pid)
                start = time.time()
                asyncio.run(produce_events(kafka.bootstrap, tenant_id, burst, None))
                arrived = asyncio.run(wait_arrivals(sink, set(burst), 600))
                burst_rate = len(arrived) / (max(at for at, _ in arrived) - start)
                burst_lat = latencies_ms(arrived)
                cpu_per_delivery = (tree_cpu_seconds(dispatcher.pid) - cpu_before) / len(arrived)
            finally:
                dispatcher.terminate()
                dispatcher.wait(60)
            samples = sink.get("samples")
            for body, headers in samples:  # the deliveries are authentic
                verify_webhook(headers, body, secret, tolerance=600)
            bodies = [body.encode() for body, _ in samples]
            cpu_before = time.process_time()
            ceiling = asyncio.run(baseline(sink, [bodies[i % len(bodies)] for i in range(args.burst)],
                                           args.in_flight))
            cpu_per_post = (time.process_time() - cpu_before) / args.burst
    finally:
        sink.stop()
    print(f"paced {args.paced} events at {args.rate:.0f}/s : result->delivery p50 {statistics.median(paced_lat):7.1f} ms"
          f"  p99 {pct(paced_lat, 0.99):7.1f} ms")
    print(f"burst of {args.burst} events      : {burst_rate:7.0f} deliveries/s; result->delivery "
          f"p50 {statistics.median(burst_lat):7.1f} ms  p99 {pct(burst_lat, 0.99):7.1f} ms")
    print(f"baseline: raw httpx POSTs    : {ceiling:7.0f} POSTs/s at concurrency {args.in_flight}")
    print(f"ratio dispatcher / raw POSTs : {burst_rate / ceiling:.2f}x deliveries/s  (a delivery also reads its row"
          f" and secrets, signs, logs the attempt in PostgreSQL and commits Kafka offsets)")
    print(f"CPU per delivery             : dispatcher {cpu_per_delivery * 1e6:5.0f} us vs raw POST {cpu_per_post * 1e6:5.0f} us"
          f" ({cpu_per_post / cpu_per_delivery:.2f}x of the dispatcher's CPU is the HTTP POST itself)")


if __name__ == "__main__":
    main()
