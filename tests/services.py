"""Real services for the test suite, started as child processes on free loopback ports.

Each ``start_*`` returns a :class:`ServiceHandle` that remembers the one PID it
spawned and stops only that process (also at interpreter exit). The ``*_service``
context managers wrap them for fixtures. Environment variables hand in services
started elsewhere, and then nothing is started:

* ``LOTABOTS_TEST_KAFKA_BOOTSTRAP``  e.g. ``127.0.0.1:9092``
* ``LOTABOTS_TEST_DATABASE_URL``     e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/lotabots_test``
* ``LOTABOTS_TEST_REDIS_URL``        e.g. ``redis://127.0.0.1:6379/0``

Kafka is the real broker from lotabots/broker.py (jars cached once under the
repository's data dir, ``.data/kafka/<version>/libs``); PostgreSQL is Debian's
``postgresql`` package (initdb into the test's directory, run as the ``postgres``
OS user when the tests run as root); Redis is Debian's ``redis-server``.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lotabots.broker import BrokerError, LocalBroker, tail
from lotabots.settings import Settings

ENV_KAFKA = "LOTABOTS_TEST_KAFKA_BOOTSTRAP"
ENV_DATABASE = "LOTABOTS_TEST_DATABASE_URL"
ENV_REDIS = "LOTABOTS_TEST_REDIS_URL"
TEST_DATABASE = "lotabots_test"
START_TIMEOUT_S = 60.0


class ServiceError(RuntimeError):
    """A test service could not be started; the message names the log to read."""


@dataclass
class ServiceHandle:
    """A running service: where to reach it and how to stop the process the tests started.

    ``pid`` is None for a service handed in through the environment (``stop()`` is then a no-op).
    """

    name: str
    address: str
    pid: int | None = None
    workdir: Path | None = None
    log_file: Path | None = None
    broker: LocalBroker | None = None
    _stop: Callable[[], None] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """Kafka bootstrap servers (same as ``address``)."""
        return self.address

    @property
    def url(self) -> str:
        """Connection URL (same as ``address``)."""
        return self.address

    @property
    def external(self) -> bool:
        return self.pid is None

    def stop(self) -> None:
        """Stop the spawned process (only that PID); safe to call twice."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def free_ports(n: int = 1) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 right now."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _register(handle: ServiceHandle) -> ServiceHandle:
    atexit.register(handle.stop)
    return handle


