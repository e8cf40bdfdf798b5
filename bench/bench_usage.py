"""Usage pipeline throughput: usage.events → Faust → usage.billable → usage service → ClickHouse (chDB),
against a raw aiokafka consumer inserting the same events straight into ClickHouse, in the same run.

    .venv/bin/python bench/bench_usage.py [--events 300000] [--tenants 100] [--in-flight 80] [--bootstrap HOST:PORT]
    .venv/bin/python bench/bench_usage.py --compare-cluster [--events 100000] [--rounds 2]   # 1 vs 3 brokers

Both sides get the same burst, produced the way the platform produces it: the gateway's producer
settings and its group-commit emitter (lotabots.usage_events.UsageBatcher) with ``--in-flight`` facts
awaiting their ack at a time. 80 in flight gives 10 facts per message over 100 tenants and 8
partitions, what one gateway at 128 connections emits (bench_submit measures ~80 facts per group). The consumers run in their own
processes, joined and idle; the clock runs from the first produce to the moment ClickHouse took the
last row (the baseline's child stamps its last insert; the pipeline's is max(inserted_at)). The
pipeline does all its work (validate each fact, dedupe table, pricing, quota counters, the billable
topic, the sink's event-id check, the insert token, the daily rollup view); the raw side only splits
the batches, builds rows and inserts. Both use the platform's collector settings (settle_heap).
A real single-node Kafka broker is started unless --bootstrap is given (it must then be empty of the
catalogue topics' data). Prints events/s for both, a Faust no-op agent's ceiling, and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import REPO, wait_http  # noqa: E402

RAW_TOPIC = "bench.raw-usage-events"
IN_FLIGHT = 80  # one gateway at 128 connections: its DB group commit resumes ~80 submits at once (bench_submit)
FACT_RATE = 50_000
NOOP_TOPIC = "bench.faust-noop-events"
ZERO = Decimal(0)


def cloudevents(n: int, tenants: int) -> list[tuple[bytes, bytes]]:
    """N facts of N/2 requests, timed as if they happened at ``FACT_RATE`` facts/s up to now (real facts
    carry distinct, rising times; one shared time would make every event-id check scan the whole table)."""
    start = datetime.now(UTC) - timedelta(seconds=n / FACT_RATE)
    out = []
    for i in range(n // 2):
        tenant = f"ten_bench_{i % tenants}".encode()
        rid = f"req_bench_{i:09d}"
        at = (start + timedelta(seconds=2 * i / FACT_RATE)).isoformat().replace("+00:00", "Z")
        base = {"specversion": "1.0", "source": "/bench", "subject": rid, "time": at,
                "datacontenttype": "application/json"}
        out.append((tenant, orjson.dumps({**base, "id": f"{rid}:accepted", "type": "lotabots.request.accepted", "data": {
            "tenant_id": tenant.decode(), "tier": "pro", "request_id": rid, "max_tokens_reserved": 64}})))
        out.append((tenant, orjson.dumps({**base, "id": f"{rid}:inference", "type": "lotabots.inference.completed",
                                          "data": {"tenant_id": tenant.decode(), "tier": "pro", "request_id": rid,
                                                   "model": "bench", "prompt_tokens": 40, "completion_tokens": 60,
                                                   "latency_ms": 900, "finish_reason": "stop",
                                                   "status": "succeeded"}})))
    return out


async def produce(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]], in_flight: int) -> tuple[float, int]:
    """Send the facts the way the platform does: the gateway's producer settings and its UsageBatcher, with
    ``in_flight`` facts awaiting their ack at any time (``in_flight`` submits in flight across the gateways;
    each 202 waits for its fact's ack). Returns the seconds taken and the number of messages."""
    from lotabots.kafka_io import make_producer
    from lotabots.settings import Settings
    from lotabots.usage_events import USAGE_FACTS_PER_MESSAGE, UsageBatcher

    producer = make_producer(Settings(kafka_bootstrap=bootstrap), client_id="bench-usage")
    await producer.start()
    batcher = UsageBatcher(producer, topic)
    slots = asyncio.Semaphore(in_flight)
    messages_before = _messages_observed(USAGE_FACTS_PER_MESSAGE)
    started = time.perf_counter()
    try:
        acks = []
        for key, value in events:
            await slots.acquire()
            acked = batcher.add(key.decode(), value)
            acked.add_done_callback(lambda _: slots.release())
            acks.append(acked)
        await asyncio.gather(*acks)
    finally:
        await producer.stop()
    return time.perf_counter() - started, _messages_observed(USAGE_FACTS_PER_MESSAGE) - messages_before


def _messages_observed(histogram: Any) -> int:
    return int(next(s.value for m in histogram.collect() for s in m.samples if s.name.endswith("_count")))


def raw_row(e: dict, partition: int, offset: int) -> list:
    """The baseline's row: map a decoded CloudEvent, nothing else (no checks, dedupe or prices)."""
    d = e["data"]
    inference = e["type"] == "lotabots.inference.completed"
    return [d["tenant_id"], datetime.fromisoformat(e["time"]), e["id"], e["type"],
            "inference" if inference else "request", d["tier"], d["request_id"], "", d.get("model", ""), "", "",
            "", "", 0 if inference else 1, 0, d.get("prompt_tokens", 0), d.get("completion_tokens", 0),
            d.get("latency_ms", 0), ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, ZERO, partition, offset, "raw"]


def raw_child(bootstrap: str, chdb: str, n: int, ready_file: str, done_file: str) -> None:
    """The baseline, in its own process like the pipeline's: aiokafka consumer -> rows -> ClickHouse insert."""
    asyncio.run(_raw_consume(bootstrap, Path(chdb), n, Path(ready_file), done_file))


async def _raw_consume(bootstrap: str, chdb: Path, n: int, ready: Path, done_file: str) -> None:
    from aiokafka import AIOKafkaConsumer

    from consumers.usage_rows import ROW_COLUMNS, USAGE_EVENTS_TABLE
    from lotabots.clickhouse import open_clickhouse
    from lotabots.runners import settle_heap
    from lotabots.settings import Settings
    from lotabots.tiers import get_tier_config
    from schemas.clickhouse.migrate import migrate_clickhouse
    from schemas.usage import usage_message_events

    client = open_clickhouse(Settings(clickhouse_url=f"chdb://{chdb}"))
    migrate_clickhouse(client, get_tier_config(), server=False)
    consumer = AIOKafkaConsumer(RAW_TOPIC, bootstrap_servers=bootstrap, group_id="bench-raw", auto_offset_reset="earliest",
                                enable_auto_commit=False, max_poll_records=5000, fetch_max_bytes=64 * 1024 * 1024)
    await consumer.start()
    await consumer.getmany(timeout_ms=1000)  # joined and idle
    settle_heap()  # the same collector settings as the platform's processes
    ready.write_text("ready")  # noqa: ASYNC240 - a marker file, once
    thread = ThreadPoolExecutor(1)
    loop = asyncio.get_running_loop()
    inserted = 0
    while inserted < n:
        batch = await consumer.getmany(timeout_ms=200, max_records=5000)
        rows = [raw_row(e, r.partition, r.offset) for records in batch.values() for r in records
                for e in usage_message_events(r.value)]
        if rows:
            await loop.run_in_executor(thread, partial(client.insert, USAGE_EVENTS_TABLE, rows,
                                                       column_names=list(ROW_COLUMNS)))
            await consumer.commit()
            inserted += len(rows)
    _mark_done(done_file)


async def raw_baseline(bootstrap: str, workdir: Path, events: list[tuple[bytes, bytes]], in_flight: int) -> float:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(RAW_TOPIC, 8, 1)])
    await admin.close()
    ready, done = workdir / "raw.ready", workdir / "raw.done"
    child = _spawn([sys.executable, __file__, "--raw-child", bootstrap, str(workdir / "raw-chdb"), str(len(events)),
                    str(ready), str(done)])
    try:
        await _wait_for(ready, child, 120)
        started = time.time()
        await produce(bootstrap, RAW_TOPIC, events, in_flight)
        await _wait_for(done, child, 600)
        return float(done.read_text()) - started
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


