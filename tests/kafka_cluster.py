"""A local 3-node Kafka cluster for the tests that need brokers to fail (tests/test_kafka_cluster.py, the chaos suite).

It is never the suite's shared broker (tests/services.py): each user starts its own cluster on free
loopback ports with its state in a temporary directory, the jars from the shared cache, and stops
every node by its PID when done.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
from collections.abc import Iterator
from pathlib import Path

from lotabots.broker import BrokerError, LocalCluster
from lotabots.settings import Settings
from lotabots.topic_admin import live_brokers, under_replicated
from tests.services import _shared_jar_dir


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def cluster_ports(n: int) -> list[int]:
    """``n`` distinct free loopback ports BELOW the kernel's ephemeral range.

    A node restarted after a kill must bind its old ports again; a port from the ephemeral range (what
    binding port 0 gives) may meanwhile be the source port of some client's outgoing connection, and the
    restart fails with "Address already in use". Ports below the range are never handed out that way.
    """
    low = _ephemeral_range()[0]
    candidates = list(range(max(1024, low - 12000), low))
    random.shuffle(candidates)
    ports: list[int] = []
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"no {n} free loopback ports below {low}")


def start_kafka_cluster(tmpdir: Path, brokers: int = 3, *, attempts: int = 3) -> LocalCluster:
    """A started ``brokers``-node KRaft cluster (combined broker+controller nodes) under ``tmpdir``."""
    last: BrokerError | None = None
    for attempt in range(attempts):  # a free port can be taken between choosing and binding it
        ports = cluster_ports(2 * brokers)
        cluster = LocalCluster(
            Settings(data_dir=Path(tmpdir)), brokers, jar_dir=_shared_jar_dir(),
            state_dir=Path(tmpdir) / f"cluster-{attempt}",
            ports={i + 1: (ports[2 * i], ports[2 * i + 1]) for i in range(brokers)},
        )  # fmt: skip
        try:
            cluster.start()
        except BrokerError as e:
            cluster.stop()
            last = e
            continue
        return cluster
    raise BrokerError(f"could not start a {brokers}-node Kafka cluster for the tests: {last}")


@contextlib.contextmanager
def kafka_cluster_service(tmpdir: Path, brokers: int = 3) -> Iterator[LocalCluster]:
    """``with kafka_cluster_service(tmp) as cluster: cluster.bootstrap``; every node stopped by PID on exit."""
    cluster = start_kafka_cluster(tmpdir, brokers)
    try:
        yield cluster
    finally:
        cluster.stop()


async def wait_live_brokers(cluster: LocalCluster, expected: set[int], guard_s: float = 120.0) -> None:
    """Until the metadata of a running node lists exactly ``expected`` as live brokers (a killed one is
    listed until the controller fences it, after broker.session.timeout.ms)."""
    async with asyncio.timeout(guard_s):
        while True:
            running = cluster.running_nodes()
            if running:
                with contextlib.suppress(Exception):
                    if set(await live_brokers(cluster.node_bootstrap(running[0]), 5_000)) == expected:
                        return
            await asyncio.sleep(0.2)


async def wait_in_sync(cluster: LocalCluster, topics: list[str], guard_s: float = 180.0) -> None:
    """Until every partition of ``topics`` has all its replicas in sync again."""
    async with asyncio.timeout(guard_s):
        while True:
            with contextlib.suppress(Exception):
                if not await under_replicated(cluster.bootstrap, topics):
                    return
            await asyncio.sleep(0.2)
