"""The local Kafka broker and the topic sync, against a real broker (no fakes).

The broker is the session's `kafka` fixture; the status tests need no broker at all,
and test_start_status_stop starts (and stops) one of its own.
"""

from __future__ import annotations

import asyncio
import copy
import os
import stat
import tomllib
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from lotabots.broker import BrokerError, LocalBroker
from lotabots.settings import Settings, get_settings
from lotabots.tiers import get_tier_config, parse_tier_config
from lotabots.topic_admin import describe_topics, sync_topics, wait_for_broker
from schemas.topics import TopicSpec, topic_catalogue
from tests.services import ServiceHandle, free_ports

# A hang guard for waits on the broker, not a speed assertion.
GUARD_S = 60

# The `kafka` fixture (session scope, tests/conftest.py) is tests.services.kafka_service:
# a broker started for the suite, or the one LOTABOTS_TEST_KAFKA_BOOTSTRAP names. Tests
# that change or feed topics use their own topic names, never ones the stack consumes.


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    return admin


def _tiers_with_team(partitions: int):
    """The default tier config plus a fourth tier "team" (a config change, not a code change)."""
    with open(get_settings().tiers_file, "rb") as f:
        raw = tomllib.load(f)
    raw = copy.deepcopy(raw)
    raw["tiers"]["team"] = {**copy.deepcopy(raw["tiers"]["pro"]), "request_partitions": partitions}
    return parse_tier_config(raw)


async def _delete_topic(bootstrap: str, name: str) -> None:
    admin = await _admin(bootstrap)
    try:
        if name in await admin.list_topics():
            await admin.delete_topics([name])
        async with asyncio.timeout(GUARD_S):
            while name in await admin.list_topics():  # noqa: ASYNC110 - polling the broker
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


@pytest.mark.integration
async def test_sync_creates_every_catalogue_topic(kafka: ServiceHandle) -> None:
    specs = topic_catalogue(get_tier_config())
    report = await sync_topics(kafka.bootstrap, specs)
    assert set(report.created) | set(report.unchanged) | set(report.configs_altered) == {
        s.name for s in specs
    }

    admin = await _admin(kafka.bootstrap)
    try:
        state = await describe_topics(admin, [s.name for s in specs])
    finally:
        await admin.close()
    assert set(state) == {s.name for s in specs}
    for spec in specs:
        topic = state[spec.name]
        assert topic.partitions == spec.partitions, spec.name
        for key, value in spec.configs.items():
            assert topic.configs[key] == value, (spec.name, key)
        assert topic.configs["cleanup.policy"] == ("compact" if spec.compacted else "delete"), spec.name
    assert state["requests.control"].configs["cleanup.policy"] == "compact"
    assert state["usage.quota-state"].configs["cleanup.policy"] == "compact"
    for tier in get_tier_config().tiers.values():
        assert state[tier.request_topic].partitions == tier.request_partitions


@pytest.mark.integration
async def test_second_sync_is_a_no_op(kafka: ServiceHandle) -> None:
    specs = topic_catalogue(get_tier_config())
    await sync_topics(kafka.bootstrap, specs)
    again = await sync_topics(kafka.bootstrap, specs)
    assert not again.changed
    assert not again.created and not again.partitions_added and not again.configs_altered
    assert sorted(again.unchanged) == sorted(s.name for s in specs)
    assert str(again).startswith("nothing to do")
    check = await sync_topics(kafka.bootstrap, specs, dry_run=True)
    assert not check.changed


@pytest.mark.integration
async def test_new_tier_then_more_partitions_never_fewer(kafka: ServiceHandle) -> None:
    await sync_topics(kafka.bootstrap, topic_catalogue(get_tier_config()))
    await _delete_topic(kafka.bootstrap, "requests.team")
    try:
        two = topic_catalogue(_tiers_with_team(2))
        report = await sync_topics(kafka.bootstrap, two)
        assert report.created == {"requests.team": 2}
        assert not report.partitions_added and not report.configs_altered

        three = topic_catalogue(_tiers_with_team(3))
        check = await sync_topics(kafka.bootstrap, three, dry_run=True)
        assert check.partitions_added == {"requests.team": (2, 3)}
        report = await sync_topics(kafka.bootstrap, three)
        assert report.partitions_added == {"requests.team": (2, 3)}
        assert not report.created and not report.configs_altered

        # the catalogue shrinking back is reported, never applied
        report = await sync_topics(kafka.bootstrap, two)
        assert report.partitions_refused == {"requests.team": (3, 2)}
        assert not report.changed
        admin = await _admin(kafka.bootstrap)
        try:
            assert (await describe_topics(admin, ["requests.team"]))["requests.team"].partitions == 3
        finally:
            await admin.close()
    finally:
        await _delete_topic(kafka.bootstrap, "requests.team")


