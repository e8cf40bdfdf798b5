"""Real services for the test suite, started as child processes on free loopback ports.

Each ``start_*`` returns a :class:`ServiceHandle` that remembers the one PID it
spawned and stops only that process (also at interpreter exit). The ``*_service``
context managers wrap them for fixtures. Environment variables hand in services
started elsewhere, and then nothing is started:

* ``LOTABOTS_TEST_KAFKA_BOOTSTRAP``  e.g. ``127.0.0.1:9092``
* ``LOTABOTS_TEST_DATABASE_URL``     e.g. ``postgresql+asyncpg://postgres@127.0.0.1:5432/lotabots_test``
* ``LOTABOTS_TEST_REDIS_URL``        e.g. ``redis://127.0.0.1:6379/0``
* ``LOTABOTS_TEST_CLICKHOUSE_URL``   a clickhouse-connect DSN, e.g. ``http://user:pw@127.0.0.1:8123/default``

``LOTABOTS_TEST_SERVICES`` picks where the others come from: ``local`` (the default, what CI runs:
processes below) or ``containers`` (Kafka, PostgreSQL and a real ClickHouse server started with
testcontainers on a Docker engine; see the section at the end and docs/testing.md).

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
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from lotabots.broker import BrokerError, LocalBroker, tail
from lotabots.settings import Settings

ENV_KAFKA = "LOTABOTS_TEST_KAFKA_BOOTSTRAP"
ENV_DATABASE = "LOTABOTS_TEST_DATABASE_URL"
ENV_REDIS = "LOTABOTS_TEST_REDIS_URL"
ENV_CLICKHOUSE = "LOTABOTS_TEST_CLICKHOUSE_URL"
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
    container: str | None = None  # the Docker container id when started by testcontainers
    _pause: Callable[[], None] | None = field(default=None, repr=False)
    _resume: Callable[[], None] | None = field(default=None, repr=False)

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
        return self.pid is None and self.container is None

    def stop(self) -> None:
        """Stop the spawned process (only that PID); safe to call twice."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()

    def pause(self) -> None:
        """Stop the server but keep its data (PostgreSQL here); `resume()` starts it again."""
        assert self._pause is not None, f"{self.name} cannot be paused"
        self._pause()

    def resume(self) -> None:
        assert self._resume is not None, f"{self.name} cannot be resumed"
        self._resume()


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
    if service_source("kafka") == "containers":
        return start_kafka_container()
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
    if service_source("postgres") == "containers":
        return start_postgres_container()
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
    def launch() -> subprocess.Popen:
        with open(log_file, "ab") as log:
            return subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env,
                start_new_session=True, **_as_user(user),
            )  # fmt: skip

    proc = launch()

    def stop() -> None:
        _terminate(proc, signal.SIGINT)  # "fast" shutdown: roll back clients, checkpoint, exit
        if remove_root:
            shutil.rmtree(root, ignore_errors=True)

    def pause() -> None:  # the outage a failure test wants: every connection closed, new ones refused
        _terminate(proc, signal.SIGINT)

    def resume() -> None:
        nonlocal proc
        if proc.poll() is None:
            return
        proc = launch()
        handle.pid = proc.pid
        _wait_pg(bindir, sock, port, proc, log_file)

    handle = _register(ServiceHandle("postgres", "", proc.pid, root, log_file, None, stop,
                                     _pause=pause, _resume=resume))
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


# ---- ClickHouse: chDB in-process by default, a real server with containers ------------------


def start_clickhouse(tmpdir: Path) -> ServiceHandle:
    """A clickhouse-connect DSN: the env's, a ClickHouse server container, or chDB under ``tmpdir``.

    The local default starts nothing: chDB is the embedded engine, opened by whoever uses the DSN.
    """
    source = service_source("clickhouse")
    if source == "external":
        return ServiceHandle("clickhouse", os.environ[ENV_CLICKHOUSE])
    if source == "containers":
        return start_clickhouse_container()
    return ServiceHandle("clickhouse", f"chdb:///{(Path(tmpdir) / 'chdb').resolve().as_posix().lstrip('/')}")


# ---- testcontainers (LOTABOTS_TEST_SERVICES=containers) ------------------------------------
# Kept apart from the local path above: nothing here runs, or is imported, unless containers are asked
# for. Images can be overridden with LOTABOTS_TEST_{KAFKA,POSTGRES,CLICKHOUSE}_IMAGE.

ENV_MODE = "LOTABOTS_TEST_SERVICES"
MODES = ("local", "containers")
CONTAINER_SERVICES = ("kafka", "postgres", "clickhouse")  # Redis stays a local process in both modes
_EXTERNAL_ENV = {"kafka": ENV_KAFKA, "postgres": ENV_DATABASE, "redis": ENV_REDIS, "clickhouse": ENV_CLICKHOUSE}
CLICKHOUSE_USER = "lotabots"
CLICKHOUSE_PASSWORD = "lotabots-test"


def service_mode(env: Mapping[str, str] | None = None) -> str:
    """``local`` (default) or ``containers``, from LOTABOTS_TEST_SERVICES; anything else is an error."""
    raw = (os.environ if env is None else env).get(ENV_MODE, "").strip().lower() or "local"
    if raw not in MODES:
        raise ServiceError(f"{ENV_MODE}={raw!r} is not one of {', '.join(MODES)}")
    return raw


