"""The Faust app: topics from the catalogue, the tables, and the agents that own them.

``build_usage_app`` wires one app per process (no module-level app: settings decide the broker and the
store). Topics are the catalogue's (schemas/topics.py): Faust only consumes and produces them; the
internal changelog topics of the tables are created by Faust with the same partition count as
``usage.events`` (Faust requires tables to be co-partitioned with their source) and the catalogue's
replication (``schemas.topics.replication`` for the cluster's broker count: 1 on the single local broker,
3 with ``min.insync.replicas`` 2 on a cluster of three), unless ``usage_stream_replication_factor`` is set.

Faust's own producer is acks=all but not idempotent unless the app runs transactions; ``UsageApp`` makes it
idempotent too, like every other producer of the platform (lotabots.kafka_io.make_producer): a retried
produce after a leader change is never written twice. Its consumer and table recovery close two Faust
defects that could skip a ``usage.events`` message after a restart (streams/faust_safety.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from lotabots.settings import Settings
from lotabots.tiers import TierConfig
from schemas.topics import (
    USAGE_BILLABLE,
    USAGE_DLQ,
    USAGE_EVENTS,
    USAGE_QUOTA_STATE,
    replication,
    topic_catalogue,
)
from streams.dedupe import SeenEvents
from streams.faust_safety import GuardedTransport, OrderedTableManager


class IdempotentProducer(faust_aiokafka.Producer):
    """Faust's aiokafka producer with ``acks=all`` and idempotence always (Faust sets them only in transactions)."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class UsageApp(faust.App):
    """The usage stream's Faust app: the same app, with the idempotent producer and the guarded consumer and
    recovery of streams/faust_safety.py (pass ``TableManager=OrderedTableManager``)."""

    def _new_producer(self) -> IdempotentProducer:
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)

    def _new_transport(self) -> GuardedTransport:
        return GuardedTransport(self.conf.broker_consumer, self)


@dataclass
class UsageTopics:
    """The catalogue topics the stream reads and writes (values are raw bytes: our codecs are pydantic)."""

    events: Any
    billable: Any
    quota_state: Any
    dlq: Any


@dataclass
class UsageStream:
    """One wired Faust app and the state its agents share."""

    app: faust.App
    topics: UsageTopics
    seen: SeenEvents
    seen_table: Any
    quota_table: Any
    tiers: TierConfig
    settings: Settings


def build_usage_app(settings: Settings, tiers: TierConfig, brokers: int = 1) -> UsageStream:
    """``brokers``: the cluster's size, for the changelog topics' replication (streams/runner.py asks the cluster)."""
    specs = {s.name: s for s in topic_catalogue(tiers, brokers)}
    partitions = specs[USAGE_EVENTS].partitions
    rep = replication(tiers.kafka, brokers)
    changelog_rf = settings.usage_stream_replication_factor or rep.factor
    changelog_configs = {"min.insync.replicas": str(min(rep.min_insync, max(1, changelog_rf - 1)))}
    app = UsageApp(
        settings.usage_stream_app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")],
        store=settings.usage_stream_store,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=changelog_rf,
        topic_disable_leader=True,
        table_standby_replicas=0,
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.usage_stream_commit_interval_s,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
        broker_max_poll_records=5000,
        stream_buffer_maxsize=20000,
        # changelog records (one per new event id) are many and small: fewer, fuller produce requests
        producer_linger_ms=50,
        producer_max_batch_size=1024 * 1024,
        producer_acks=-1,  # and idempotent: UsageApp
        producer_compression_type=None if settings.usage_stream_compression == "none" else settings.usage_stream_compression,
        worker_redirect_stdouts=False,
        TableManager=OrderedTableManager,
    )
    topics = UsageTopics(
        events=app.topic(USAGE_EVENTS, partitions=partitions, internal=False),
        billable=app.topic(USAGE_BILLABLE, partitions=partitions, internal=False),
        quota_state=app.topic(USAGE_QUOTA_STATE, partitions=specs[USAGE_QUOTA_STATE].partitions, internal=False),
        dlq=app.topic(USAGE_DLQ, partitions=specs[USAGE_DLQ].partitions, internal=False),
    )
    # event id -> [first seen epoch s, partition]; tombstoned after the TTL (streams/dedupe.py)
    seen_table = app.Table("usage-seen", partitions=partitions, key_type=str, extra_topic_configs=changelog_configs,
                           help="usage event ids already billed")
    # tenant id -> {state: QuotaState JSON, partition, offset: last folded usage.events offset}
    quota_table = app.Table("usage-quota", partitions=partitions, key_type=str, extra_topic_configs=changelog_configs,
                            help="per-tenant day/month counters")
    stream = UsageStream(app, topics, SeenEvents(seen_table, settings.usage_stream_dedupe_ttl_s), seen_table,
                         quota_table, tiers, settings)

    from streams.agents import register_agents

    register_agents(stream)
    return stream
