"""Chaos: under a mixed, bounded load, SIGKILL every kind of LotaBots process at random instants, more
than once each, stop PostgreSQL for a few seconds, and then check the ledger exactly:

- every acknowledged submit (202) reached a terminal state, with one outcome;
- billed requests and tokens in ClickHouse (raw facts and the daily rollup) equal the request log;
- every request that subscribed a webhook was delivered at least once, each attempt with one webhook-id;
- the dead-letter topics hold the poison the test injected and nothing else;
- no client saw a 5xx other than a 503 with Retry-After, and no process died that was not killed.

The schedule is random but seeded (LOTABOTS_CHAOS_SEED, printed in the report) so a failure replays.
The stack is the suite's own (tests/chaos/harness.py): its PostgreSQL, Kafka and chDB are not shared.
Kafka is a 3-node KRaft cluster (replication factor 3, min.insync.replicas 2); one node at a time is
SIGKILLed and restarted, and the next kill waits until every replica is back in sync.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from lotabots.broker import LocalCluster
from lotabots.db import make_engine, migrate
from lotabots.tiers import load_tier_config
from lotabots.topic_admin import sync_topics
from schemas.relational import requests_table as R
from schemas.topics import RESULTS, USAGE_EVENTS, topic_catalogue
from tests.chaos.harness import ChaosStack, build_chaos_stack
from tests.chaos.load import Clients, Tenant
from tests.conftest import _new_tenant
from tests.kafka_cluster import start_kafka_cluster, wait_in_sync, wait_live_brokers
from tests.services import ServiceHandle, start_postgres
from tests.stack import REPO
from tests.usage.test_billing_exact import billed, expected_totals
from tests.usage_pipeline import UsagePipeline
from tests.webhooks.receiver import Receiver

pytestmark = pytest.mark.integration

TIERS = load_tier_config(REPO / "lotabots" / "tiers.toml")
TERMINAL = ("succeeded", "failed", "canceled")
SEED = int(os.environ.get("LOTABOTS_CHAOS_SEED", "20261206"))
ROUNDS = 2  # every victim is hit this many times
MIN_REQUESTS, MAX_REQUESTS = 48, 160
POISON = b"\x00not a usage event: injected by the chaos test"


class Services:
    def __init__(self, postgres: ServiceHandle, kafka: LocalCluster) -> None:
        self.postgres = postgres
        self.kafka = kafka


@pytest.fixture(scope="module")
def chaos_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    root = tmp_path_factory.mktemp("chaos")
    postgres = start_postgres(root)
    kafka = start_kafka_cluster(root / "kafka", brokers=3)  # RF 3, min.insync.replicas 2 (the catalogue's)
    try:
        asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(TIERS, kafka.brokers)))
        migrate(postgres.url)
        yield Services(postgres, kafka)
    finally:
        kafka.stop()
        postgres.stop()


@pytest.fixture(scope="module")
def chaos_stack(chaos_services: Services, model_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosStack]:
    root = tmp_path_factory.mktemp("chaos-stack")
    (root / "data").mkdir()
    (root / "logs").mkdir()
    env = {
        **os.environ,
        "LOTABOTS_DATA_DIR": str(root / "data"),
        "LOTABOTS_DATABASE_URL": chaos_services.postgres.url,
        "LOTABOTS_KAFKA_BOOTSTRAP": chaos_services.kafka.bootstrap,
        "LOTABOTS_MODEL_DIR": str(model_dir),
        "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "LOTABOTS_INFERENCE_THREADS": "1",
        "LOTABOTS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    chaos = build_chaos_stack(env, root / "logs")
    try:
        chaos.wait_healthy()
        yield chaos
    finally:
        chaos.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
async def chaos_engine(chaos_services: Services) -> AsyncIterator[Any]:
    engine = make_engine(chaos_services.postgres.url)
    yield engine
    await engine.dispose()


# ---- reading the outcome -------------------------------------------------------------------------


async def _read_topic(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of a topic now (up to the end offsets at the time the partitions are assigned)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():  # without a group the consumer takes every partition itself
            assert time.monotonic() < deadline, f"no partitions of {topic} assigned"
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        out: list[bytes] = []
        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in tps])

        while await behind():
            for records in (await consumer.getmany(*tps, timeout_ms=1000)).values():
                out += [r.value or b"" for r in records]
        return out
    finally:
        await consumer.stop()


async def _outcomes(bootstrap: str, ids: set[str]) -> dict[str, set[str]]:
    """request id -> the terminal lifecycle types `results` holds for it (one type = one outcome)."""
    found: dict[str, set[str]] = defaultdict(set)
    for value in await _read_topic(bootstrap, RESULTS):
        try:
            event = json.loads(value)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("request_id") in ids and event.get("type") in TERMINAL:
            found[event["request_id"]].add(event["type"])
    return found


async def _wait_all_terminal(engine: Any, ids: list[str], timeout: float = 420) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(R.c.id, R.c.status).where(R.c.id.in_(ids)))).all()
        status = dict(rows)
        if len(status) == len(ids) and all(s in TERMINAL for s in status.values()):
            return status
        pending = Counter(s for s in status.values() if s not in TERMINAL)
        assert time.monotonic() < deadline, f"not terminal after {timeout}s: {pending}, rows {len(status)}/{len(ids)}"
        await asyncio.sleep(1)


# ---- the test ----------------------------------------------------------------------------------------


async def test_every_acknowledged_request_ends_once_and_is_billed_exactly_under_chaos(
    chaos_services: Services, chaos_stack: ChaosStack, chaos_engine: Any, receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    rng = random.Random(SEED)
    started = time.monotonic()
    bootstrap = chaos_services.kafka.bootstrap
    tenants = []
    for tier, hooked in (("free", False), ("pro", False), ("pro", True), ("enterprise", True)):
        tenant_id, key = await _new_tenant(chaos_engine, tier)
        tenants.append(Tenant(tenant_id, key, tier, receiver.url(f"hooks/{tenant_id}") if hooked else None))

    # the one poison the dead-letter topics may hold afterwards
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(USAGE_EVENTS, POISON, key=b"chaos-poison")
    finally:
        await producer.stop()

    clients = Clients(chaos_stack.gateway_urls, rng)
    victims = ["inference-pro", "inference-free", "inference-enterprise", "results", "webhooks",
               "usage-stream", "usage-service", "gateway-a", "gateway-b", "postgres", "broker"]
    plan = victims * ROUNDS
    rng.shuffle(plan)
    kills: Counter[str] = Counter()
    chaos_done = asyncio.Event()
    died: dict[str, str] = {}
    cluster = chaos_services.kafka
    topics = [spec.name for spec in topic_catalogue(TIERS, cluster.brokers)]
    broker_kills: list[int] = []

    async def chaos() -> None:
        try:
            for victim in plan:
                await asyncio.sleep(rng.uniform(1.0, 4.0))
                if victim == "postgres":
                    await asyncio.to_thread(chaos_services.postgres.pause)
                    await asyncio.sleep(rng.uniform(2.0, 4.0))
                    await asyncio.to_thread(chaos_services.postgres.resume)
                elif victim == "broker":  # one node of three, SIGKILLed; never two down at once
                    node = rng.choice(cluster.running_nodes())
                    cluster.kill(node)
                    broker_kills.append(node)
                    await asyncio.sleep(rng.uniform(2.0, 4.0))
                    await asyncio.to_thread(cluster.start_node, node)  # same data dir: catches up
                    await wait_live_brokers(cluster, set(cluster.nodes))
                    await wait_in_sync(cluster, topics)  # every replica back in the ISR before the next
                else:
                    chaos_stack.kill(victim)
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    chaos_stack.start(victim)
                    if victim.startswith("gateway"):  # never both replicas down at once
                        await asyncio.to_thread(chaos_stack.wait_healthy, [victim])
                kills[victim] += 1
                died.update(chaos_stack.exited_by_themselves())
        finally:
            chaos_done.set()

    async def submitter(n: int) -> None:
        i = 0
        while len(clients.ledger.accepted) < MAX_REQUESTS:
            if chaos_done.is_set() and len(clients.ledger.accepted) >= MIN_REQUESTS:
                return
            tenant = tenants[(n + i) % len(tenants)]
            i += 1
            max_tokens = rng.randint(3, 6) if tenant.tier == "pro" else rng.randint(4, 16)
            await clients.submit(tenant, f"chaos {n}.{i}: name a colour", max_tokens, long_poll=rng.random() < 0.3)
            await asyncio.sleep(rng.uniform(0.2, 0.8))

    async def reader() -> None:
        while not chaos_done.is_set():
            tenant = rng.choice(tenants)
            mine = [rid for rid, t in list(clients.ledger.accepted.items()) if t == tenant.tenant_id]
            choice = rng.random()
            if mine and choice < 0.5:
                await clients.read(tenant, f"/v1/requests/{rng.choice(mine)}")
            elif mine and choice < 0.8:
                await clients.read(tenant, f"/v1/requests/{rng.choice(mine)}?wait=2")
            else:
                await clients.read(tenant, "/v1/usage")
            await asyncio.sleep(0.3)

    try:
        await asyncio.gather(chaos(), reader(), *(submitter(n) for n in range(4)))
    finally:
        await clients.aclose()
    load_s = time.monotonic() - started
    ledger = clients.ledger
    ids = sorted(ledger.accepted)

    # every process is back (a process that died by itself is a finding, not something to restart)
    assert not died, "processes exited without being killed:\n" + "\n".join(f"--- {n}\n{t}" for n, t in died.items())
    await asyncio.to_thread(chaos_stack.wait_healthy)

    await chaos_engine.dispose()  # the pool's connections died with the PostgreSQL the test stopped
    status = await _wait_all_terminal(chaos_engine, ids)
    outcomes = await _outcomes(bootstrap, set(ids))
    two_outcomes = {rid: types for rid, types in outcomes.items() if len(types) > 1}
    no_outcome = [rid for rid in ids if rid not in outcomes]

    # billing: ClickHouse (raw facts and the daily rollup) equals the request log, exactly
    pipeline = UsagePipeline(chaos_stack.stack, chaos_stack.usage_url, "")
    tenant_ids = [t.tenant_id for t in tenants]
    expected = await expected_totals(chaos_engine, tenant_ids)
    raw = daily = {}
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        raw = billed(pipeline, "usage_events", tenant_ids)
        daily = billed(pipeline, "usage_daily", tenant_ids)
        if raw == expected and daily == expected:
            break
        await asyncio.sleep(1)
    quoted = ", ".join(f"'{t}'" for t in tenant_ids)
    facts = {kind: (n, unique) for kind, n, unique in pipeline.sql(
        f"SELECT kind, count(), uniqExact(event_id) FROM lotabots_usage.usage_events WHERE tenant_id IN ({quoted}) "
        "GROUP BY kind ORDER BY kind")["rows"]}
    duplicates_billed = sum(n - unique for n, unique in facts.values())

    # webhooks: each subscribed request's terminal event arrived, every attempt under one webhook-id
    hooked = {t.tenant_id for t in tenants if t.webhook_url}
    deliveries: dict[str, list[Any]] = defaultdict(list)
    deadline = time.monotonic() + 180
    while True:
        deliveries.clear()
        for tenant_id in hooked:
            for got in receiver.at(f"hooks/{tenant_id}"):
                deliveries[got.request_id].append(got)
        undelivered = [rid for rid in ledger.with_webhook
                       if not any(d.event_type == f"request.{status[rid]}" for d in deliveries[rid])]
        if not undelivered or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    ids_per_event = {(rid, d.event_type): {x.webhook_id for x in got if x.event_type == d.event_type}
                     for rid, got in deliveries.items() for d in got}
    split_ids = {k: v for k, v in ids_per_event.items() if len(v) > 1}
    attempts = sum(len(v) for v in deliveries.values())

    # dead letters: the injected poison and nothing else
    letters = {}
    for spec in topic_catalogue(TIERS):
        if spec.name.endswith(".dlq"):
            letters[spec.name] = [json.loads(v) for v in await _read_topic(bootstrap, spec.name)]
    poison_letters = [x for x in letters.get("usage.dlq", []) if "injected by the chaos test" in x.get("payload", "")]
    other_letters = {t: [x for x in xs if x not in poison_letters] for t, xs in letters.items()}
    other_letters = {t: xs for t, xs in other_letters.items() if xs}

    lost = len(no_outcome) + sum(1 for rid in ids if status.get(rid) not in TERMINAL)
    report = "\n".join([
        "",
        f"==== chaos report (seed {SEED}, {load_s:.0f} s of load, {time.monotonic() - started:.0f} s in all) ====",
        "kills: " + ", ".join(f"{v} x{kills[v]}" for v in victims) + f" (postgres: stopped, then started; broker: SIGKILLed node {broker_kills} of 3, restarted, ISR back)",
        f"requests acknowledged: {len(ids)} ({', '.join(f'{k} {v}' for k, v in sorted(Counter(status.values()).items()))})"
        f"; with webhook: {len(ledger.with_webhook)}",
        f"client answers: {dict(sorted(ledger.statuses.items()))}; error codes: {dict(ledger.codes)}; "
        f"transport errors: {ledger.transport_errors}, replica switches: {ledger.replica_switches}",
        f"lost = {lost}; two outcomes = {len(two_outcomes)}; conflicting replays = {len(ledger.conflicting_replays)}",
        f"billed (requests, prompt, completion, cost) raw == log: {raw == expected}; daily == log: {daily == expected}; "
        f"duplicates billed = {duplicates_billed}; facts {facts}",
        f"webhooks: {len(ledger.with_webhook) - len(undelivered)}/{len(ledger.with_webhook)} delivered in "
        f"{attempts} attempts; events under more than one webhook-id: {len(split_ids)}",
        f"dead letters: poison {len(poison_letters)}, others {sum(len(v) for v in other_letters.values())}",
        f"unexpected answers: {len(ledger.unexpected)}",
    ])
    with capsys.disabled():
        print(report)
    (chaos_stack.stack.log_dir / "chaos-report.txt").write_text(report)

    assert all(kills[v] == ROUNDS for v in victims), kills
    assert not ledger.unexpected, ledger.unexpected[:10]
    assert not ledger.conflicting_replays, ledger.conflicting_replays
    assert len(ids) >= MIN_REQUESTS
    assert lost == 0, f"no outcome on results: {no_outcome[:10]}"
    assert not two_outcomes, two_outcomes
    assert set(status.values()) == {"succeeded"}, Counter(status.values())
    assert raw == expected, f"raw usage differs: billed {raw}, request log {expected}"
    assert daily == expected, f"daily rollup differs: billed {daily}, request log {expected}"
    assert facts.get("inference", (0, 0)) == (len(ids), len(ids)), facts
    assert facts.get("request", (0, 0)) == (len(ids), len(ids)), facts
    assert duplicates_billed == 0, facts
    assert not undelivered, f"webhooks never delivered: {undelivered[:10]}"
    assert not split_ids, split_ids
    assert len(poison_letters) == 1 and not other_letters, (poison_letters, other_letters)
    async with chaos_engine.connect() as conn:
        rows = (await conn.execute(select(func.count()).select_from(R).where(R.c.tenant_id.in_(tenant_ids)))).scalar_one()
    assert rows == len(ids), f"{rows} request rows for {len(ids)} acknowledged submits"
