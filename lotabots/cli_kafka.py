"""``lotabots kafka up|down|status|topics``: the local broker and the topic catalogue from the CLI.

lotabots/cli.py calls ``register(subparsers)``; every sub-command sets ``args.func``,
a callable taking the parsed namespace and returning the process exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time

from lotabots.broker import BrokerError, LocalBroker, LocalCluster
from lotabots.settings import get_settings
from lotabots.tiers import get_tier_config
from lotabots.topic_admin import TopicSyncError, catalogue_for, sync_topics


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``kafka`` command group to a top-level argparse sub-parser set."""
    kafka = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka broker (KRaft) and sync topics",
        description="A real Kafka broker (or a local cluster: --brokers N) from Maven Central jars; see docs/kafka.md.",
    )
    kafka.set_defaults(func=lambda _args: (kafka.print_help(), 2)[1])
    sub = kafka.add_subparsers(dest="kafka_command", metavar="{up,down,status,topics}")

    up = sub.add_parser("up", help="fetch jars (once), format storage (once), start the broker, sync topics")
    up.add_argument("--no-topics", action="store_true", help="do not create/update catalogue topics")
    up.add_argument("--brokers", type=int, default=1, metavar="N",
                    help="1 (default): one broker+controller as always; N > 1: a local KRaft cluster of N combined "
                         "nodes (own processes, ports +2 each, data dirs), topics with the tier config's replication "
                         "(RF 3, min.insync.replicas 2 for N >= 3)")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the broker or cluster this data dir started (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before SIGKILL")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="report the broker; exit 1 unless it is running and serving")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    topics = sub.add_parser("topics", help="create/grow/reconfigure topics to match the catalogue")
    topics.add_argument("--bootstrap", help="cluster to sync (default: LOTABOTS_KAFKA_BOOTSTRAP)")
    topics.add_argument("--check", action="store_true", help="change nothing; exit 1 if the cluster differs")
    topics.add_argument("--brokers", type=int, default=None, metavar="N",
                        help="size the replication for N brokers (default: the live brokers in the metadata)")
    topics.set_defaults(func=cmd_topics)
    return kafka


def _broker() -> LocalBroker:
    return LocalBroker(get_settings())


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def _cluster() -> LocalCluster | None:
    """The cluster ``kafka up --brokers N`` laid out in this data dir, if any."""
    try:
        return LocalCluster.existing(get_settings())
    except BrokerError:
        return None


def cmd_up(args: argparse.Namespace) -> int:
    """Start (or find running) the local broker or cluster, then sync the catalogue's topics onto it."""
    if args.brokers < 1:
        return _fail("--brokers must be at least 1")
    if args.brokers > 1:
        return _cluster_up(args)
    cluster = _cluster()
    if cluster is not None and cluster.running_nodes():
        return _fail(f"a {cluster.brokers}-node cluster runs from {cluster.state_dir} (bootstrap {cluster.bootstrap}); "
                     "`lotabots kafka down` first, or `lotabots kafka up --brokers "
                     f"{cluster.brokers}`")
    broker = _broker()
    t0 = time.monotonic()
    try:
        if not broker.jars():
            print(
                f"fetching org.apache.kafka:kafka_2.13:{broker.version} with Maven into {broker.libs_dir} ..."
            )
        broker.ensure_jars()
        if broker.format_storage():
            print(f"formatted KRaft storage in {broker.log_dir} (cluster id {broker.cluster_id()})")
        already = broker.pid()
        pid = broker.start()
    except BrokerError as e:
        return _fail(str(e))
    what = "already running" if already else f"started in {time.monotonic() - t0:.1f}s"
    print(f"Kafka {broker.version} {what}: pid {pid}, bootstrap {broker.bootstrap}, logs {broker.server_log}")
    configured = get_settings().kafka_bootstrap
    if configured != broker.bootstrap:
        print(f"note: LOTABOTS_KAFKA_BOOTSTRAP is {configured}, not this broker ({broker.bootstrap})")
    if args.no_topics:
        return 0
    return _sync(broker.bootstrap, check=False, brokers=1)


def _cluster_up(args: argparse.Namespace) -> int:
    settings = get_settings()
    single = _broker()
    if single.pid() is not None:
        return _fail(f"the single broker runs (pid {single.pid()}, {single.bootstrap}); `lotabots kafka down` first")
    t0 = time.monotonic()
    try:
        cluster = LocalCluster(settings, args.brokers)
        if not cluster.nodes[1].jars():
            print(f"fetching org.apache.kafka:kafka_2.13:{cluster.version} with Maven into {cluster.libs_dir} ...")
        if cluster.format_storage():
            print(f"formatted KRaft storage of {cluster.brokers} nodes in {cluster.state_dir} "
                  f"(cluster id {cluster.cluster_id()})")
        already = cluster.running_nodes()
        pids = cluster.start()
    except BrokerError as e:
        return _fail(str(e))
    what = ("already running" if len(already) == cluster.brokers
            else f"started in {time.monotonic() - t0:.1f}s")
    rf, mis = cluster.replication
    print(f"Kafka {cluster.version} cluster of {cluster.brokers} nodes {what}: "
          + ", ".join(f"node {i} pid {pid}" for i, pid in pids.items()))
    print(f"  bootstrap {cluster.bootstrap}; replication factor {rf}, min.insync.replicas {mis}; "
          f"state {cluster.state_dir}")
    if settings.kafka_bootstrap != cluster.bootstrap:
        print(f"note: LOTABOTS_KAFKA_BOOTSTRAP is {settings.kafka_bootstrap}; clients of this cluster want "
              f"LOTABOTS_KAFKA_BOOTSTRAP={cluster.bootstrap}")
    if args.no_topics:
        return 0
    return _sync(cluster.bootstrap, check=False, brokers=cluster.brokers)


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the broker, and the cluster's nodes, whose PID files are in this data dir."""
    broker = _broker()
    pid = broker.pid()
    stopped = False
    if broker.stop(timeout=args.timeout):
        print(f"stopped Kafka (pid {pid})")
        stopped = True
    cluster = _cluster()
    if cluster is not None:
        pids = {i: p for i, p in cluster.pids().items() if p is not None}
        if cluster.stop(timeout=args.timeout):
            print(f"stopped the {cluster.brokers}-node Kafka cluster: "
                  + ", ".join(f"node {i} pid {p}" for i, p in pids.items()))
            stopped = True
    if not stopped:
        print(f"Kafka was not running (no live process in {broker.pid_file}"
              + (f" or {cluster.state_dir}/node-*/broker.pid" if cluster is not None else "") + ")")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the broker's (or the cluster's) status; exit 0 only when it runs and serves metadata."""
    cluster = _cluster()
    status = _broker().status()
    if cluster is not None and (cluster.running_nodes() or not status.running):
        status = cluster.status()
    if args.json:
        print(json.dumps(dataclasses.asdict(status), default=str, indent=2))
    else:
        print(status.render())
    return 0 if status.running and status.ready else 1


def cmd_topics(args: argparse.Namespace) -> int:
    """Sync (or with --check, compare) the catalogue's topics on a cluster."""
    if args.brokers is not None and args.brokers < 1:
        return _fail("--brokers must be at least 1")
    return _sync(args.bootstrap or get_settings().kafka_bootstrap, check=args.check, brokers=args.brokers)


def _sync(bootstrap: str, *, check: bool, brokers: int | None) -> int:
    """Sync the catalogue sized for ``brokers`` (None: the live brokers the cluster's metadata lists)."""
    tiers = get_tier_config()

    async def run():  # type: ignore[no-untyped-def]
        specs = await catalogue_for(bootstrap, tiers, brokers)
        return specs, await sync_topics(bootstrap, specs, dry_run=check)

    try:
        specs, report = asyncio.run(run())
    except (TopicSyncError, OSError) as e:
        return _fail(str(e))
    if specs:
        where = f"for {brokers} broker{'s' if brokers != 1 else ''}" if brokers else "for the live brokers"
        print(f"topics: replication factor {specs[0].replication_factor}, "
              f"min.insync.replicas {specs[0].configs['min.insync.replicas']} ({where})")
    print(report)
    return 1 if check and report.changed else 0
