"""Make a Kafka cluster's topics match the catalogue (schemas/topics.py), idempotently.

``sync_topics`` creates missing topics with their partition counts and configs, adds
partitions where the catalogue asks for more (never removes any: Kafka cannot, and
keys would move), and sets topic configs the catalogue names where they differ.
Configs the catalogue does not name are left as they are.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.metadata import MetadataRequest

from lotabots.tiers import TierConfig
from schemas.topics import TopicSpec, topic_catalogue

# DescribeConfigs config_source: a per-topic override set with AlterConfigs / CreateTopics.
DYNAMIC_TOPIC_CONFIG = 1
TOPIC_ALREADY_EXISTS = 36
UNKNOWN_TOPIC_OR_PARTITION = 3


class TopicSyncError(RuntimeError):
    """The broker refused a topic change; the message names the topic and the broker's reason."""


@dataclass(frozen=True)
class TopicState:
    """What the cluster has for one topic."""

    name: str
    partitions: int
    configs: dict[str, str]  # every effective config value
    overrides: dict[str, str]  # the per-topic (dynamic) ones
    replication_factor: int = 1  # the fewest replicas any of its partitions has
    isr: dict[int, int] = field(default_factory=dict)  # partition -> in-sync replicas now


@dataclass
class SyncReport:
    """What ``sync_topics`` did (or, with dry_run, would do)."""

    bootstrap: str
    dry_run: bool = False
    created: dict[str, int] = field(default_factory=dict)  # topic -> partitions
    partitions_added: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (old, new)
    partitions_refused: dict[str, tuple[int, int]] = field(default_factory=dict)  # topic -> (has, catalogue)
    # topic -> (has, catalogue): never changed here (a partition reassignment moves data)
    replication_short: dict[str, tuple[int, int]] = field(default_factory=dict)
    configs_altered: dict[str, dict[str, tuple[str | None, str]]] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether anything was (or would be) created or altered."""
        return bool(self.created or self.partitions_added or self.configs_altered)

    def lines(self) -> list[str]:
        """One line per change, then warnings, then a summary."""
        verb = "would " if self.dry_run else ""
        out = [f"{verb}create {t} ({n} partition{'s' if n != 1 else ''})" for t, n in self.created.items()]
        out += [f"{verb}add partitions to {t}: {a} -> {b}" for t, (a, b) in self.partitions_added.items()]
        for topic, diff in self.configs_altered.items():
            for key, (old, new) in diff.items():
                out.append(f"{verb}set {topic} {key}: {old if old is not None else '(default)'} -> {new}")
        out += [
            f"WARNING {t} has {has} partitions, the catalogue says {want}: partitions are never removed"
            for t, (has, want) in self.partitions_refused.items()
        ]
        out += [
            f"WARNING {t} has replication factor {has}, the catalogue says {want}: not changed here "
            "(reassign its partitions with kafka-reassign-partitions, or recreate it)"
            for t, (has, want) in self.replication_short.items()
        ]
        if not self.changed:
            out.append(f"nothing to do: {len(self.unchanged)} topics match the catalogue on {self.bootstrap}")
        else:
            total = len(self.created) + len(set(self.partitions_added) | set(self.configs_altered))
            done = "to change" if self.dry_run else "changed"
            out.append(f"{total} topics {done}, {len(self.unchanged)} already matched, on {self.bootstrap}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _admin(bootstrap: str, request_timeout_ms: int = 30_000) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, client_id="lotabots-topic-admin", request_timeout_ms=request_timeout_ms
    )


def _raise_errors(
    what: str, entries: list[dict[str, Any]], name_key: str, ignore: tuple[int, ...] = ()
) -> None:
    for e in entries:
        code = e["error_code"]
        if code and code not in ignore:
            raise TopicSyncError(
                f"{what} {e[name_key]}: {for_code(code).__name__}: {e.get('error_message') or ''}"
            )


async def describe_topics(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, TopicState]:
    """Partition counts and configs of those of ``names`` that exist."""
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    meta = await admin.describe_topics(present)
    # On a cluster each request may reach another broker, whose metadata may not have a topic created a
    # moment ago yet: unknown there counts as not there (yet), like a topic missing from list_topics.
    meta = [t for t in meta if t["error_code"] != UNKNOWN_TOPIC_OR_PARTITION]
    _raise_errors("describe", meta, "topic")
    present = [t["topic"] for t in meta]
    if not present:
        return {}
    partitions = {t["topic"]: len(t["partitions"]) for t in meta}
    replicas = {t["topic"]: min((len(p["replicas"]) for p in t["partitions"]), default=0) for t in meta}
    isr = {t["topic"]: {p["partition"]: len(p["isr"]) for p in t["partitions"]} for t in meta}
    resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
    states: dict[str, TopicState] = {}
    for response in await admin.describe_configs(resources):
        obj = response.to_object()
        found = [r for r in obj["resources"] if r["error_code"] != UNKNOWN_TOPIC_OR_PARTITION]
        _raise_errors("describe configs of", found, "resource_name")
        for res in found:
            entries = res["config_entries"]
            name = res["resource_name"]
            states[name] = TopicState(
                name=name,
                partitions=partitions[name],
                configs={c["config_names"]: c["config_value"] for c in entries},
                overrides={
                    c["config_names"]: c["config_value"]
                    for c in entries
                    if c.get("config_source") == DYNAMIC_TOPIC_CONFIG
                },
                replication_factor=replicas[name],
                isr=isr[name],
            )
    return states


async def sync_topics(
    bootstrap: str,
    specs: list[TopicSpec],
    *,
    dry_run: bool = False,
    replication_factor: int | None = None,
    timeout: float = 30.0,  # noqa: ASYNC109 - per-request timeout handed to the admin client
) -> SyncReport:
    """Create/grow/reconfigure topics on ``bootstrap`` so they match ``specs``.

    New topics get each spec's ``replication_factor`` (``topic_catalogue(tiers, brokers)`` sets it from
    the cluster size: ``catalogue_for(bootstrap)``); ``replication_factor`` overrides it for all, and
    ``-1`` lets the broker's default.replication.factor decide. An existing topic with fewer replicas
    than its spec is reported (``replication_short``), not changed.
    A second run with the same specs changes nothing (``report.changed`` is False).
    """
    report = SyncReport(bootstrap=bootstrap, dry_run=dry_run)
    admin = _admin(bootstrap, int(timeout * 1000))
    try:
        await admin.start()
        current = await describe_topics(admin, [s.name for s in specs])
        missing = [s for s in specs if s.name not in current]
        if missing and not dry_run:
            topics = []
            for s in missing:
                rf = replication_factor or s.replication_factor
                topic = NewTopic(s.name, s.partitions, max(rf, 1), topic_configs=dict(s.configs))
                if rf == -1:
                    topic.replication_factor = -1  # broker default (NewTopic's check refuses -1 up front)
                topics.append(topic)
            resp = await admin.create_topics(topics, timeout_ms=int(timeout * 1000))
            _raise_errors("create", resp.to_object()["topic_errors"], "topic", ignore=(TOPIC_ALREADY_EXISTS,))
        report.created = {s.name: s.partitions for s in missing}

        grow: dict[str, NewPartitions] = {}
        alter: list[ConfigResource] = []
        for s in specs:
            state = current.get(s.name)
            if state is None:
                continue
            if s.partitions > state.partitions:
                grow[s.name] = NewPartitions(total_count=s.partitions)
                report.partitions_added[s.name] = (state.partitions, s.partitions)
            elif s.partitions < state.partitions:
                report.partitions_refused[s.name] = (state.partitions, s.partitions)
            want_rf = replication_factor or s.replication_factor
            if want_rf > state.replication_factor:
                report.replication_short[s.name] = (state.replication_factor, want_rf)
            diff = {k: (state.configs.get(k), v) for k, v in s.configs.items() if state.configs.get(k) != v}
            if diff:
                report.configs_altered[s.name] = diff
                # AlterConfigs replaces all overrides of a topic: keep the ones we do not manage.
                alter.append(
                    ConfigResource(ConfigResourceType.TOPIC, s.name, {**state.overrides, **s.configs})
                )
            if s.name not in grow and not diff:
                report.unchanged.append(s.name)
        if not dry_run:
            if grow:
                await admin.create_partitions(grow, timeout_ms=int(timeout * 1000))
            if alter:
                for response in await admin.alter_configs(alter):
                    _raise_errors("alter configs of", response.to_object()["resources"], "resource_name")
            if report.changed:
                await _until_visible(admin, specs, timeout)
    except KafkaConnectionError as e:
        raise TopicSyncError(
            f"no Kafka broker answers on {bootstrap} (local one: `lotabots kafka up`): {e}"
        ) from e
    except KafkaError as e:
        raise TopicSyncError(f"topic sync against {bootstrap} failed: {e!r}") from e
    finally:
        await admin.close()
    return report


def _matches(spec: TopicSpec, state: TopicState | None) -> bool:
    if state is None:
        return False
    return state.partitions >= spec.partitions and all(
        state.configs.get(k) == v for k, v in spec.configs.items()
    )


async def _until_visible(admin: AIOKafkaAdminClient, specs: list[TopicSpec], within_s: float) -> None:
    """Wait until the broker's metadata shows what the controller accepted (read-your-writes).

    Changes are committed by the KRaft controller and reach a broker's metadata cache
    a moment later; returning before that would let an immediate second sync, or a
    consumer started right after ``lotabots kafka up``, see the old state.
    """
    deadline = time.monotonic() + within_s
    while True:
        state = await describe_topics(admin, [s.name for s in specs])
        if all(_matches(s, state.get(s.name)) for s in specs) and await _on_every_broker(admin, specs):
            return
        if time.monotonic() >= deadline:
            behind = [s.name for s in specs if not _matches(s, state.get(s.name))]
            raise TopicSyncError(f"changes to {behind} not visible on the broker after {within_s:.0f}s")
        await asyncio.sleep(0.1)


async def _on_every_broker(admin: AIOKafkaAdminClient, specs: list[TopicSpec]) -> bool:
    """Whether each live broker's own metadata has every topic with its partitions (on a cluster, clients
    ask any broker: returning when one knows would let the next request reach one that does not yet)."""
    client = admin._client  # the admin API routes each request to some broker; this asks each one
    nodes = [b.nodeId for b in client.cluster.brokers()]
    if len(nodes) <= 1:
        return True
    want = {s.name: s.partitions for s in specs}
    for node in nodes:
        try:
            response = await client.send(node, MetadataRequest(list(want)))
        except KafkaError:
            return False
        got = {t["topic"]: t for t in response.to_object()["topics"]}
        if any(name not in got or got[name]["error_code"] or len(got[name]["partitions"]) < n
               for name, n in want.items()):
            return False
    return True


async def live_brokers(bootstrap: str, request_timeout_ms: int = 10_000) -> list[int]:
    """The node ids of the brokers the cluster's metadata lists as live (fenced ones are not)."""
    admin = _admin(bootstrap, request_timeout_ms)
    try:
        await admin.start()
        cluster = await admin.describe_cluster()
    except KafkaConnectionError as e:
        raise TopicSyncError(f"no Kafka broker answers on {bootstrap} (local one: `lotabots kafka up`): {e}") from e
    finally:
        await admin.close()
    return sorted(b["node_id"] for b in cluster.get("brokers", []))