async def _wait_for(path: Path, child: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():  # noqa: ASYNC240 - a marker file
        if child.poll() is not None and not path.exists():  # noqa: ASYNC240
            raise RuntimeError(f"the bench child {child.args} exited early")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the bench child {child.args} did not get to {path.name}")
        await asyncio.sleep(0.05)


def _mark_done(done_file: str) -> None:
    Path(done_file).write_text(str(time.time()))
    os._exit(0)


def _spawn(argv: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child owns it until it exits
    return subprocess.Popen(argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def faust_noop_child(bootstrap: str, count_file: str, done_file: str) -> None:
    """The Faust ceiling: an agent that only counts messages (run in its own process) until it has seen the
    number of messages written to ``count_file`` (the producer writes it when it is done)."""
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
            _done_when_all_seen()

    @app.timer(0.05)
    async def check() -> None:  # the last batch may come before the producer wrote the count
        _done_when_all_seen()

    def _done_when_all_seen() -> None:
        if os.path.exists(count_file) and seen >= int(Path(count_file).read_text() or 0):
            _mark_done(done_file)

    faust.Worker(app, quiet=True, loglevel="warning").execute_from_commandline()


async def faust_noop(bootstrap: str, workdir: Path, events: list[tuple[bytes, bytes]], in_flight: int) -> float:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(NOOP_TOPIC, 8, 1)])
    await admin.close()
    done = workdir / "noop.done"
    count = workdir / "noop.count"
    child = _spawn([sys.executable, __file__, "--noop-child", bootstrap, str(count), str(done)])
    try:
        await asyncio.sleep(12)  # joined its group, idle
        started = time.time()
        _, messages = await produce(bootstrap, NOOP_TOPIC, events, in_flight)
        count.write_text(str(messages))  # the child stops at this many messages (one per batch)
        await _wait_for(done, child, 600)
        return float(done.read_text()) - started
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()


async def pipeline(bootstrap: str, workdir: Path, events: list[tuple[bytes, bytes]],
                   in_flight: int) -> tuple[float, dict]:
    from lotabots.tiers import get_tier_config
    from lotabots.topic_admin import catalogue_for, sync_topics
    from schemas.topics import USAGE_EVENTS
    from tests.services import free_ports

    await sync_topics(bootstrap, await catalogue_for(bootstrap, get_tier_config()))  # RF from the live brokers
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
        started = time.time()
        producing = asyncio.create_task(produce(bootstrap, USAGE_EVENTS, events, in_flight))
        count = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            while count < len(events):
                await asyncio.sleep(0.25)
                r = await client.post("/internal/v1/sql", json={
                    "sql": "SELECT count() FROM lotabots_usage.usage_events WHERE startsWith(tenant_id, 'ten_bench_')"})
                count = int(r.json()["rows"][0][0])
            # the end is when ClickHouse took the last row (as the baseline's child stamps its last insert),
            # not when this loop happened to look
            last = (await client.post("/internal/v1/sql", json={"sql": (
                "SELECT toUnixTimestamp64Milli(max(inserted_at)) FROM lotabots_usage.usage_events "
                "WHERE startsWith(tenant_id, 'ten_bench_')")})).json()["rows"][0][0]
            elapsed = int(last) / 1000 - started
            produce_s, messages = await producing
            check = (await client.post("/internal/v1/sql", json={"sql": (
                "SELECT sum(events), sum(requests), sum(prompt_tokens) FROM lotabots_usage.usage_daily "
                "WHERE startsWith(tenant_id, 'ten_bench_')")})).json()["rows"][0]
        return elapsed, {"produce_s": produce_s, "messages": messages, "rollup": check}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


async def compare_cluster(args: argparse.Namespace) -> None:
    """The pipeline on a fresh single broker and a fresh 3-node cluster, alternately; figures per round."""
    from tests.kafka_cluster import start_kafka_cluster
    from tests.services import start_kafka

    events = cloudevents(args.events, args.tenants)
    n = len(events)
    rates: dict[int, list[float]] = {1: [], 3: []}
    produce: dict[int, list[float]] = {1: [], 3: []}
    for r, brokers in enumerate([1, 3] * args.rounds):
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-usage-{brokers}b-"))
        kafka = start_kafka(workdir / "kafka") if brokers == 1 else start_kafka_cluster(workdir / "kafka", brokers)
        try:
            pipe_s, extra = await pipeline(kafka.bootstrap, workdir, events, args.in_flight)
            assert tuple(int(x) for x in extra["rollup"]) == (n, n // 2, 40 * (n // 2)), extra["rollup"]
        finally:
            kafka.stop()
            shutil.rmtree(workdir, ignore_errors=True)
        rates[brokers].append(n / pipe_s)
        produce[brokers].append(n / extra["produce_s"])
        print(f"round {r + 1} ({brokers} broker{'s' if brokers > 1 else ''}): pipeline {n / pipe_s:10,.0f} events/s, "
              f"producer alone {n / extra['produce_s']:10,.0f} events/s; load average {os.getloadavg()[0]:.1f}",
              flush=True)
    med = {b: statistics.median(v) for b, v in rates.items()}
    pmed = {b: statistics.median(v) for b, v in produce.items()}
    print(f"median of {args.rounds}: 1 broker {med[1]:,.0f} events/s, 3 brokers {med[3]:,.0f} events/s; "
          f"3/1 = {med[3] / med[1]:.2f} (pipeline), {pmed[3] / pmed[1]:.2f} (acks=all produce of the burst)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--in-flight", type=int, default=IN_FLIGHT,
                        help="facts awaiting their ack at any time (submits in flight across the gateways)")
    parser.add_argument("--compare-cluster", action="store_true",
                        help="only the pipeline, on one broker and on a local 3-broker cluster (RF 3, "
                             "min.insync.replicas 2), interleaved 1, 3, 1, 3: the price of replication")
    parser.add_argument("--rounds", type=int, default=2, help="with --compare-cluster: rounds of (1, 3)")
    args = parser.parse_args()
    if args.compare_cluster:
        await compare_cluster(args)
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench-usage-"))
    broker = None
    try:
        bootstrap = args.bootstrap
        if bootstrap is None:
            from tests.services import start_kafka

            broker = start_kafka(workdir / "kafka")
            bootstrap = broker.bootstrap
        events = cloudevents(args.events, args.tenants)
        raw_s = await raw_baseline(bootstrap, workdir, events, args.in_flight)
        noop_s = await faust_noop(bootstrap, workdir, events, args.in_flight)
        pipe_s, extra = await pipeline(bootstrap, workdir, events, args.in_flight)
        n = len(events)
        raw_rate, noop_rate, pipe_rate = n / raw_s, n / noop_s, n / pipe_s
        print(f"events: {n} ({args.tenants} tenants) in {extra['messages']:,} messages "
              f"({n / extra['messages']:.1f} facts per message, {args.in_flight} in flight); "
              f"producer alone: {n / extra['produce_s']:,.0f} events/s")
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
        faust_noop_child(sys.argv[2], sys.argv[3], sys.argv[4])
    elif sys.argv[1:2] == ["--raw-child"]:  # the baseline's own process
        raw_child(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    else:
        asyncio.run(main())
