"""The ClickHouse sink against real Kafka and real chDB (in this process): commit after insert, leftover
batches completed on assignment, poison to the DLQ."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumers.usage_rows import billable_rows
from consumers.usage_sink import UsageSink, reread_done
from consumers.usage_writer import WRITER_SESSION, UsageWriter
from lotabots.kafka_io import make_producer
from lotabots.settings import Settings
from lotabots.tiers import load_tier_config
from schemas.usage import UsageEvent
from streams.agents import billable_batch
from streams.pricing import price_usage_event

pytestmark = pytest.mark.integration
TIERS = load_tier_config(Path(__file__).resolve().parents[2] / "lotabots" / "tiers.toml")


def billable(tenant: str, request_id: str) -> bytes:
    event = UsageEvent(id=f"{request_id}:inference", source="/t", type="lotabots.inference.completed",
                       time=datetime(2026, 6, 1, tzinfo=UTC), data={
                           "tenant_id": tenant, "tier": "pro", "request_id": request_id, "model": "m",
                           "prompt_tokens": 3, "completion_tokens": 2, "latency_ms": 1, "finish_reason": "stop",
                           "status": "succeeded"})
    fact = price_usage_event(event, TIERS.get("pro").prices).model_dump_json().encode()
    return billable_batch(tenant, [fact])


@pytest.fixture
async def sink_env(kafka_topics: Any, chdb_url: str) -> AsyncIterator[dict[str, Any]]:
    from lotabots.clickhouse import open_clickhouse
    from schemas.clickhouse.migrate import migrate_clickhouse

    kafka = kafka_topics  # the catalogue topics exist (usage.dlq)
    settings = Settings(kafka_bootstrap=kafka.bootstrap, clickhouse_url=chdb_url, usage_sink_batch_size=4,
                        usage_sink_batch_wait_s=0.2, kafka_session_timeout_ms=6000,
                        kafka_heartbeat_interval_ms=1000)
    topic = f"test.billable.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 1, 1)])
    await admin.close()
    client = open_clickhouse(settings, session_settings=WRITER_SESSION)
    migrate_clickhouse(client, TIERS, server=False)
    producer = make_producer(settings, client_id="test-sink")
    await producer.start()
    executor = ThreadPoolExecutor(1)
    try:
        yield {"settings": settings, "topic": topic, "client": client, "producer": producer, "executor": executor,
               "writer": UsageWriter(client), "tenant": f"ten_sink_{uuid.uuid4().hex[:8]}"}
    finally:
        await producer.stop()
        executor.shutdown()
        client.close()


async def produce(env: dict[str, Any], values: list[bytes]) -> list[int]:
    offsets = []
    for value in values:
        meta = await env["producer"].send_and_wait(env["topic"], value, key=env["tenant"].encode())
        offsets.append(meta.offset)
    return offsets


async def run_sink_until(env: dict[str, Any], group: str, rows: int) -> UsageSink:
    sink = UsageSink(env["settings"], env["writer"], env["executor"], topic=env["topic"], group=group)
    task = asyncio.create_task(sink.run())
    for _ in range(600):
        if counts(env)[0] >= rows and not sink.pending.ranges:
            break
        assert not task.done(), task.exception() if task.done() else None
        await asyncio.sleep(0.1)
    sink.request_stop()
    await asyncio.wait_for(task, 30)
    return sink


def counts(env: dict[str, Any]) -> tuple[int, int, int]:
    t = {"t": env["tenant"]}
    raw = env["client"].query("SELECT count(), uniqExact(event_id) FROM lotabots_usage.usage_events "
                              "WHERE tenant_id = %(t)s", parameters=t).result_rows[0]
    daily = env["client"].query("SELECT sum(events) FROM lotabots_usage.usage_daily WHERE tenant_id = %(t)s",
                                parameters=t).result_rows[0]
    return int(raw[0]), int(raw[1]), int(daily[0] or 0)


async def committed(env: dict[str, Any], group: str) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=env["settings"].kafka_bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        return await consumer.committed(TopicPartition(env["topic"], 0))
    finally:
        await consumer.stop()


async def store_without_the_view(env: dict[str, Any], values: list[bytes]) -> None:
    """Produce ``values`` and insert them as one batch (token = their offsets) that reached the table but not
    the daily rollup's view, its offsets never committed: the state a sink killed mid-insert leaves."""
    offsets = await produce(env, values)
    rows = [row for v, o in zip(values, offsets, strict=True) for row in billable_rows(v, 0, o)]
    env["client"].command("DETACH TABLE lotabots_usage.usage_daily_mv")
    try:
        env["writer"].insert_batch(rows, f"{env['topic']}|0:{offsets[0]}-{offsets[-1]}")
    finally:
        env["client"].command("ATTACH TABLE lotabots_usage.usage_daily_mv")


