"""Usage pipeline throughput: usage.events → Faust → usage.billable → usage service → ClickHouse (chDB),
against a raw aiokafka consumer inserting the same events straight into ClickHouse, in the same run.

    .venv/bin/python bench/bench_usage.py [--events 100000] [--tenants 100] [--bootstrap HOST:PORT]

Both sides get the same burst: the consumers are running and idle, then N CloudEvents (half
`request.accepted`, half `inference.completed`) are produced as fast as aiokafka can; the clock runs
from the first produce to the moment the last row is in ClickHouse. The pipeline side does all its
work (validate, dedupe table, pricing, quota aggregates, the billable topic, the sink's event-id check,
the insert token, the daily rollup view); the raw side only decodes, builds rows and inserts.
A real single-node Kafka broker is started unless --bootstrap is given (it must then be empty of the
catalogue topics' data). Prints events/s for both and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from pathlib import Path

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, wait_http  # noqa: E402

RAW_TOPIC = "bench.raw-usage-events"
NOOP_TOPIC = "bench.faust-noop-events"
ZERO = Decimal(0)


def cloudevents(n: int, tenants: int) -> list[tuple[bytes, bytes]]:
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    out = []
    for i in range(n // 2):
        tenant = f"ten_bench_{i % tenants}".encode()
        rid = f"req_bench_{i:09d}"
        base = {"specversion": "1.0", "source": "/bench", "subject": rid, "time": now,
                "datacontenttype": "application/json"}
        out.append((tenant, orjson.dumps({**base, "id": f"{rid}:accepted", "type": "lotabots.request.accepted", "data": {
            "tenant_id": tenant.decode(), "tier": "pro", "request_id": rid, "max_tokens_reserved": 64}})))
        out.append((tenant, orjson.dumps({**base, "id": f"{rid}:inference", "type": "lotabots.inference.completed",
                                          "data": {"tenant_id": tenant.decode(), "tier": "pro", "request_id": rid,
                                                   "model": "bench", "prompt_tokens": 40, "completion_tokens": 60,
                                                   "latency_ms": 900, "finish_reason": "stop",
                                                   "status": "succeeded"}})))
    return out


async def produce(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                                max_batch_size=512 * 1024)
    await producer.start()
    started = time.perf_counter()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in events]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def raw_row(value: bytes, partition: int, offset: int) -> list:
    """The baseline's row: decode the CloudEvent and map it, nothing else (no checks, dedupe or prices)."""
    e = orjson.loads(value)
    d = e["data"]
    inference = e["type"] == "lotabots.inference.completed"
    return [d["tenant_id"], datetime.fromisoformat(e["time"]), e["id"], e["type"],
            "inference" if inference else "request", d["tier"], d["request_id"], "", d.get("model", ""), "", "",
            "", "", 0 if inference else 1, 0, d.get("prompt_tokens", 0), d.get("completion_tokens", 0),
            d.get("latency_ms", 0), ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, partition, offset, "raw"]


async def raw_baseline(bootstrap: str, chdb: Path, events: list[tuple[bytes, bytes]]) -> float:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from consumers.usage_rows import ROW_COLUMNS, USAGE_EVENTS_TABLE
    from lotabots.clickhouse import open_clickhouse
    from lotabots.settings import Settings
    from lotabots.tiers import get_tier_config
    from schemas.clickhouse.migrate import migrate_clickhouse

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(RAW_TOPIC, 8, 1)])
    await admin.close()
    client = open_clickhouse(Settings(clickhouse_url=f"chdb://{chdb}"))
    migrate_clickhouse(client, get_tier_config(), server=False)
    consumer = AIOKafkaConsumer(RAW_TOPIC, bootstrap_servers=bootstrap, group_id="bench-raw", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    await consumer.getmany(timeout_ms=1000)  # joined and idle
    thread = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    producing = asyncio.create_task(produce(bootstrap, RAW_TOPIC, events))
    started = time.perf_counter()
    inserted = 0
    try:
        while inserted < len(events):
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            rows = [raw_row(r.value, r.partition, r.offset) for records in batch.values() for r in records]
            if rows:
                await loop.run_in_executor(thread, partial(client.insert, USAGE_EVENTS_TABLE, rows,
                                                           column_names=list(ROW_COLUMNS)))
                await consumer.commit()
                inserted += len(rows)
        elapsed = time.perf_counter() - started
    finally:
        await producing
        await consumer.stop()
        thread.shutdown()
        client.close()
    return elapsed


def _mark_done(done_file: str) -> None:
    Path(done_file).write_text(str(time.time()))
    os._exit(0)


def _spawn(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def faust_noop_child(bootstrap: str, n: int, done_file: str) -> None:
    """The Faust ceiling: an agent that only counts messages (run in its own process)."""
    import faust

    app = faust.App(f"bench-noop-{os.getpid()}", broker=f"kafka://{bootstrap}", value_serializer="raw",
                    key_serializer="raw", web_enabled=False, topic_disable_leader=True,
                    consumer_auto_offset_reset="earliest", broker_max_poll_records=5000,
                    stream_buffer_maxsize=20000)
    topic = app.topic(NOOP_TOPIC, value_serializer="raw")
    seen = 0

    @app.agent(topic)
    async def count(stream):  # type: ignore[no-untyped-def]
        nonlocal seen
        async for batch in stream.take(5000, within=0.1):
            seen += len(batch)
            if seen >= n:
                _mark_done(done_file)

    faust.Worker(app, quiet=True, loglevel="warning").execute_from_commandline()


async def faust_noop(bootstrap: str, workdir: Path, events: list[tuple[bytes, bytes]]) -> float:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(NOOP_TOPIC, 8, 1)])
    await admin.close()
    done = workdir / "noop.done"
    child = _spawn([sys.executable, __file__, "--noop-child", bootstrap, str(len(events)), str(done)])
    try:
        await asyncio.sleep(12)  # joined its group, idle
        started = time.time()
        await produce(bootstrap, NOOP_TOPIC, events)
        while not done.exists():
            if child.poll() is not None and not done.exists():
                raise RuntimeError("the Faust no-op consumer exited early")
            await asyncio.sleep(0.05)
        return float(done.read_text()) - started
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


