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

from lotabots.broker import BrokerError, LocalBroker
from lotabots.settings import get_settings
from lotabots.tiers import get_tier_config
from lotabots.topic_admin import TopicSyncError, sync_topics
from schemas.topics import topic_catalogue


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``kafka`` command group to a top-level argparse sub-parser set."""
    kafka = subparsers.add_parser(
        "kafka",
        help="run a local Apache Kafka broker (KRaft) and sync topics",
        description="A real single-node Kafka broker from Maven Central jars; see docs/kafka.md.",
    )
    kafka.set_defaults(func=lambda _args: (kafka.print_help(), 2)[1])
    sub = kafka.add_subparsers(dest="kafka_command", metavar="{up,down,status,topics}")

    up = sub.add_parser("up", help="fetch jars (once), format storage (once), start the broker, sync topics")
    up.add_argument("--no-topics", action="store_true", help="do not create/update catalogue topics")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser("down", help="stop the broker this data dir started (SIGTERM, then SIGKILL)")
    down.add_argument("--timeout", type=float, default=30.0, help="seconds to wait before SIGKILL")
    down.set_defaults(func=cmd_down)

    status = sub.add_parser("status", help="report the broker; exit 1 unless it is running and serving")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)

    topics = sub.add_parser("topics", help="create/grow/reconfigure topics to match the catalogue")
    topics.add_argument("--bootstrap", help="cluster to sync (default: LOTABOTS_KAFKA_BOOTSTRAP)")
    topics.add_argument("--check", action="store_true", help="change nothing; exit 1 if the cluster differs")
    topics.set_defaults(func=cmd_topics)
    return kafka


def _broker() -> LocalBroker:
    return LocalBroker(get_settings())


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_up(args: argparse.Namespace) -> int:
    """Start (or find running) the local broker, then sync the catalogue's topics onto it."""
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
    return _sync(broker.bootstrap, check=False)


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the broker whose PID file is in this data dir."""
    broker = _broker()
    pid = broker.pid()
    if not broker.stop(timeout=args.timeout):
        print(f"Kafka was not running (no live process in {broker.pid_file})")
        return 0
    print(f"stopped Kafka (pid {pid})")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Print the broker's status; exit 0 only when it runs and serves metadata."""
    status = _broker().status()
    if args.json:
        print(json.dumps(dataclasses.asdict(status), default=str, indent=2))
    else:
        print(status.render())
    return 0 if status.running and status.ready else 1


def cmd_topics(args: argparse.Namespace) -> int:
    """Sync (or with --check, compare) the catalogue's topics on a cluster."""
    return _sync(args.bootstrap or get_settings().kafka_bootstrap, check=args.check)


def _sync(bootstrap: str, *, check: bool) -> int:
    specs = topic_catalogue(get_tier_config())
    try:
        report = asyncio.run(sync_topics(bootstrap, specs, dry_run=check))
    except (TopicSyncError, OSError) as e:
        return _fail(str(e))
    print(report)
    return 1 if check and report.changed else 0
