"""Where the test services come from: local processes (default), testcontainers, or addresses handed in.

Only the selection and configuration logic is tested here: a Docker engine is not available on the
machines that run this suite, so the containers themselves are exercised where one is (docs/testing.md).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
from sqlalchemy.engine import make_url

import tests.services as services
from lotabots.clickhouse import is_chdb, normalise_dsn
from tests.services import (
    ServiceError,
    clickhouse_container_dsn,
    container_image,
    kafka_container_env,
    postgres_container_url,
    service_mode,
    service_source,
)

CONTAINERS = {"LOTABOTS_TEST_SERVICES": "containers"}


def test_local_processes_are_the_default() -> None:
    assert service_mode({}) == "local"
    assert service_mode({"LOTABOTS_TEST_SERVICES": ""}) == "local"
    assert {n: service_source(n, {}) for n in ("kafka", "postgres", "clickhouse", "redis")} == {
        "kafka": "local", "postgres": "local", "clickhouse": "local", "redis": "local"}


def test_containers_mode_selects_containers_for_kafka_postgres_and_clickhouse() -> None:
    assert service_mode({"LOTABOTS_TEST_SERVICES": " Containers "}) == "containers"
    assert {n: service_source(n, CONTAINERS) for n in ("kafka", "postgres", "clickhouse", "redis")} == {
        "kafka": "containers", "postgres": "containers", "clickhouse": "containers", "redis": "local"}


def test_an_unknown_mode_is_an_error_not_a_silent_default() -> None:
    with pytest.raises(ServiceError, match="local, containers"):
        service_mode({"LOTABOTS_TEST_SERVICES": "docker"})


def test_an_address_handed_in_wins_over_either_mode() -> None:
    env = {**CONTAINERS, "LOTABOTS_TEST_KAFKA_BOOTSTRAP": "kafka.example:9092",
           "LOTABOTS_TEST_CLICKHOUSE_URL": "http://u:p@ch.example:8123/default"}
    assert service_source("kafka", env) == "external"
    assert service_source("clickhouse", env) == "external"
    assert service_source("postgres", env) == "containers"


def test_start_kafka_returns_the_handed_in_address_without_starting_anything(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("LOTABOTS_TEST_SERVICES", "containers")
    monkeypatch.setenv("LOTABOTS_TEST_KAFKA_BOOTSTRAP", "10.1.2.3:9092")
    handle = services.start_kafka(tmp_path)
    assert (handle.bootstrap, handle.external, handle.pid, handle.container) == ("10.1.2.3:9092", True, None, None)


@pytest.mark.parametrize("start", ["start_kafka", "start_postgres", "start_clickhouse"])
def test_containers_without_a_docker_engine_fail_loudly_instead_of_falling_back(
    start: str, monkeypatch, tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    for var in ("LOTABOTS_TEST_KAFKA_BOOTSTRAP", "LOTABOTS_TEST_DATABASE_URL", "LOTABOTS_TEST_CLICKHOUSE_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LOTABOTS_TEST_SERVICES", "containers")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker-here.sock")
    with pytest.raises(ServiceError, match="LOTABOTS_TEST_SERVICES=containers needs"):
        getattr(services, start)(tmp_path)


def test_local_clickhouse_is_chdb_under_the_test_directory(monkeypatch, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("LOTABOTS_TEST_SERVICES", raising=False)
    monkeypatch.delenv("LOTABOTS_TEST_CLICKHOUSE_URL", raising=False)
    dsn = services.start_clickhouse(tmp_path).url
    assert is_chdb(dsn) and normalise_dsn(dsn) == dsn
    assert urlparse(dsn).path == str((tmp_path / "chdb").resolve())


def test_kafka_container_advertises_the_address_clients_dial() -> None:
    env = kafka_container_env("127.0.0.1", 39092)
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://127.0.0.1:39092"
    assert "PLAINTEXT://0.0.0.0:39092" in env["KAFKA_LISTENERS"].split(",")  # bound 1:1 on the host
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft, single node


def test_kafka_container_behaves_like_the_local_broker() -> None:
    from lotabots.broker import render_properties

    template = {}  # infra/kafka/server.properties.tmpl as the single local broker renders it
    rendered = render_properties(node_id=1, port=9092, controller_port=9093, log_dirs="/x", voters={1: 9093},
                                 replication=(1, 1))
    for line in rendered.splitlines():
        if line.strip() and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            template[key.strip()] = value.strip()
    env = kafka_container_env("localhost", 9092)
    for key in ("auto.create.topics.enable", "group.initial.rebalance.delay.ms", "default.replication.factor",
                "min.insync.replicas", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr"):
        assert env["KAFKA_" + key.upper().replace(".", "_")] == template[key], key


def test_postgres_container_url_is_the_platforms_asyncpg_url() -> None:
    url = make_url(postgres_container_url("localhost", 49153, "postgres", "postgres", "lotabots_test"))
    assert (url.drivername, url.host, url.port, url.database) == ("postgresql+asyncpg", "localhost", 49153,
                                                                 "lotabots_test")


def test_clickhouse_container_dsn_takes_the_http_path() -> None:
    dsn = clickhouse_container_dsn("localhost", 49200, "lotabots", "secret")
    parsed = urlparse(dsn)
    assert not is_chdb(dsn)
    assert (parsed.scheme, parsed.hostname, parsed.port, parsed.username, parsed.path) == (
        "http", "localhost", 49200, "lotabots", "/default")


def test_images_follow_the_local_broker_version_and_can_be_overridden() -> None:
    from lotabots.settings import Settings

    assert container_image("kafka", {}) == f"apache/kafka:{Settings().kafka_version}"
    assert container_image("clickhouse", {"LOTABOTS_TEST_CLICKHOUSE_IMAGE": "clickhouse/clickhouse-server:24.8"}) \
        == "clickhouse/clickhouse-server:24.8"
