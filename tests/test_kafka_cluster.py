"""A real 3-node KRaft cluster (tests/kafka_cluster.py) losing brokers: replication, acks=all, idempotence.

The cluster is this module's own (three java processes on free ports, state in a temporary directory),
never the suite's single broker, so nothing else feels the kills. Every wait is for an exact state (the
metadata lists exactly these brokers, these replicas are in sync, the consumer has seen these records);
the timeouts are hang guards, not speed assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import NotEnoughReplicasError

from lotabots.broker import LocalCluster
from lotabots.kafka_io import make_consumer, make_producer
from lotabots.settings import Settings
from lotabots.tiers import get_tier_config
from lotabots.topic_admin import catalogue_for, describe_topics, sync_topics
from schemas.topics import TopicSpec, replication, topic_catalogue
from tests.kafka_cluster import kafka_cluster_service, wait_in_sync, wait_live_brokers

REPO = Path(__file__).resolve().parent.parent
GUARD_S = 180  # hang guard for one wait on the cluster


# --------------------------------------------------------------------------- no cluster needed


def test_one_broker_keeps_rf1_and_three_get_rf3_min_insync_2() -> None:
    tiers = get_tier_config()
    assert [(replication(tiers.kafka, n).factor, replication(tiers.kafka, n).min_insync) for n in (1, 2, 3, 5)] == [
        (1, 1), (2, 1), (3, 2), (3, 2)]
    for brokers, (rf, min_insync) in {1: (1, "1"), 3: (3, "2")}.items():
        specs = topic_catalogue(tiers, brokers)
        assert {(s.replication_factor, s.configs["min.insync.replicas"]) for s in specs} == {(rf, min_insync)}
    assert topic_catalogue(tiers) == topic_catalogue(tiers, 1)  # the default is the single broker, as before


_PRODUCER_CALL = re.compile(r"AIOKafkaProducer\(")


def _calls(text: str) -> list[str]:
    """The argument text of every ``AIOKafkaProducer(...)`` call in ``text``."""
    out = []
    for m in _PRODUCER_CALL.finditer(text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end() : i - 1])
    return out


def test_every_producer_in_the_code_base_is_idempotent_with_acks_all() -> None:
    found = {}
    for folder in ("gateway", "consumers", "streams", "lotabots", "inference", "bench", "tests"):
        for path in sorted((REPO / folder).rglob("*.py")):
            if path == Path(__file__).resolve():  # its probe below is a plain acks=all producer on purpose
                continue
            for call in _calls(path.read_text()):
                if "**" in call:  # Faust's driver passes its settings through; UsageApp checked below
                    continue
                found[f"{path.relative_to(REPO)}: {' '.join(call.split())[:80]}"] = (
                    'acks="all"' in call and "enable_idempotence=True" in call)
    assert "lotabots/kafka_io.py: " in "".join(found)  # make_producer, which every platform process uses
    assert [k for k, ok in found.items() if not ok] == []


async def test_make_producer_and_the_faust_producer_are_idempotent() -> None:
    from streams.app import build_usage_app

    producer = make_producer(Settings(), client_id="test-settings")
    stream = build_usage_app(Settings(), get_tier_config(), brokers=3)
    faust_producer = stream.app.producer._new_producer()
    try:
        for p in (producer, faust_producer):
            assert p._txn_manager is not None, "idempotence on"  # aiokafka keeps producer id and sequences there
            assert p._sender._acks == -1  # acks=all
    finally:
        for p in (producer, faust_producer):
            await p.stop()  # never started: only closes the client
    assert stream.app.conf.topic_replication_factor == 3  # the changelogs replicate like the catalogue
    assert stream.seen_table.extra_topic_configs == {"min.insync.replicas": "2"}


# --------------------------------------------------------------------------- on a real 3-node cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with kafka_cluster_service(tmp_path_factory.mktemp("kafka-cluster"), brokers=3) as c:
        yield c


@pytest.fixture
async def healed(cluster: LocalCluster):  # type: ignore[no-untyped-def]
    """The cluster with all three nodes up; whatever a test stopped is started again afterwards."""
    yield cluster
    down = [i for i in cluster.nodes if i not in cluster.running_nodes()]
    if down:
        await asyncio.to_thread(cluster.start_nodes, *down)
    await wait_live_brokers(cluster, set(cluster.nodes))


async def _topic(cluster: LocalCluster, partitions: int) -> str:
    name = f"cluster.test-{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, "-", partitions, "test", {"min.insync.replicas": "2"}, replication_factor=3)
    await sync_topics(cluster.bootstrap, [spec])
    return name


async def _partitions(bootstrap: str, topic: str) -> list[dict]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([topic])
        return sorted(meta["partitions"], key=lambda p: p["partition"])
    finally:
        await admin.close()


async def _read_all(bootstrap: str, topic: str) -> list[bytes]:
    """Every record of ``topic`` from the beginning, read by a fresh consumer (no group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        if not tps:
            tps = [TopicPartition(topic, p["partition"]) for p in await _partitions(bootstrap, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        out: list[bytes] = []
        async with asyncio.timeout(GUARD_S):
            while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    out += [r.value for r in records]
        return out
    finally:
        await consumer.stop()


@pytest.mark.integration
async def test_catalogue_topics_get_three_replicas_and_two_in_sync(healed: LocalCluster) -> None:
    cluster = healed
    tiers = get_tier_config()
    specs = await catalogue_for(cluster.bootstrap, tiers)  # sized from the live brokers in the metadata
    assert {(s.replication_factor, s.configs["min.insync.replicas"]) for s in specs} == {(3, "2")}
    report = await sync_topics(cluster.bootstrap, specs)
    assert set(report.created) == {s.name for s in specs}
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        state = await describe_topics(admin, [s.name for s in specs])
    finally:
        await admin.close()
    for spec in specs:
        topic = state[spec.name]
        assert topic.partitions == spec.partitions
        assert topic.replication_factor == 3, spec.name
        assert topic.configs["min.insync.replicas"] == "2", spec.name
        assert topic.overrides["min.insync.replicas"] == "2", spec.name  # the catalogue's, not only a default
    again = await sync_topics(cluster.bootstrap, await catalogue_for(cluster.bootstrap, tiers))
    assert not again.changed and not again.replication_short
    # a topic no one sized (Faust's changelogs, the offsets topic) gets the same from the broker defaults
    name = f"cluster.default-{uuid.uuid4().hex[:8]}"
    await sync_topics(cluster.bootstrap, [TopicSpec(name, "-", 2, "test")], replication_factor=-1)
    admin = AIOKafkaAdminClient(bootstrap_servers=cluster.bootstrap)
    await admin.start()
    try:
        (topic,) = (await describe_topics(admin, [name])).values()
    finally:
        await admin.close()
    assert (topic.replication_factor, topic.configs["min.insync.replicas"]) == (3, "2")


@pytest.mark.integration
async def test_no_acknowledged_record_is_lost_while_a_broker_is_killed_and_restarted(healed: LocalCluster) -> None:
    cluster = healed
    topic = await _topic(cluster, partitions=6)
    settings = Settings(kafka_bootstrap=cluster.bootstrap)
    producer = make_producer(settings, client_id="test-cluster-producer")
    consumer = make_consumer(settings, topic, group_id=f"test-cluster-{uuid.uuid4().hex[:8]}",
                             client_id="test-cluster-consumer")
    await producer.start()
    await consumer.start()
    acked: list[bytes] = []
    failed: list[BaseException] = []
    seen: set[bytes] = set()
    stop = asyncio.Event()

    async def produce() -> None:
        i = 0
        while not stop.is_set():
            batch = [f"r-{i + j:07d}".encode() for j in range(20)]
            i += len(batch)
            futures = [await producer.send(topic, value=v, key=v) for v in batch]
            for v, result in zip(batch, await asyncio.gather(*futures, return_exceptions=True), strict=True):
                if isinstance(result, BaseException):
                    failed.append(result)
                else:
                    acked.append(v)

    async def consume() -> None:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                seen.update(r.value for r in records)
            if batch:
                with contextlib.suppress(Exception):  # a commit during the coordinator's move may fail: retried next batch
                    await consumer.commit()

    async def until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
        async with asyncio.timeout(GUARD_S):
            while not condition():
                if failed:
                    raise AssertionError(f"a produce failed while waiting for {what}: {failed[0]!r}")
                await asyncio.sleep(0.05)

    producing = asyncio.create_task(produce())
    consuming = asyncio.create_task(consume())
    try:
        await until(lambda: len(acked) >= 300, "the first 300 acks")
        victim = (await _partitions(cluster.bootstrap, topic))[0]["leader"]  # a partition leader dies
        cluster.kill(victim)
        at_kill = len(acked)
        others = set(cluster.nodes) - {victim}
        await wait_live_brokers(cluster, others)  # fenced: its partitions have new leaders
        at_fenced = len(acked)
        await until(lambda: len(acked) >= at_fenced + 300, "300 acks with a broker down")
        await asyncio.to_thread(cluster.start_node, victim)  # same data dir: it catches up from the leaders
        await wait_in_sync(cluster, [topic])
        at_back = len(acked)
        await until(lambda: len(acked) >= at_back + 300, "300 acks after the restart")
        stop.set()
        await producing
        acked_set = set(acked)
        await until(lambda: acked_set <= seen, "the consumer to see every acknowledged record")
    finally:
        stop.set()
        consuming.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await consuming
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await producing
        await consumer.stop()
        await producer.stop()

    assert failed == []  # idempotent producers never give up on a batch: they retry until a leader takes it
    assert at_fenced >= at_kill and len(acked) > at_back > at_fenced
    assert len(acked_set) == len(acked)
    assert seen == acked_set  # the consumer saw exactly what was acknowledged, across the leader change
    log = await _read_all(cluster.bootstrap, topic)
    assert sorted(log) == sorted(acked)  # each acknowledged record is in the log exactly once: no loss, no duplicate


@pytest.mark.integration
async def test_with_two_brokers_down_an_acks_all_produce_is_refused_not_acknowledged(healed: LocalCluster) -> None:
    cluster = healed
    topic = await _topic(cluster, partitions=1)
    settings = Settings(kafka_bootstrap=cluster.bootstrap)
    producer = make_producer(settings, client_id="test-cluster-held")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"first", partition=0)
        survivor = (await _partitions(cluster.bootstrap, topic))[0]["leader"]
        crashed, stopped = sorted(set(cluster.nodes) - {survivor})
        cluster.kill(crashed)  # SIGKILL: fenced after the session timeout, dropped from the ISR
        await wait_live_brokers(cluster, {survivor, stopped})
        await _until_isr(cluster, topic, {survivor, stopped})
        # SIGTERM: a controlled shutdown leaves the ISR while the quorum (survivor + it) still commits that;
        # then the quorum is gone too, and the survivor is the only in-sync replica left.
        await asyncio.to_thread(cluster.stop_node, stopped)
        await _until_isr(cluster, topic, {survivor})

        held = await producer.send(topic, b"held", partition=0)  # idempotent: retried, never given up
        probe = AIOKafkaProducer(bootstrap_servers=cluster.node_bootstrap(survivor), acks="all",
                                 request_timeout_ms=3000, retry_backoff_ms=200)  # gives up: shows the refusal
        await probe.start()
        try:
            with pytest.raises(NotEnoughReplicasError):
                await probe.send_and_wait(topic, b"refused", partition=0)
        finally:
            await probe.stop()
        assert not held.done()  # the broker refused it as well: nothing acknowledged with one replica

        await asyncio.to_thread(cluster.start_nodes, crashed, stopped)
        async with asyncio.timeout(GUARD_S):
            await held  # taken once min.insync.replicas are back
        await wait_in_sync(cluster, [topic])
    finally:
        await producer.stop()
    assert await _read_all(cluster.bootstrap, topic) == [b"first", b"held"]  # the refused record was never written


async def _until_isr(cluster: LocalCluster, topic: str, isr: set[int]) -> None:
    async with asyncio.timeout(GUARD_S):
        while True:
            with contextlib.suppress(Exception):
                bootstrap = ",".join(cluster.node_bootstrap(i) for i in cluster.running_nodes())
                if set((await _partitions(bootstrap, topic))[0]["isr"]) == isr:
                    return
            await asyncio.sleep(0.2)


# --------------------------------------------------------------------------- the platform on the cluster


async def _stack_on_cluster(cluster: LocalCluster, postgres: Any, tmp_path: Path, tenant: str,
                            **extra_env: str) -> tuple[Any, str]:
    """Gateway, result writer and a pro inference worker (simulated engine) on the cluster, and a pro
    tenant's API key: the set-up of the tests below."""
    from gateway.tenants import create_tenant
    from lotabots.db import make_engine, migrate
    from lotabots.tiers import load_tier_config
    from tests.services import free_ports
    from tests.stack import Stack

    tiers = load_tier_config(REPO / "lotabots" / "tiers.toml")
    await sync_topics(cluster.bootstrap, await catalogue_for(cluster.bootstrap, tiers))
    await asyncio.to_thread(migrate, postgres.url)
    engine = make_engine(postgres.url)
    try:
        _, key = await create_tenant(engine, tiers, tenant, "pro")
    finally:
        await engine.dispose()
    (data := tmp_path / "data").mkdir()
    (logs := tmp_path / "logs").mkdir()
    gw_port, usage_port = free_ports(2)
    env = {
        **os.environ,
        "LOTABOTS_DATA_DIR": str(data), "LOTABOTS_DATABASE_URL": postgres.url,
        "LOTABOTS_KAFKA_BOOTSTRAP": cluster.bootstrap, "LOTABOTS_GATEWAY_PORT": str(gw_port),
        "LOTABOTS_USAGE_PORT": str(usage_port), "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000", "LOTABOTS_INFERENCE_BACKEND": "simulated",
        "LOTABOTS_SIMULATED_MS_PER_TOKEN": "5", "LOTABOTS_LOG_LEVEL": "INFO", "PYTHONUNBUFFERED": "1",
        **extra_env,
    }  # fmt: skip
    stack = Stack(env, logs, f"http://127.0.0.1:{gw_port}")
    stack.spawn("gateway", "serve", "gateway")
    stack.spawn("results", "worker", "results")
    stack.spawn("inference-pro", "worker", "inference", "--tier", "pro")
    return stack, key.key


@pytest.mark.integration
async def test_submit_to_result_through_the_stack_while_a_broker_is_killed_and_restarted(  # type: ignore[no-untyped-def]
    healed: LocalCluster, postgres, tmp_path: Path,
) -> None:
    """The real gateway, result writer and inference worker on the 3-node cluster: every 202 succeeds,
    before, during and after a broker's SIGKILL and restart (what the chaos suite builds on)."""
    import httpx

    cluster = healed
    stack, api_key = await _stack_on_cluster(cluster, postgres, tmp_path, "cluster-test")
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}
    try:
        await asyncio.to_thread(stack.wait_gateway, 180)
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=120,
                                     headers={"Authorization": f"Bearer {api_key}"}) as api:

            async def submit(i: int) -> str:
                while True:  # a client that retries as told (503 + Retry-After, same Idempotency-Key)
                    r = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": f"cluster-{i}"})
                    if r.status_code == 202:
                        return r.json()["id"]
                    assert r.status_code == 503, r.text
                    await asyncio.sleep(float(r.headers["Retry-After"]))

            async def terminal(rid: str) -> str:
                async with asyncio.timeout(GUARD_S):
                    while True:
                        r = await api.get(f"/v1/requests/{rid}")
                        assert r.status_code == 200, r.text  # never a 404 for an acknowledged request
                        if r.json()["status"] in ("succeeded", "failed", "canceled"):
                            return r.json()["status"]
                        await asyncio.sleep(0.2)

            async def round_trip(first: int, n: int) -> list[str]:
                ids = await asyncio.gather(*(submit(i) for i in range(first, first + n)))
                assert await asyncio.gather(*(terminal(rid) for rid in ids)) == ["succeeded"] * n
                return list(ids)

            before = await round_trip(0, 4)
            victim = (await _partitions(cluster.bootstrap, "results"))[0]["leader"]
            cluster.kill(victim)
            during = await round_trip(4, 4)  # submitted while the killed broker still leads partitions
            await wait_live_brokers(cluster, set(cluster.nodes) - {victim})
            fenced = await round_trip(8, 4)
            await asyncio.to_thread(cluster.start_node, victim)
            await wait_in_sync(cluster, ["requests.pro", "results", "usage.events"])
            after = await round_trip(12, 4)
    except BaseException:
        for name in ("gateway", "results", "inference-pro"):
            print(f"--- {name}\n{stack.tail(name)}")
        raise
    finally:
        stack.stop_all()
    assert len(set(before + during + fenced + after)) == 16