async def test_the_sink_commits_only_what_clickhouse_took_and_completes_leftover_batches(sink_env) -> None:  # type: ignore[no-untyped-def]
    env, group = sink_env, f"sink-{uuid.uuid4().hex[:6]}"
    await produce(env, [billable(env["tenant"], f"req_a{i}") for i in range(6)])
    await run_sink_until(env, group, rows=6)
    assert counts(env) == (6, 6, 6)
    assert await committed(env, group) == 6

    # A batch ClickHouse took whose offsets were never committed, and which died between the table
    # and the rollup view: the next sink finds it by its token and completes it, once.
    await store_without_the_view(env, [billable(env["tenant"], f"req_b{i}") for i in range(3)])
    assert counts(env) == (9, 9, 6)
    await produce(env, [billable(env["tenant"], "req_c0")])
    await run_sink_until(env, group, rows=10)
    assert counts(env) == (10, 10, 10)
    assert await committed(env, group) == 10


async def test_a_leftover_batch_whose_first_completion_fails_is_completed_before_anything_is_consumed(
        sink_env, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # The chaos test's case: the broker was restarting when the sink came back, the re-read of the leftover
    # batch failed, and the sink consumed the same offsets under another token: the facts the leftover
    # stored were left out as repeats and the daily rollup missed them for good.
    env, group = sink_env, f"sink-{uuid.uuid4().hex[:6]}"
    await produce(env, [billable(env["tenant"], f"req_a{i}") for i in range(2)])
    await run_sink_until(env, group, rows=2)
    await store_without_the_view(env, [billable(env["tenant"], f"req_b{i}") for i in range(3)])
    assert counts(env) == (5, 5, 2)

    reread, tries = UsageSink._reread, []

    async def flaky_reread(self: UsageSink, token: Any) -> list[list[Any]]:
        tries.append(token.text())
        if len(tries) == 1:
            raise TypeError("'<=' not supported between instances of 'NoneType' and 'int'")  # what chaos saw
        return await reread(self, token)

    monkeypatch.setattr(UsageSink, "_reread", flaky_reread)
    await produce(env, [billable(env["tenant"], "req_c0")])
    await run_sink_until(env, group, rows=6)
    assert len(tries) == 2, tries
    assert counts(env) == (6, 6, 6)
    assert await committed(env, group) == 6


def test_a_reread_goes_on_while_the_partition_end_is_unknown() -> None:
    assert reread_done(5, None, 3, 4) is True  # past the batch
    assert reread_done(3, None, 3, 4) is False  # no fetch response yet (a broker restarting)
    assert reread_done(3, 3, 3, 4) is True  # the partition ends before the batch
    assert reread_done(3, 9, 3, 4) is False


async def test_a_poison_billable_goes_to_the_dlq_and_the_sink_moves_on(sink_env) -> None:  # type: ignore[no-untyped-def]
    env, group = sink_env, f"sink-{uuid.uuid4().hex[:6]}"
    offsets = await produce(env, [b"{broken", billable(env["tenant"], "req_p1")])
    await run_sink_until(env, group, rows=1)
    assert counts(env) == (1, 1, 1)
    assert await committed(env, group) == offsets[-1] + 1
    def ours(v: bytes) -> bool:
        return env["topic"].encode() in v and b"invalid_billable_batch" in v and b'"source_offset":%d' % offsets[0] in v

    dlq = AIOKafkaConsumer("usage.dlq", bootstrap_servers=env["settings"].kafka_bootstrap,
                           auto_offset_reset="earliest", group_id=None)
    await dlq.start()
    letters: list[bytes] = []
    deadline = time.monotonic() + 60
    try:  # until our letter is read, not one fetch: the shared topic holds other tests' letters before it
        while not any(ours(v) for v in letters):
            assert time.monotonic() < deadline, f"no letter of {env['topic']}@{offsets[0]} in {len(letters)} read"
            letters += [r.value for batch in (await dlq.getmany(timeout_ms=1000)).values() for r in batch]
    finally:
        await dlq.stop()