async def pipeline(bootstrap: str, workdir: Path, events: list[tuple[bytes, bytes]]) -> tuple[float, dict]:
    from lotabots.tiers import get_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import USAGE_EVENTS, topic_catalogue
    from tests.services import free_ports

    await sync_topics(bootstrap, topic_catalogue(get_tier_config()))
    usage_port, health_port = free_ports(2)
    env = {**os.environ, "LOTABOTS_KAFKA_BOOTSTRAP": bootstrap, "LOTABOTS_DATA_DIR": str(workdir / "data"),
           "LOTABOTS_USAGE_PORT": str(usage_port), "LOTABOTS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
    logs = workdir / "logs"
    logs.mkdir()
    procs = []
    for name, argv, extra in (("usage-service", ["serve", "usage"], {}),
                              ("usage-stream", ["worker", "usage-stream"], {"LOTABOTS_METRICS_PORT": str(health_port)})):
        procs.append(_spawn([sys.executable, "-m", "lotabots.cli", *argv], {**env, **extra}, logs / f"{name}.log"))
    url = f"http://127.0.0.1:{usage_port}"
    try:
        try:
            wait_http(f"{url}/readyz", 120)
            wait_http(f"http://127.0.0.1:{health_port}/healthz", 120)
        except RuntimeError:
            for log in logs.iterdir():
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)
            raise
        await asyncio.sleep(8)  # the Faust worker finishes recovery and joins its group
        producing = asyncio.create_task(produce(bootstrap, USAGE_EVENTS, events))
        started = time.perf_counter()
        count = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while count < len(events):
                await asyncio.sleep(0.25)
                r = await client.post("/internal/v1/sql", json={
                    "sql": "SELECT count() FROM lotabots_usage.usage_events WHERE startsWith(tenant_id, 'ten_bench_')"})
                count = int(r.json()["rows"][0][0])
            elapsed = time.perf_counter() - started
            produce_s = await producing
            check = (await client.post("/internal/v1/sql", json={"sql": (
                "SELECT sum(events), sum(requests), sum(prompt_tokens) FROM lotabots_usage.usage_daily "
                "WHERE startsWith(tenant_id, 'ten_bench_')")})).json()["rows"][0]
        return elapsed, {"produce_s": produce_s, "rollup": check}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-usage-"))
    broker = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            from tests.services import start_kafka

            broker = start_kafka(workdir / "kafka")
            bootstrap = broker.bootstrap
        events = cloudevents(args.events, args.tenants)
        raw_s = await raw_baseline(bootstrap, workdir / "raw-chdb", events)
        noop_s = await faust_noop(bootstrap, workdir, events)
        pipe_s, extra = await pipeline(bootstrap, workdir, events)
        n = len(events)
        raw_rate, noop_rate, pipe_rate = n / raw_s, n / noop_s, n / pipe_s
        print(f"events: {n} ({args.tenants} tenants), producer alone: {n / extra['produce_s']:,.0f} events/s")
        print(f"raw aiokafka -> ClickHouse insert  : {raw_rate:10,.0f} events/s ({raw_s:.1f} s)")
        print(f"Faust no-op agent (Faust's ceiling) : {noop_rate:10,.0f} events/s ({noop_s:.1f} s)")
        print(f"usage.events -> Faust -> ClickHouse : {pipe_rate:10,.0f} events/s ({pipe_s:.1f} s)")
        print(f"pipeline / raw: {pipe_rate / raw_rate:.2f}  (goal >= 0.50; goal >= 20,000 events/s); "
              f"pipeline / Faust no-op: {pipe_rate / noop_rate:.2f}; load average {os.getloadavg()[0]:.1f}")
        events_in_rollup, requests, prompt = (int(x) for x in extra["rollup"])
        assert (events_in_rollup, requests, prompt) == (n, n // 2, 40 * (n // 2)), extra["rollup"]
        print(f"rollup check: {events_in_rollup} events, {requests} requests, {prompt} prompt tokens (exact)")
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--noop-child"]:  # the Faust ceiling's own process (Faust owns its event loop)
        faust_noop_child(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        asyncio.run(main())
