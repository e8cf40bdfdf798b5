"""A real Apache Kafka broker (KRaft, one node), or a local cluster of them, run from the jars Maven Central serves.

Layout under ``<data_dir>/kafka`` (see docs/kafka.md)::

    <version>/libs/          the broker's classpath (mvn dependency:copy-dependencies), shared
    broker/server.properties rendered from infra/kafka/server.properties.tmpl on every start
    broker/cluster.id        the KRaft cluster id the storage was formatted with
    broker/data/             log.dirs (topic partitions + the KRaft metadata log)
    broker/logs/             server.log, state-change.log (log4j2) and kafka.out (stdout/stderr)
    broker/broker.pid        the PID of the java process started by ``start()``
    cluster/                 ``LocalCluster`` (``lotabots kafka up --brokers N``): cluster.json (size,
                             ports, replication), cluster.id, and node-<id>/ laid out like broker/

Only the process whose PID is in the PID file, and whose command line names this
broker's server.properties, is ever signalled.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import string
import struct
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lotabots.settings import REPO_ROOT, Settings

INFRA_DIR = REPO_ROOT / "infra" / "kafka"
POM = INFRA_DIR / "pom.xml"
SERVER_TEMPLATE = INFRA_DIR / "server.properties.tmpl"
LOG4J2_CONFIG = INFRA_DIR / "log4j2.yaml"

MIN_JAVA = 17
BROKER_JVM_OPTS: tuple[str, ...] = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)
TOOL_JVM_OPTS: tuple[str, ...] = ("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
JARS_MARKER = ".complete"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

INSTALL_JAVA = "install openjdk-17-jre-headless (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
INSTALL_MAVEN = "install maven (apt-get install maven)"


class BrokerError(RuntimeError):
    """The local broker could not be prepared, started or stopped; the message says why and where to look."""


@dataclass
class BrokerStatus:
    """What ``lotabots kafka status`` reports."""

    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    controller: str
    version: str
    data_dir: Path
    libs_dir: Path
    jar_count: int
    formatted: bool
    log_file: Path
    problems: list[str] = field(default_factory=list)

    def render(self) -> str:
        """A human report, one fact a line."""
        if self.running:
            state = f"running, pid {self.pid}, " + ("serving metadata" if self.ready else "NOT answering yet")
        else:
            state = "not running"
        jars = f"{self.jar_count} jars" if self.jar_count else "not downloaded yet"
        lines = [
            f"Kafka {self.version} (KRaft, single node): {state}",
            f"  bootstrap   {self.bootstrap}",
            f"  controller  {self.controller}",
            f"  state       {self.data_dir} ({'formatted' if self.formatted else 'not formatted'})",
            f"  jars        {self.libs_dir} ({jars})",
            f"  log         {self.log_file}",
        ]
        if self.problems:
            lines.append("problems:")
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


def find_java() -> str | None:
    """``$JAVA_HOME/bin/java`` when set and executable, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home:
        candidate = Path(home) / "bin" / "java"
        if os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def java_major_version(java: str) -> int | None:
    """The feature version of a java binary (8 for "1.8.0_x", 17 for "17.0.15"), None if unknown."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding (Kafka's Uuid format)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # Kafka avoids ids a CLI would read as an option
            return cid


def stored_cluster_id(path: Path) -> str:
    """The cluster id kept in `path`, created there on first use."""
    if path.exists():
        return path.read_text().strip()
    cid = new_cluster_id()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(cid + "\n")
    return cid


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def probe_metadata(host: str, port: int, timeout: float = 2.0) -> tuple[int, str | None]:
    """Ask a broker for cluster metadata (Metadata v4, no topics) over a raw socket.

    Returns (number of live brokers, cluster id). Raises OSError when nothing answers.
    Kept dependency-free and synchronous so ``start()`` can wait from any context.
    """
    client_id = b"lotabots-probe"
    header = struct.pack(">hhih", 3, 4, 1, len(client_id)) + client_id
    body = struct.pack(">ib", 0, 0)  # topics: empty array; allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exact(sock, 4))[0]
        payload = _recv_exact(sock, size)
    offset = 4 + 4  # correlation id, throttle_time_ms
    (n_brokers,) = struct.unpack_from(">i", payload, offset)
    offset += 4
    for _ in range(n_brokers):
        offset += 4  # node id
        (hlen,) = struct.unpack_from(">h", payload, offset)
        offset += 2 + hlen + 4  # host, port
        (rlen,) = struct.unpack_from(">h", payload, offset)
        offset += 2 + max(rlen, 0)  # rack (nullable)
    (clen,) = struct.unpack_from(">h", payload, offset)
    cluster_id = payload[offset + 2 : offset + 2 + clen].decode() if clen >= 0 else None
    return n_brokers, cluster_id


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("connection closed by broker")
        buf += chunk
    return bytes(buf)


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc/<pid>/stat, or None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64_000))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalBroker:
    """One local KRaft broker+controller process, driven from Python.

    ``jar_dir`` and ``state_dir`` override where the classpath and the broker's state
    live (tests share one jar cache and keep state in a temporary directory). Alone it is
    node 1 and the only voter; ``LocalCluster`` makes several, each with its ``node_id``,
    its own ports and state dir, the same ``voters`` and the cluster's ``replication``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        jar_dir: Path | None = None,
        state_dir: Path | None = None,
        start_timeout: float = 120.0,
        node_id: int = 1,
        port: int | None = None,
        controller_port: int | None = None,
        voters: dict[int, int] | None = None,  # node id -> controller port, every voter of the quorum
        replication: tuple[int, int] = (1, 1),  # (replication factor, min.insync.replicas) broker defaults
        expected_brokers: int = 1,  # live brokers the metadata must list before the node counts as ready
        jvm_opts: tuple[str, ...] = BROKER_JVM_OPTS,
    ) -> None:
        self.settings = settings
        self.version = settings.kafka_version
        self.node_id = node_id
        self.port = port if port is not None else settings.kafka_port
        self.controller_port = controller_port if controller_port is not None else settings.kafka_controller_port
        self.voters = dict(voters) if voters else {node_id: self.controller_port}
        self.replication = replication
        self.expected_brokers = expected_brokers
        self.jvm_opts = jvm_opts
        root = Path(settings.data_dir) / "kafka"
        self.libs_dir = Path(jar_dir) if jar_dir else root / self.version / "libs"
        self.state_dir = Path(state_dir) if state_dir else root / "broker"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._java: str | None = None

    # ---- paths ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        """Kafka's log.dirs: partitions and the metadata log."""
        return self.state_dir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.logs_dir / "server.log"

    @property
    def out_file(self) -> Path:
        return self.logs_dir / "kafka.out"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def cluster_id_file(self) -> Path:
        return self.state_dir / "cluster.id"

    # ---- checks --------------------------------------------------------------------------

    def jars(self) -> list[Path]:
        """The cached classpath, empty until ``ensure_jars()`` completed once."""
        if not (self.libs_dir / JARS_MARKER).exists():
            return []
        return sorted(self.libs_dir.glob("*.jar"))

    def problems(self) -> list[str]:
        """What stops this machine from running the broker, each with its fix."""
        found: list[str] = []
        java = find_java()
        if java is None:
            found.append(f"java not found on PATH: {INSTALL_JAVA}")
        else:
            major = java_major_version(java)
            if major is None:
                found.append(f"could not read the version of {java} (java -version failed)")
            elif major < MIN_JAVA:
                found.append(
                    f"java version {major} < {MIN_JAVA} ({java}): Kafka {self.version} needs {MIN_JAVA}+; {INSTALL_JAVA}"
                )
        if not self.jars() and shutil.which("mvn") is None:
            found.append(f"mvn not found on PATH and no jars cached in {self.libs_dir}: {INSTALL_MAVEN}")
        return found

    def _java_or_raise(self) -> str:
        if self._java:
            return self._java
        java = find_java()
        if java is None:
            raise BrokerError(f"java not found on PATH: {INSTALL_JAVA}")
        major = java_major_version(java)
        if major is not None and major < MIN_JAVA:
            raise BrokerError(f"java version {major} < {MIN_JAVA} ({java}): {INSTALL_JAVA}")
        self._java = java
        return java

    # ---- preparation ---------------------------------------------------------------------

    def ensure_jars(self) -> list[Path]:
        """Download the broker's classpath once (Maven), atomically; later calls are free."""
        jars = self.jars()
        if jars:
            return jars
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerError(f"mvn not found on PATH: {INSTALL_MAVEN}")
        self.libs_dir.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.libs_dir.parent / ".download.lock"):
            jars = self.jars()  # another process may have finished meanwhile
            if jars:
                return jars
            tmp = self.libs_dir.parent / f"{self.libs_dir.name}.tmp-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            cmd = [
                mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                f"-Dkafka.version={self.version}", f"-DoutputDirectory={tmp}",
            ]  # fmt: skip
            proc = subprocess.run(cmd, capture_output=True, text=True)
            main_jar = tmp / f"kafka_2.13-{self.version}.jar"
            if proc.returncode != 0 or not main_jar.exists():
                shutil.rmtree(tmp, ignore_errors=True)
                output = (proc.stdout + proc.stderr)[-4000:]
                raise BrokerError(
                    f"could not fetch org.apache.kafka:kafka_2.13:{self.version} with Maven "
                    f"(exit {proc.returncode}): {' '.join(cmd)}\n{output}"
                )
            names = sorted(p.name for p in tmp.glob("*.jar"))
            (tmp / JARS_MARKER).write_text("\n".join(names) + "\n")
            shutil.rmtree(self.libs_dir, ignore_errors=True)
            os.replace(tmp, self.libs_dir)
        return self.jars()

    def render_config(self) -> Path:
        """Write server.properties from the template with this broker's ports and dirs."""
        text = render_properties(
            node_id=self.node_id, port=self.port, controller_port=self.controller_port, log_dirs=self.log_dir,
            voters=self.voters, replication=self.replication,
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(text)
        return self.properties_file

    def cluster_id(self) -> str:
        """The cluster id stored in the state dir, created on first use."""
        return stored_cluster_id(self.cluster_id_file)

    @property
    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def format_storage(self) -> bool:
        """Format the KRaft storage once (``StorageTool format``); False if it already was."""
        if self.formatted:
            return False
        java = self._java_or_raise()
        self.ensure_jars()
        props = self.render_config()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            java, *TOOL_JVM_OPTS, *self._log_opts(), "-cp", self._classpath(), STORAGE_TOOL,
            "format", "-t", self.cluster_id(), "-c", str(props), "--ignore-formatted",
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
        if proc.returncode != 0 or not self.formatted:
            raise BrokerError(
                f"formatting the KRaft storage in {self.log_dir} failed (exit {proc.returncode}):\n"
                f"{(proc.stdout + proc.stderr)[-4000:]}"
            )
        return True

    def _classpath(self) -> str:
        return f"{self.libs_dir}/*"

    def _log_opts(self) -> list[str]:
        return [f"-Dkafka.logs.dir={self.logs_dir}", f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}"]

    # ---- process -------------------------------------------------------------------------

    def pid(self) -> int | None:
        """The PID of this broker's running java process, or None (a stale PID file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid and self._proc.poll() is None:
            return pid  # our own child: no need to read (and race) its command line while the JVM starts
        if self._alive(pid) and str(self.properties_file) in _cmdline(pid):
            return pid
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None  # also reaps our child once it exited
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X")

    def ready(self) -> bool:
        """Whether the broker answers a metadata request listing at least ``expected_brokers`` live brokers."""
        try:
            brokers, _ = probe_metadata("127.0.0.1", self.port)
        except (OSError, struct.error):
            return False
        return brokers >= max(1, self.expected_brokers)

    def start(self, *, wait: bool = True) -> int:
        """Prepare (jars, format) and start the broker in its own session; wait until it serves metadata.

        Idempotent: returns the PID of an already running broker. ``wait=False`` returns once the
        process is launched (a cluster starts every node first: none is ready before a quorum runs).
        """
        java = self._java_or_raise()
        self.ensure_jars()
        self.format_storage()
        running = self.pid()
        if running is not None:
            if wait:
                self._wait_ready(running)
            return running
        for port in (self.port, self.controller_port):
            if port_open("127.0.0.1", port):
                raise BrokerError(
                    f"127.0.0.1:{port} is already in use by another process; stop it or choose other "
                    "ports (LOTABOTS_KAFKA_PORT / LOTABOTS_KAFKA_CONTROLLER_PORT)"
                )
        props = self.render_config()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        cmd = [java, *self.jvm_opts, *self._log_opts(), "-cp", self._classpath(), MAIN_CLASS, str(props)]
        with open(self.out_file, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
            out.flush()
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.state_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        if wait:
            try:
                self._wait_ready(self._proc.pid)
            except BrokerError:
                self.stop()
                raise
        return self._proc.pid

    def wait_ready(self) -> None:
        """Wait until the running node serves metadata (BrokerError if it is not running or exits)."""
        pid = self.pid()
        if pid is None:
            raise BrokerError(f"Kafka node {self.node_id} is not running; see {self.out_file}")
        self._wait_ready(pid)

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 30.0) -> int:
        """Send ``sig`` (SIGKILL: a crash) to this node's process and wait until it is gone; returns its PID."""
        pid = self.pid()
        if pid is None:
            raise BrokerError(f"Kafka node {self.node_id} is not running (no live process in {self.pid_file})")
        os.kill(pid, sig)
        if not self._wait_exit(pid, timeout):
            raise BrokerError(f"Kafka node {self.node_id} (pid {pid}) did not exit within {timeout:.0f}s of {sig}")
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return pid

    def _wait_ready(self, pid: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                code = self._proc.returncode if self._proc is not None and self._proc.pid == pid else "?"
                raise BrokerError(
                    f"Kafka (pid {pid}) exited with code {code} while starting; see {self.out_file} "
                    f"and {self.server_log}. Last lines of {self.out_file.name}:\n{tail(self.out_file)}"
                )
            if self.ready():
                return
            time.sleep(0.25)
        raise BrokerError(
            f"Kafka (pid {pid}) did not serve metadata on {self.bootstrap} within {self.start_timeout:.0f}s; "
            f"it was stopped. See {self.server_log}. Last lines:\n{tail(self.server_log)}"
        )

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the broker by the PID in the PID file, wait, then SIGKILL. False if none was running."""
        pid = self.pid()
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        if not self._wait_exit(pid, timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            self._wait_exit(pid, 10.0)
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return True

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)

    def status(self) -> BrokerStatus:
        """Running or not, where everything is, and what is wrong with this machine."""
        pid = self.pid()
        problems = self.problems()
        ready = pid is not None and self.ready()
        if pid is not None and not ready:
            problems.append(
                f"process {pid} is alive but does not serve metadata on {self.bootstrap}; see {self.server_log}"
            )
        if pid is None and port_open("127.0.0.1", self.port):
            problems.append(f"{self.bootstrap} is in use by a process this data dir did not start")
        return BrokerStatus(
            running=pid is not None,
            ready=ready,
            pid=pid,
            bootstrap=self.bootstrap,
            controller=f"127.0.0.1:{self.controller_port}",
            version=self.version,
            data_dir=self.state_dir,
            libs_dir=self.libs_dir,
            jar_count=len(self.jars()),
            formatted=self.formatted,
            log_file=self.server_log,
            problems=problems,
        )


def render_properties(
    *, node_id: int, port: int, controller_port: int, log_dirs: Path | str,
    voters: dict[int, int], replication: tuple[int, int],
) -> str:
    """infra/kafka/server.properties.tmpl for one node (what ``LocalBroker.render_config`` writes)."""
    factor, min_insync = replication
    return string.Template(SERVER_TEMPLATE.read_text()).substitute(
        node_id=node_id, port=port, controller_port=controller_port, log_dirs=log_dirs,
        quorum_voters=",".join(f"{n}@127.0.0.1:{p}" for n, p in sorted(voters.items())),
        replication_factor=factor, min_insync_replicas=min_insync,
    )


CLUSTER_JVM_OPTS: tuple[str, ...] = ("-Xms128m", *BROKER_JVM_OPTS[1:])  # -Xmx512m each, small at rest


@dataclass
class NodeStatus:
    node_id: int
    running: bool
    ready: bool
    pid: int | None
    bootstrap: str
    controller: str
    log_file: Path


@dataclass
class ClusterStatus:
    """What ``lotabots kafka status`` reports for a cluster started with ``kafka up --brokers N``."""

    brokers: int
    bootstrap: str
    replication_factor: int
    min_insync_replicas: int
    version: str
    data_dir: Path
    nodes: list[NodeStatus]
    problems: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return any(n.running for n in self.nodes)

    @property
    def ready(self) -> bool:
        return all(n.running and n.ready for n in self.nodes)

    def render(self) -> str:
        live = sum(n.running for n in self.nodes)
        lines = [
            f"Kafka {self.version} (KRaft, {self.brokers} combined broker+controller nodes): {live} of "
            f"{self.brokers} running",
            f"  bootstrap   {self.bootstrap}",
            f"  topics      replication factor {self.replication_factor}, min.insync.replicas "
            f"{self.min_insync_replicas}",
            f"  state       {self.data_dir}",
        ]
        for n in self.nodes:
            state = (f"running, pid {n.pid}, " + ("serving metadata" if n.ready else "NOT serving all brokers yet")
                     if n.running else "not running")
            lines.append(f"  node {n.node_id}      {n.bootstrap} (controller {n.controller}): {state}; log {n.log_file}")
        if self.problems:
            lines.append("problems:")
            lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)


class LocalCluster:
    """A local KRaft cluster of ``brokers`` combined broker+controller nodes, each its own java process.

    Every node has its own loopback ports, state dir (``<state_dir>/node-<id>``: server.properties, data/,
    logs/, broker.pid) and PID; all are voters of one static controller quorum and share the jars and a
    cluster id. The broker defaults (``default.replication.factor``, ``min.insync.replicas`` and the
    internal topics') are ``replication`` (by default the tier config's ``[kafka]`` numbers capped by
    ``brokers``: RF 3, min.insync 2 for three nodes). Ports are kept in ``cluster.json`` so a node restarts
    on its own ports (the others know it by them) and the CLI finds the cluster again.

    The API the tests and the chaos suite use: ``start()``, ``stop()``, ``kill(node_id)`` (SIGKILL),
    ``stop_node(node_id)`` (SIGTERM), ``start_node(node_id)`` (same data dir, waits until it serves the
    whole cluster's metadata), ``bootstrap`` (every node), ``node_bootstrap(node_id)``, ``running_nodes()``.
    """

    def __init__(
        self,
        settings: Settings,
        brokers: int = 3,
        *,
        jar_dir: Path | None = None,
        state_dir: Path | None = None,
        ports: dict[int, tuple[int, int]] | None = None,  # node id -> (broker port, controller port)
        replication: tuple[int, int] | None = None,
        start_timeout: float = 180.0,
        jvm_opts: tuple[str, ...] = CLUSTER_JVM_OPTS,
    ) -> None:
        if brokers < 1:
            raise BrokerError(f"a cluster has at least one node, not {brokers}")
        self.settings = settings
        self.version = settings.kafka_version
        self.state_dir = Path(state_dir) if state_dir else Path(settings.data_dir) / "kafka" / "cluster"
        saved = self._load_layout()
        if saved is not None and saved["brokers"] != brokers:
            raise BrokerError(
                f"the cluster in {self.state_dir} has {saved['brokers']} nodes, not {brokers}; stop it and remove "
                f"its state to change the size (`lotabots kafka down && rm -rf {self.state_dir}`: deletes all messages)"
            )
        if ports is None:
            if saved is not None:
                ports = {int(k): (v[0], v[1]) for k, v in saved["ports"].items()}
            else:
                ports = {i: (settings.kafka_port + 2 * (i - 1), settings.kafka_controller_port + 2 * (i - 1))
                         for i in range(1, brokers + 1)}
        used = [p for pair in ports.values() for p in pair]
        if len(set(used)) != len(used) or sorted(ports) != list(range(1, brokers + 1)):
            raise BrokerError(f"cluster ports must be distinct, one pair per node 1..{brokers}: {ports}")
        if replication is None:
            from lotabots.tiers import load_tier_config
            from schemas.topics import replication as policy

            rep = policy(load_tier_config(Path(settings.tiers_file)).kafka, brokers)
            replication = (rep.factor, rep.min_insync)
        self.brokers = brokers
        self.ports = dict(sorted(ports.items()))
        self.replication = replication
        voters = {i: c for i, (_, c) in self.ports.items()}
        self.nodes: dict[int, LocalBroker] = {
            i: LocalBroker(
                settings, jar_dir=jar_dir, state_dir=self.state_dir / f"node-{i}", start_timeout=start_timeout,
                node_id=i, port=p, controller_port=c, voters=voters, replication=replication,
                expected_brokers=brokers, jvm_opts=jvm_opts,
            )
            for i, (p, c) in self.ports.items()
        }
        self.libs_dir = self.nodes[1].libs_dir

    # ---- layout --------------------------------------------------------------------------

    @property
    def layout_file(self) -> Path:
        return self.state_dir / "cluster.json"

    @property
    def cluster_id_file(self) -> Path:
        return self.state_dir / "cluster.id"

    def _load_layout(self) -> dict | None:
        try:
            return json.loads(self.layout_file.read_text())
        except (OSError, ValueError):
            return None

    def _save_layout(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        body = {"brokers": self.brokers, "ports": {str(i): list(p) for i, p in self.ports.items()},
                "replication_factor": self.replication[0], "min_insync_replicas": self.replication[1]}
        self.layout_file.write_text(json.dumps(body, indent=2) + "\n")

    @classmethod
    def existing(cls, settings: Settings, state_dir: Path | None = None) -> LocalCluster | None:
        """The cluster a previous ``kafka up --brokers N`` laid out in this data dir, if any."""
        root = Path(state_dir) if state_dir else Path(settings.data_dir) / "kafka" / "cluster"
        try:
            saved = json.loads((root / "cluster.json").read_text())
        except (OSError, ValueError):
            return None
        return cls(settings, saved["brokers"], state_dir=root)

    @property
    def bootstrap(self) -> str:
        """Every node's client address, comma-separated (clients find the rest from any one)."""
        return ",".join(n.bootstrap for n in self.nodes.values())

    def node_bootstrap(self, node_id: int) -> str:
        return self.nodes[node_id].bootstrap

    def cluster_id(self) -> str:
        return stored_cluster_id(self.cluster_id_file)

    @property
    def formatted(self) -> bool:
        return all(n.formatted for n in self.nodes.values())

    # ---- lifecycle -----------------------------------------------------------------------

    def ensure_jars(self) -> list[Path]:
        return self.nodes[1].ensure_jars()

    def format_storage(self) -> bool:
        """Format every node's storage with the one cluster id (in parallel); False if all already were."""
        self.ensure_jars()
        self._save_layout()
        cid = self.cluster_id()
        todo = [n for n in self.nodes.values() if not n.formatted]
        for n in todo:
            n.state_dir.mkdir(parents=True, exist_ok=True)
            n.cluster_id_file.write_text(cid + "\n")
        with ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
            list(pool.map(lambda n: n.format_storage(), todo))
        return bool(todo)

    def pids(self) -> dict[int, int | None]:
        return {i: n.pid() for i, n in self.nodes.items()}

    def running_nodes(self) -> list[int]:
        return [i for i, pid in self.pids().items() if pid is not None]

    def start(self) -> dict[int, int]:
        """Start every node that is not running and wait until each serves metadata listing all of them.

        Idempotent; on failure every node this call started is stopped again.
        """
        self.format_storage()
        running = set(self.running_nodes())
        for i, node in self.nodes.items():
            if i in running:
                continue
            for port in (node.port, node.controller_port):
                if port_open("127.0.0.1", port):
                    raise BrokerError(
                        f"127.0.0.1:{port} (node {i}) is already in use by another process; stop it or choose "
                        "other ports (LOTABOTS_KAFKA_PORT / LOTABOTS_KAFKA_CONTROLLER_PORT: node i uses +2(i-1))"
                    )
        started: list[int] = []
        try:
            for i, node in self.nodes.items():
                if i not in running:
                    node.start(wait=False)
                    started.append(i)
            for node in self.nodes.values():
                node.wait_ready()
        except BrokerError:
            for i in started:
                self.nodes[i].stop()
            raise
        return {i: pid for i, pid in self.pids().items() if pid is not None}

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM every running node (all at once), wait, SIGKILL stragglers; returns the node ids stopped."""
        ids = self.running_nodes()
        with ThreadPoolExecutor(max_workers=max(1, len(ids))) as pool:
            list(pool.map(lambda i: self.nodes[i].stop(timeout), ids))
        return ids

    def kill(self, node_id: int, sig: int = signal.SIGKILL) -> int:
        """Crash one node (SIGKILL by default) by its PID and wait until the process is gone; returns the PID."""
        return self.nodes[node_id].kill(sig)

    def stop_node(self, node_id: int, timeout: float = 30.0) -> bool:
        """Stop one node cleanly (SIGTERM: it hands its leaderships over first)."""
        return self.nodes[node_id].stop(timeout)

    def start_node(self, node_id: int) -> int:
        """Start one node again on its data dir and ports; returns once it serves metadata listing every node."""
        return self.start_nodes(node_id)[node_id]

    def start_nodes(self, *node_ids: int) -> dict[int, int]:
        """Start several stopped nodes at once (after two are down, neither can be ready without the other:
        the quorum needs them); returns once each serves metadata listing every node."""
        pids = {i: self.nodes[i].start(wait=False) for i in node_ids}
        for i in node_ids:
            self.nodes[i].wait_ready()
        return pids

    def status(self) -> ClusterStatus:
        problems = self.nodes[1].problems()
        nodes = []
        for i, n in self.nodes.items():
            pid = n.pid()
            nodes.append(NodeStatus(i, pid is not None, pid is not None and n.ready(), pid, n.bootstrap,
                                    f"127.0.0.1:{n.controller_port}", n.server_log))
            if pid is None and port_open("127.0.0.1", n.port):
                problems.append(f"{n.bootstrap} (node {i}) is in use by a process this data dir did not start")
        return ClusterStatus(
            brokers=self.brokers, bootstrap=self.bootstrap, replication_factor=self.replication[0],
            min_insync_replicas=self.replication[1], version=self.version, data_dir=self.state_dir, nodes=nodes,
            problems=problems,
        )


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
