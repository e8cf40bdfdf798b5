"""A real Apache Kafka broker (KRaft, one node) run locally from the jars Maven Central serves.

Layout under ``<data_dir>/kafka`` (see docs/kafka.md)::

    <version>/libs/          the broker's classpath (mvn dependency:copy-dependencies), shared
    broker/server.properties rendered from infra/kafka/server.properties.tmpl on every start
    broker/cluster.id        the KRaft cluster id the storage was formatted with
    broker/data/             log.dirs (topic partitions + the KRaft metadata log)
    broker/logs/             server.log, state-change.log (log4j2) and kafka.out (stdout/stderr)
    broker/broker.pid        the PID of the java process started by ``start()``

Only the process whose PID is in the PID file, and whose command line names this
broker's server.properties, is ever signalled.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
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
    live (tests share one jar cache and keep state in a temporary directory).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        jar_dir: Path | None = None,
        state_dir: Path | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.settings = settings
        self.version = settings.kafka_version
        self.port = settings.kafka_port
        self.controller_port = settings.kafka_controller_port
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
        text = string.Template(SERVER_TEMPLATE.read_text()).substitute(
            port=self.port, controller_port=self.controller_port, log_dirs=self.log_dir
        )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(text)
        return self.properties_file

    def cluster_id(self) -> str:
        """The cluster id stored in the state dir, created on first use."""
        if self.cluster_id_file.exists():
            return self.cluster_id_file.read_text().strip()
        cid = new_cluster_id()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.cluster_id_file.write_text(cid + "\n")
        return cid

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
        if self._alive(pid) and str(self.properties_file) in _cmdline(pid):
            return pid
        with contextlib.suppress(OSError):
            self.pid_file.unlink()
        return None

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        state = _proc_state(pid)
        return state is not None and state not in ("Z", "X")

    def ready(self) -> bool:
        """Whether the broker answers a metadata request and lists itself as live."""
        try:
            brokers, _ = probe_metadata("127.0.0.1", self.port)
        except (OSError, struct.error):
            return False
        return brokers > 0

    def start(self) -> int:
        """Prepare (jars, format) and start the broker in its own session; wait until it serves metadata.

        Idempotent: returns the PID of an already running broker.
        """
        java = self._java_or_raise()
        self.ensure_jars()
        self.format_storage()
        running = self.pid()
        if running is not None:
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
        cmd = [java, *BROKER_JVM_OPTS, *self._log_opts(), "-cp", self._classpath(), MAIN_CLASS, str(props)]
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
        try:
            self._wait_ready(self._proc.pid)
        except BrokerError:
            self.stop()
            raise
        return self._proc.pid

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


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
