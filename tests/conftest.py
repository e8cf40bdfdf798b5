"""Session fixtures: real PostgreSQL, real Kafka, the real model, and the LotaBots processes."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from tests.services import kafka_service, postgres_service
from tests.stack import REPO, Stack
from tests.usage_pipeline import usage_pipeline  # noqa: F401 - a session fixture for every directory

# One key-encryption key for every process the session starts, as production sets one from a Secret:
# processes with different data dirs must unseal the same signing keys in the shared database.
os.environ.setdefault("LOTABOTS_AUTH_KEY_ENCRYPTION_KEY", base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())

MODEL_CACHE = Path(os.environ.get("LOTABOTS_TEST_MODEL_DIR", REPO / ".data" / "models"))


@pytest.fixture(scope="session")
def session_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lotabots")


@pytest.fixture(scope="session")
def postgres(session_tmp: Path) -> Iterator:  # type: ignore[type-arg]
    with postgres_service(session_tmp / "pg") as handle:
        yield handle


@pytest.fixture(scope="session")
def kafka(session_tmp: Path) -> Iterator:  # type: ignore[type-arg]
    with kafka_service(session_tmp / "kafka") as handle:
        yield handle


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The model, built once into a cache shared across runs (the build is idempotent): what a worker
    with the default settings loads (fp32, and int4-fp32 for one-row steps)."""
    from inference.engine import serving_variants
    from inference.model_build import build_model
    from lotabots.settings import Settings

    for variant in serving_variants(Settings(model_variant="fp32")):
        build_model(MODEL_CACHE, variant=variant)
    return MODEL_CACHE


@pytest.fixture(scope="session")
def reference() -> dict:
    return json.loads((REPO / "tests" / "fixtures" / "smollm2_greedy.json").read_text())


@pytest.fixture(scope="session")
def kafka_topics(kafka):  # type: ignore[no-untyped-def]
    """The broker with every catalogue topic of the default tier config created."""
    from lotabots.tiers import load_tier_config
    from lotabots.topic_admin import sync_topics
    from schemas.topics import topic_catalogue

    asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(load_tier_config(REPO / "lotabots" / "tiers.toml"))))
    return kafka


@pytest.fixture(scope="session")
def stack_env(session_tmp: Path, postgres, kafka_topics, model_dir: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    from lotabots.db import migrate
    from tests.services import free_ports

    kafka = kafka_topics

    data = session_tmp / "data"
    data.mkdir(exist_ok=True)
    port = free_ports(1)[0]
    env = {
        **os.environ,
        "LOTABOTS_DATA_DIR": str(data),
        "LOTABOTS_DATABASE_URL": postgres.url,
        "LOTABOTS_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "LOTABOTS_MODEL_DIR": str(model_dir),
        "LOTABOTS_GATEWAY_PORT": str(port),
        "LOTABOTS_USAGE_PORT": str(free_ports(1)[0]),  # the usage service; the gateway reads through it
        "LOTABOTS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "LOTABOTS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
        "LOTABOTS_INFERENCE_THREADS": "1",
        "LOTABOTS_LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
    }
    migrate(postgres.url)
    return env


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str], session_tmp: Path) -> Iterator[Stack]:
    """Gateway + result writer + one inference worker for the `pro` tier (tests add more as needed)."""
    logs = session_tmp / "logs"
    logs.mkdir(exist_ok=True)
    s = Stack(stack_env, logs, f"http://127.0.0.1:{stack_env['LOTABOTS_GATEWAY_PORT']}")
    s.spawn("gateway", "serve", "gateway")
    s.spawn("results", "worker", "results")
    s.spawn("inference-pro", "worker", "inference", "--tier", "pro")
    s.wait_gateway()
    yield s
    s.stop_all()


@pytest.fixture(scope="session")
def engine(postgres):  # type: ignore[no-untyped-def]
    from lotabots.db import make_engine

    return make_engine(postgres.url)


async def _new_tenant(engine, tier: str) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    from gateway.tenants import create_tenant
    from lotabots.tiers import load_tier_config

    tenant_id, key = await create_tenant(engine, load_tier_config(REPO / "lotabots" / "tiers.toml"), "test", tier)
    return tenant_id, key.key


@pytest.fixture
async def pro_tenant(stack_env, postgres) -> AsyncIterator[tuple[str, str]]:  # type: ignore[no-untyped-def]
    from lotabots.db import make_engine

    engine = make_engine(postgres.url)
    try:
        yield await _new_tenant(engine, "pro")
    finally:
        await engine.dispose()


@pytest.fixture
async def api(stack: Stack, pro_tenant: tuple[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30,
                                 headers={"Authorization": f"Bearer {pro_tenant[1]}"}) as client:
        yield client
