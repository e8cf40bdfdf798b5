"""Fixtures of the limits tests: a real Redis, a tier config with small limits, tenants on it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from gateway.tenants import create_tenant
from lotabots.db import make_engine
from lotabots.tiers import TierConfig
from lotabots.topic_admin import sync_topics
from schemas.topics import topic_catalogue
from tests.limits.gateways import write_limits_tiers
from tests.services import ServiceHandle, redis_service

NewTenant = Callable[[str], Awaitable[tuple[str, str]]]


@pytest.fixture(scope="session")
def redis_server(session_tmp: Path) -> Iterator[ServiceHandle]:
    with redis_service(session_tmp / "redis") as handle:
        yield handle


@pytest.fixture(scope="session")
def limits_tiers(session_tmp: Path, stack_env: dict[str, str], kafka: ServiceHandle) -> tuple[Path, TierConfig]:
    """A tier config with small limits (tests/limits/gateways.py) and the request topics of its new tiers."""
    path = session_tmp / "limits-tiers.toml"
    config = write_limits_tiers(path)
    asyncio.run(sync_topics(kafka.bootstrap, topic_catalogue(config)))
    return path, config


@pytest.fixture(scope="module")
async def new_tenant(postgres: ServiceHandle, limits_tiers: tuple[Path, TierConfig]) -> AsyncIterator[NewTenant]:
    """`await new_tenant("pro")` -> (tenant id, API key) on a tier of the limits tier config."""
    engine = make_engine(postgres.url)

    async def make(tier: str) -> tuple[str, str]:
        tenant_id, key = await create_tenant(engine, limits_tiers[1], "limits", tier)
        return tenant_id, key.key

    yield make
    await engine.dispose()