def service_source(name: str, env: Mapping[str, str] | None = None) -> str:
    """Where service ``name`` comes from: ``external`` (its address is in the env), ``containers`` or ``local``."""
    env = os.environ if env is None else env
    if env.get(_EXTERNAL_ENV[name]):
        return "external"
    mode = service_mode(env)
    return "containers" if mode == "containers" and name in CONTAINER_SERVICES else "local"


def container_image(name: str, env: Mapping[str, str] | None = None) -> str:
    env = os.environ if env is None else env
    defaults = {
        "kafka": f"apache/kafka:{Settings().kafka_version}",  # the local broker's version
        "postgres": "postgres:17-alpine",
        "clickhouse": "clickhouse/clickhouse-server:25.8",
    }
    return env.get(f"LOTABOTS_TEST_{name.upper()}_IMAGE") or defaults[name]


def kafka_container_env(host: str, port: int) -> dict[str, str]:
    """apache/kafka settings for a single KRaft node that clients reach at ``host:port``.

    The broker listens on ``port`` inside the container too, and the port is bound 1:1, so the address it
    advertises is the one clients dial (a mapped random port would make metadata point elsewhere).
    Broker behaviour mirrors infra/kafka/server.properties.tmpl (the local broker).
    """
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://0.0.0.0:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
        "KAFKA_NUM_PARTITIONS": "1",
        "KAFKA_DEFAULT_REPLICATION_FACTOR": "1",
        "KAFKA_MIN_INSYNC_REPLICAS": "1",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    }


def postgres_container_url(host: str, port: int, user: str, password: str, dbname: str) -> str:
    """The async SQLAlchemy URL the platform uses (asyncpg), for a container's coordinates."""
    return f"postgresql+asyncpg://{user}:{password}@{host}:{port}/{dbname}"


def clickhouse_container_dsn(host: str, http_port: int, user: str, password: str, database: str = "default") -> str:
    """A clickhouse-connect DSN over HTTP: the production client path (docs: DESIGN §3)."""
    return f"http://{user}:{password}@{host}:{http_port}/{database}"


def _require_docker() -> None:
    """Fail loudly (never fall back to local processes) when containers were asked for but cannot run."""
    try:
        import docker  # testcontainers' own dependency
        import testcontainers  # noqa: F401
    except ImportError as e:
        raise ServiceError(f"{ENV_MODE}=containers needs the testcontainers package "
                           f"(pip install testcontainers): {e}") from e
    try:
        docker.from_env().ping()
    except Exception as e:
        raise ServiceError(f"{ENV_MODE}=containers needs a running Docker engine "
                           f"(DOCKER_HOST={os.environ.get('DOCKER_HOST', 'unset')}): {e}") from e


def _container_handle(name: str, address: str, container) -> ServiceHandle:  # type: ignore[no-untyped-def]
    handle = ServiceHandle(name, address, _stop=lambda: container.stop(), container=container.get_container_id())
    return _register(handle)


def start_kafka_container() -> ServiceHandle:
    _require_docker()
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    port = free_ports(1)[0]
    container = DockerContainer(container_image("kafka"))
    host = container.get_docker_client().host()
    for key, value in kafka_container_env(host, port).items():
        container.with_env(key, value)
    container.with_bind_ports(port, port)
    container.waiting_for(LogMessageWaitStrategy(r"Kafka Server started").with_startup_timeout(120))
    container.start()
    handle = _container_handle("kafka", f"{host}:{port}", container)
    try:
        import asyncio

        from lotabots.topic_admin import wait_for_broker

        asyncio.run(wait_for_broker(handle.address, timeout=START_TIMEOUT_S))
    except BaseException:
        handle.stop()
        raise
    return handle


def start_postgres_container() -> ServiceHandle:
    _require_docker()
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers < 4.14 kept its modules at the top level
        from testcontainers.postgres import PostgresContainer  # type: ignore[no-redef]

    container = PostgresContainer(container_image("postgres"), username="postgres", password="postgres",
                                  dbname=TEST_DATABASE, driver="asyncpg")
    # the same durability trade-offs as the local test server: speed over crash safety
    container.with_command("postgres -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                           "-c max_connections=200")
    container.start()
    url = postgres_container_url(container.get_container_host_ip(), int(container.get_exposed_port(5432)),
                                 "postgres", "postgres", TEST_DATABASE)
    return _container_handle("postgres", url, container)


def start_clickhouse_container() -> ServiceHandle:
    _require_docker()
    try:
        from testcontainers.community.clickhouse import ClickHouseContainer
    except ImportError:
        from testcontainers.clickhouse import ClickHouseContainer  # type: ignore[no-redef]

    container = ClickHouseContainer(container_image("clickhouse"), username=CLICKHOUSE_USER,
                                    password=CLICKHOUSE_PASSWORD, dbname="default")
    container.start()  # waits for HTTP /ping on 8123
    dsn = clickhouse_container_dsn(container.get_container_host_ip(), int(container.get_exposed_port(8123)),
                                   CLICKHOUSE_USER, CLICKHOUSE_PASSWORD)
    return _container_handle("clickhouse", dsn, container)


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


@contextlib.contextmanager
def clickhouse_service(tmpdir: Path) -> Iterator[ServiceHandle]:
    """``with clickhouse_service(tmp) as ch: ch.url`` (chDB DSN locally, HTTP DSN with containers)."""
    handle = start_clickhouse(tmpdir)
    try:
        yield handle
    finally:
        handle.stop()