@pytest.mark.integration
async def test_a_submit_kafka_cannot_acknowledge_is_a_503_and_its_retry_one_request(  # type: ignore[no-untyped-def]
    healed: LocalCluster, postgres, tmp_path: Path,
) -> None:
    """Two of three brokers down: acks=all with min.insync.replicas 2 cannot be met, so the gateway's
    bounded ack wait (LOTABOTS_PUBLISH_TIMEOUT_S) answers 503 queue_unavailable with Retry-After instead of
    hanging. The row is recorded; once the brokers are back the same Idempotency-Key gives a 202 for that
    very request, which succeeds, and the tenant has exactly one request for the key (the first record,
    which the producer kept retrying, lands too: a harmless duplicate)."""
    import httpx

    cluster = healed
    stack, api_key = await _stack_on_cluster(cluster, postgres, tmp_path, "publish-timeout-test",
                                             LOTABOTS_PUBLISH_TIMEOUT_S="3")
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}
    idempotency_key = f"publish-timeout-{uuid.uuid4().hex[:8]}"
    down: list[int] = []
    try:
        await asyncio.to_thread(stack.wait_gateway, 180)
        # the timeout is a hang guard: without the bounded wait the submit below would not answer at all
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=GUARD_S,
                                     headers={"Authorization": f"Bearer {api_key}"}) as api:

            async def terminal(rid: str) -> str:
                async with asyncio.timeout(GUARD_S):
                    while True:
                        r = await api.get(f"/v1/requests/{rid}")
                        assert r.status_code == 200, r.text
                        if r.json()["status"] in ("succeeded", "failed", "canceled"):
                            return r.json()["status"]
                        await asyncio.sleep(0.2)

            # the stack works on the healthy cluster (so the 503 below is the brokers', nothing else's)
            r = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": f"{idempotency_key}-warm"})
            assert r.status_code == 202, r.text
            warm = r.json()["id"]
            assert await terminal(warm) == "succeeded"

            down = sorted(cluster.nodes)[:2]
            for node in down:
                cluster.kill(node)  # SIGKILL two of three: one replica can never make min.insync.replicas 2
            r = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": idempotency_key})
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "queue_unavailable", r.text
            assert "retry-after" in r.headers and float(r.headers["retry-after"]) > 0, r.headers
            rid = r.json()["error"]["details"]["request_id"]  # recorded before the publish
            r = await api.get(f"/v1/requests/{rid}")
            assert r.status_code == 200 and r.json()["status"] == "queued", r.text

            await asyncio.to_thread(cluster.start_nodes, *down)  # the quorum needs both back
            down = []
            await wait_live_brokers(cluster, set(cluster.nodes))
            async with asyncio.timeout(GUARD_S):
                while True:  # a client that retries as told: same Idempotency-Key after Retry-After
                    r = await api.post("/v1/requests", json=body, headers={"Idempotency-Key": idempotency_key})
                    if r.status_code == 202:
                        break
                    assert r.status_code == 503 and r.json()["error"]["code"] == "queue_unavailable", r.text
                    await asyncio.sleep(float(r.headers["Retry-After"]))
            assert r.json()["id"] == rid  # the recorded request, not a new one
            assert r.headers.get("idempotent-replayed") == "true", r.headers
            assert await terminal(rid) == "succeeded"
            listed = (await api.get("/v1/requests", params={"limit": 100})).json()
            ids = sorted(item["id"] for item in listed["data"])
            assert ids == sorted([warm, rid]), listed  # exactly one request for the key (and the warm-up)
            await wait_in_sync(cluster, ["requests.pro", "results", "usage.events"])
    except BaseException:
        for name in ("gateway", "results", "inference-pro"):
            print(f"--- {name}\n{stack.tail(name)}")
        raise
    finally:
        if down:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(cluster.start_nodes, *down)
        stack.stop_all()
