"""The Faust app: topics from the catalogue, the tables, and the agents that own them.

``build_usage_app`` wires one app per process (no module-level app: settings decide the broker and the
store). Topics are the catalogue's (schemas/topics.py): Faust only consumes and produces them; the
internal changelog topics of the tables are created by Faust with the same partition count as
``usage.events`` (Faust requires tables to be co-partitioned with their source) and the configured
replication factor (1 on the single local broker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from lotabots.settings import Settings
from lotabots.tiers import TierConfig
from schemas.topics import USAGE_BILLABLE, USAGE_DLQ, USAGE_EVENTS, USAGE_QUOTA_STATE, topic_catalogue
from streams.dedupe import SeenEvents


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


def build_usage_app(settings: Settings, tiers: TierConfig) -> UsageStream:
    specs = {s.name: s for s in topic_catalogue(tiers)}
    partitions = specs[USAGE_EVENTS].partitions
    app = faust.App(
        settings.usage_stream_app_id,
        broker=[f"kafka://{b.strip()}" for b in settings.kafka_bootstrap.split(",")],
        store=settings.usage_stream_store,
        datadir=str(settings.data_dir / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        processing_guarantee="at_least_once",
        topic_partitions=partitions,
        topic_replication_factor=settings.usage_stream_replication_factor,
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
        producer_acks=-1,
        producer_compression_type=None if settings.usage_stream_compression == "none" else settings.usage_stream_compression,
        worker_redirect_stdouts=False,
    )
    topics = UsageTopics(
        events=app.topic(USAGE_EVENTS, partitions=partitions, internal=False),
        billable=app.topic(USAGE_BILLABLE, partitions=partitions, internal=False),
        quota_state=app.topic(USAGE_QUOTA_STATE, partitions=specs[USAGE_QUOTA_STATE].partitions, internal=False),
        dlq=app.topic(USAGE_DLQ, partitions=specs[USAGE_DLQ].partitions, internal=False),
    )
    # event id -> [first seen epoch s, partition]; tombstoned after the TTL (streams/dedupe.py)
    seen_table = app.Table("usage-seen", partitions=partitions, key_type=str,
                           help="usage event ids already billed")
    # tenant id -> {state: QuotaState JSON, partition, offset: last folded usage.events offset}
    quota_table = app.Table("usage-quota", partitions=partitions, key_type=str,
                            help="per-tenant day/month counters")
    stream = UsageStream(app, topics, SeenEvents(seen_table, settings.usage_stream_dedupe_ttl_s), seen_table,
                         quota_table, tiers, settings)

    from streams.agents import register_agents

    register_agents(stream)
    return stream