@pytest.mark.integration
async def test_drifted_config_is_restored_and_foreign_overrides_kept(kafka: ServiceHandle) -> None:
    topic = f"test.drift.{uuid.uuid4().hex[:8]}"
    compact = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1"}
    specs = [TopicSpec(topic, "id", 1, "config drift test", compact)]
    assert (await sync_topics(kafka.bootstrap, specs)).created == {topic: 1}
    admin = await _admin(kafka.bootstrap)
    try:
        drift = {**compact, "cleanup.policy": "delete", "max.message.bytes": "2000000"}
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, drift)])
        async with asyncio.timeout(GUARD_S):  # the broker's metadata catches up with the controller
            while (await describe_topics(admin, [topic]))[topic].configs["cleanup.policy"] != "delete":  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        report = await sync_topics(kafka.bootstrap, specs)
        assert report.configs_altered == {topic: {"cleanup.policy": ("delete", "compact")}}
        after = (await describe_topics(admin, [topic]))[topic]
        assert after.configs["cleanup.policy"] == "compact"
        assert after.configs["min.cleanable.dirty.ratio"] == "0.1"
        assert after.overrides["max.message.bytes"] == "2000000"  # not ours to manage: left alone
        assert not (await sync_topics(kafka.bootstrap, specs)).changed
    finally:
        await admin.close()
        await _delete_topic(kafka.bootstrap, topic)


@pytest.mark.integration
async def test_produce_consume_round_trip(kafka: ServiceHandle) -> None:
    run = uuid.uuid4().hex
    topic = f"test.roundtrip.{run[:8]}"
    await sync_topics(kafka.bootstrap, [TopicSpec(topic, "conversation id", 4, "round trip test")])
    sent = [(f"conv-{i % 3}".encode(), f"{run}:{i}".encode()) for i in range(12)]
    try:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True)
        await producer.start()
        try:
            for key, value in sent:
                await producer.send_and_wait(topic, value, key=key)
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=kafka.bootstrap, group_id=f"test-{run}", auto_offset_reset="earliest"
        )
        await consumer.start()
        got: list[tuple[bytes, bytes, int]] = []
        try:
            async with asyncio.timeout(GUARD_S):
                while len(got) < len(sent):
                    for records in (await consumer.getmany(timeout_ms=500)).values():
                        got += [(r.key, r.value, r.partition) for r in records]
        finally:
            await consumer.stop()
    finally:
        await _delete_topic(kafka.bootstrap, topic)

    assert sorted(v for _, v, _ in got) == sorted(v for _, v in sent)
    for key in {k for k, _ in sent}:
        partitions = {p for k, _, p in got if k == key}
        assert len(partitions) == 1, "one key, one partition"
        assert [v for k, v, _ in got if k == key] == [v for k, v in sent if k == key], "order per key"


@pytest.mark.integration
async def test_wait_for_broker(kafka: ServiceHandle) -> None:
    cluster = await wait_for_broker(kafka.bootstrap, timeout=GUARD_S)
    assert cluster["brokers"]
    (closed,) = free_ports(1)
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{closed}"):
        await wait_for_broker(f"127.0.0.1:{closed}", timeout=1)


@pytest.mark.integration
def test_start_status_stop(tmp_path: Path) -> None:
    """A second broker of our own: status while running, then stop by PID and it is gone."""
    port, controller_port = free_ports(2)
    settings = Settings(data_dir=tmp_path, kafka_port=port, kafka_controller_port=controller_port)
    jar_dir = Path(get_settings().data_dir) / "kafka" / settings.kafka_version / "libs"
    broker = LocalBroker(settings, jar_dir=jar_dir)
    pid = broker.start()
    try:
        status = broker.status()
        assert status.running and status.ready and status.pid == pid and not status.problems
        assert status.bootstrap == f"127.0.0.1:{port}" and status.formatted and status.jar_count > 0
        assert broker.start() == pid  # idempotent
        assert not broker.format_storage()  # formatted once
    finally:
        assert broker.stop()
    assert not broker.status().running
    assert not Path(f"/proc/{pid}").exists()  # exited and reaped
    assert not broker.pid_file.exists()
    assert not broker.stop()


def _broker_in(tmp_path: Path) -> LocalBroker:
    settings = Settings(data_dir=tmp_path, kafka_port=1, kafka_controller_port=2)
    return LocalBroker(settings)


def test_status_reports_missing_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    broker = _broker_in(tmp_path)
    status = broker.status()
    assert not status.running
    assert any(
        p.startswith("java not found on PATH") and "openjdk-17-jre-headless" in p for p in status.problems
    )
    assert any(p.startswith("mvn not found") and "install maven" in p for p in status.problems)
    with pytest.raises(BrokerError, match="java not found on PATH"):
        broker.start()


def test_status_reports_old_java(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "java"
    fake.write_text("#!/bin/sh\necho 'openjdk version \"11.0.22\" 2024-01-16' >&2\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    problems = _broker_in(tmp_path).status().problems
    assert any("java version 11 < 17" in p for p in problems)
