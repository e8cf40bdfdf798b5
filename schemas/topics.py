"""The topic catalogue (DESIGN §4). Every topic name, key and config is derived from here."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from lotabots.tiers import KafkaReplication, TierConfig

# Webhook retry stages (Standard Webhooks schedule: 5s, 5m, 30m, 2h, 5h, 10h, 10h).
WEBHOOK_RETRY_STAGES_S: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)

REQUESTS_CONTROL = "requests.control"
REQUESTS_DLQ = "requests.dlq"
RESULTS = "results"
RESULTS_DLQ = "results.dlq"
USAGE_EVENTS = "usage.events"
USAGE_BILLABLE = "usage.billable"
USAGE_QUOTA_STATE = "usage.quota-state"
USAGE_DLQ = "usage.dlq"
WEBHOOKS_DLQ = "webhooks.dlq"
AUTH_EVENTS = "auth.events"
# poison auth events and mails the relay refused for good; holds links like auth.events (same ACL)
AUTH_EVENTS_DLQ = "auth.events.dlq"
# generated text as it is decoded (DESIGN §4 "token stream"): short-lived, `results` stays the source of truth
TOKEN_STREAM = "results.tokens"
TOKEN_STREAM_RETENTION_MS = str(3600 * 1000)


def request_topic(tier: str) -> str:
    return f"requests.{tier}"


def webhook_retry_topic(stage: int) -> str:
    return f"webhooks.retry.{stage}"


@dataclass(frozen=True)
class Replication:
    """Copies per partition and how many must have a write before an acks=all produce succeeds."""

    factor: int
    min_insync: int


def replication(policy: KafkaReplication, brokers: int) -> Replication:
    """The replication a cluster of ``brokers`` gets: the tier config's ``[kafka]`` numbers, capped.

    1 broker: RF 1, min.insync 1 (as before); 2: RF 2, min.insync 1 (one may fail); >= 3 (with the
    default policy): RF 3, min.insync 2, so one broker can be lost without refusing writes and an
    acknowledged record is on two brokers. Used for the local cluster's broker defaults, for topic
    creation and for the Strimzi manifests alike.
    """
    if brokers < 1:
        raise ValueError(f"a Kafka cluster has at least one broker, not {brokers}")
    factor = min(policy.replication_factor, brokers)
    min_insync = max(1, min(policy.min_insync_replicas, factor - 1 if factor > 1 else 1))
    return Replication(factor=factor, min_insync=min_insync)


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its name, what its key is, how many partitions, replicas, and broker configs."""

    name: str
    key: str
    partitions: int
    purpose: str
    configs: dict[str, str] = field(default_factory=dict)
    replication_factor: int = 1

    @property
    def compacted(self) -> bool:
        return self.configs.get("cleanup.policy") == "compact"


_COMPACT = {"cleanup.policy": "compact", "min.cleanable.dirty.ratio": "0.1", "segment.ms": "600000"}
_WEEK_MS = str(7 * 24 * 3600 * 1000)


def topic_catalogue(tiers: TierConfig, brokers: int = 1) -> list[TopicSpec]:
    """All topics the platform uses, with partition counts from the tier config.

    ``brokers`` is the size of the cluster they are for: replication factor and ``min.insync.replicas``
    (a per-topic config) follow ``replication(tiers.kafka, brokers)``.
    """
    specs = [
        TopicSpec(
            request_topic(t.name),
            "conversation id (else request id)",
            t.request_partitions,
            f"inference requests of the {t.name} tier",
            {"retention.ms": _WEEK_MS},
        )
        for t in tiers.tiers.values()
    ]
    specs += [
        TopicSpec(REQUESTS_CONTROL, "request id", 4, "cancel/approve signals", dict(_COMPACT)),
        TopicSpec(REQUESTS_DLQ, "-", 1, "unparseable request messages + error + source coordinates"),
        TopicSpec(RESULTS_DLQ, "-", 1, "unparseable lifecycle events + error + source coordinates"),
        TopicSpec(RESULTS, "request id", 8, "request lifecycle events"),
        TopicSpec(TOKEN_STREAM, "request id", 8, "text deltas per decode step (grouped per partition)",
                  {"cleanup.policy": "delete", "retention.ms": TOKEN_STREAM_RETENTION_MS}),
        TopicSpec(USAGE_EVENTS, "tenant id", 8, "CloudEvents 1.0 usage facts"),
        TopicSpec(USAGE_BILLABLE, "tenant id", 8, "deduplicated, validated, priced usage"),
        TopicSpec(USAGE_QUOTA_STATE, "tenant id", 4, "quota counters per tenant", dict(_COMPACT)),
        TopicSpec(USAGE_DLQ, "-", 1, "invalid usage events + error + source coordinates"),
        TopicSpec(WEBHOOKS_DLQ, "-", 1, "webhook events that exhausted retries"),
        TopicSpec(AUTH_EVENTS, "user id", 2, "auth events for mailers (password reset, ...)"),
        TopicSpec(AUTH_EVENTS_DLQ, "-", 1, "auth events the mailer could not read or mail + error + source coordinates"),
    ]
    specs += [
        TopicSpec(webhook_retry_topic(i), "request id", 4, f"webhook retry stage {i} (delay {d}s)")
        for i, d in enumerate(WEBHOOK_RETRY_STAGES_S, start=1)
    ]
    rep = replication(tiers.kafka, brokers)
    return [
        replace(s, replication_factor=rep.factor, configs={**s.configs, "min.insync.replicas": str(rep.min_insync)})
        for s in specs
    ]