def _terminate(proc: subprocess.Popen, sig: int, timeout: float = 30.0) -> None:
    """Signal one child we spawned, wait, then SIGKILL it; always reaps it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


# ---- Kafka ---------------------------------------------------------------------------------


def start_kafka(tmpdir: Path, *, attempts: int = 3) -> ServiceHandle:
    """A real single-node KRaft broker with its state under ``tmpdir`` (or the env's bootstrap)."""
    external = os.environ.get(ENV_KAFKA)
    if external:
        return ServiceHandle("kafka", external)
    jar_dir = _shared_jar_dir()
    last: BrokerError | None = None
    for _ in range(attempts):  # a free port can be taken between choosing and binding it
        port, controller_port = free_ports(2)
        settings = Settings(data_dir=Path(tmpdir), kafka_port=port, kafka_controller_port=controller_port)
        broker = LocalBroker(settings, jar_dir=jar_dir, state_dir=Path(tmpdir) / "kafka")
        try:
            pid = broker.start()
        except BrokerError as e:
            last = e
            continue
        return _register(
            ServiceHandle(
                "kafka",
                broker.bootstrap,
                pid,
                broker.state_dir,
                broker.server_log,
                broker,
                lambda b=broker: b.stop(),
            )
        )
    raise ServiceError(f"could not start Kafka for the tests: {last}")


def _shared_jar_dir() -> Path:
    base = Settings()
    return Path(base.data_dir) / "kafka" / base.kafka_version / "libs"


# ---- PostgreSQL ----------------------------------------------------------------------------


def pg_bindir() -> Path:
    """Where initdb/postgres live: $LOTABOTS_PG_BINDIR, Debian's newest /usr/lib/postgresql/N/bin, or PATH."""
    if os.environ.get("LOTABOTS_PG_BINDIR"):
        return Path(os.environ["LOTABOTS_PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise ServiceError("PostgreSQL not found: install postgresql (apt-get install postgresql)")
    return Path(initdb).resolve().parent


def _as_user(user: str | None) -> dict:
    """Popen keyword arguments that drop to ``user`` (only used when running as root)."""
    if user is None:
        return {}
    return {"user": user, "group": user, "extra_groups": []}


def _pg_root(tmpdir: Path, user: str | None) -> tuple[Path, bool]:
    """A directory the server's OS user owns: under tmpdir if that user can reach it, else a fresh /tmp dir.

    Returns (directory, whether to delete it on stop).
    """
    root = Path(tmpdir) / "postgres"
    root.mkdir(parents=True, exist_ok=True)
    if user is None:
        return root, False
    shutil.chown(root, user, user)
    if subprocess.run(["test", "-w", str(root)], **_as_user(user)).returncode == 0:
        return root, False
    # pytest's tmp dirs are 0700 root: the postgres user cannot traverse them
    root = Path(tempfile.mkdtemp(prefix="lotabots-pg-"))
    shutil.chown(root, user, user)
    return root, True


def start_postgres(tmpdir: Path) -> ServiceHandle:
    """initdb + postgres on a free loopback port, with database ``lotabots_test`` (or the env's URL)."""
    external = os.environ.get(ENV_DATABASE)
    if external:
        return ServiceHandle("postgres", external)
    bindir = pg_bindir()
    user = "postgres" if os.geteuid() == 0 else None
    root, remove_root = _pg_root(tmpdir, user)
    data, sock = root / "data", root / "sock"
    sock.mkdir(exist_ok=True)
    if user:
        shutil.chown(sock, user, user)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    init = subprocess.run(
        [str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
         "--locale=C", "--no-sync"],
        capture_output=True, text=True, cwd=root, env=env, **_as_user(user),
    )  # fmt: skip
    if init.returncode != 0:
        raise ServiceError(f"initdb failed in {data}:\n{init.stdout}{init.stderr}")
    port = free_ports(1)[0]
    log_file = root / "postgres.log"
    cmd = [
        str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock),
        "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
        "-c", "full_page_writes=off", "-c", "max_connections=200",
    ]  # fmt: skip
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
            start_new_session=True, **_as_user(user),
        )  # fmt: skip

    def stop() -> None:
        _terminate(proc, signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
        if remove_root:
            shutil.rmtree(root, ignore_errors=True)

    handle = _register(ServiceHandle("postgres", "", proc.pid, root, log_file, None, stop))
    try:
        _wait_pg(bindir, sock, port, proc, log_file)
        created = subprocess.run(
            [str(bindir / "createdb"), "-h", str(sock), "-p", str(port), "-U", "postgres", TEST_DATABASE],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        if created.returncode != 0:
            raise ServiceError(f"createdb {TEST_DATABASE} failed: {created.stderr}")
    except BaseException:
        handle.stop()
        raise
    handle.address = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{TEST_DATABASE}"
    return handle


def _wait_pg(bindir: Path, sock: Path, port: int, proc: subprocess.Popen, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"postgres exited with code {proc.returncode}; {log_file}:\n{tail(log_file)}")
        ready = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", str(sock), "-p", str(port), "-U", "postgres"],
        )
        if ready.returncode == 0:
            return
        time.sleep(0.1)
    raise ServiceError(f"postgres did not accept connections within {START_TIMEOUT_S:.0f}s; see {log_file}")


# ---- Redis ---------------------------------------------------------------------------------


def start_redis(tmpdir: Path) -> ServiceHandle:
    """redis-server on a free loopback port, no persistence (or the env's URL)."""
    external = os.environ.get(ENV_REDIS)
    if external:
        return ServiceHandle("redis", external)
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(server, os.X_OK):
        raise ServiceError("redis-server not found: install redis-server (apt-get install redis-server)")
    workdir = Path(tmpdir) / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_ports(1)[0]
    log_file = workdir / "redis.log"
    cmd = [
        server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
        "--appendonly", "no", "--daemonize", "no", "--logfile", str(log_file),
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        cwd=workdir, start_new_session=True,
    )  # fmt: skip
    handle = _register(
        ServiceHandle(
            "redis", f"redis://127.0.0.1:{port}/0", proc.pid, workdir, log_file, None,
            lambda: _terminate(proc, signal.SIGTERM),
        )
    )  # fmt: skip
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _redis_ping(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise ServiceError(
                f"redis-server did not start (exit {proc.returncode}); {log_file}:\n{tail(log_file)}"
            )
        time.sleep(0.05)
    return handle


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


# ---- context managers for fixtures ---------------------------------------------------------


@contextlib.contextmanager
def kafka_service(tmpdir: Path) -> Iterator[ServiceHandle]:
    """``with kafka_service(tmp) as kafka: kafka.bootstrap``; stopped on exit."""
    handle = start_kafka(tmpdir)
    try:
        yield handle
    finally:
        handle.stop()


@contextlib.contextmanager
def postgres_service(tmpdir: Path) -> Iterator[ServiceHandle]:
    """``with postgres_service(tmp) as pg: pg.url``; stopped on exit."""
    handle = start_postgres(tmpdir)
    try:
        yield handle
    finally:
        handle.stop()


@contextlib.contextmanager
def redis_service(tmpdir: Path) -> Iterator[ServiceHandle]:
    """``with redis_service(tmp) as redis: redis.url``; stopped on exit."""
    handle = start_redis(tmpdir)
    try:
        yield handle
    finally:
        handle.stop()