async def catalogue_for(bootstrap: str, tiers: TierConfig, brokers: int | None = None) -> list[TopicSpec]:
    """The catalogue sized for the cluster on ``bootstrap``: ``brokers`` if given, else its live broker count."""
    if brokers is None:
        brokers = len(await live_brokers(bootstrap)) or 1
    return topic_catalogue(tiers, brokers)


async def under_replicated(bootstrap: str, names: list[str]) -> dict[str, list[int]]:
    """Topic -> partitions whose in-sync replicas are fewer than their replicas (empty: all in sync)."""
    admin = _admin(bootstrap)
    try:
        await admin.start()
        meta = await admin.describe_topics(names)
    finally:
        await admin.close()
    out: dict[str, list[int]] = {}
    for t in meta:
        short = sorted(p["partition"] for p in t["partitions"] if len(p["isr"]) < len(p["replicas"]))
        if short or t["error_code"]:
            out[t["topic"]] = short
    return out


async def wait_for_broker(bootstrap: str, timeout: float = 60.0) -> dict[str, Any]:  # noqa: ASYNC109
    """Wait until a broker on ``bootstrap`` serves metadata listing at least one live broker.

    Returns the cluster description (brokers, cluster_id, controller_id); raises
    TimeoutError naming the address when none answers in time.
    """
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while True:
        admin = _admin(bootstrap, request_timeout_ms=5_000)
        try:
            await admin.start()
            cluster = await admin.describe_cluster()
            if cluster.get("brokers"):
                return cluster
        except (KafkaError, OSError) as e:
            last = e
        finally:
            await admin.close()
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"no Kafka broker answered on {bootstrap} within {timeout:.0f}s (last error: {last!r})"
            )
        await asyncio.sleep(0.5)
