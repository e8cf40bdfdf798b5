"""Fixtures for the auth suite: every test runs on SQLite (the default) and on a real PostgreSQL.

Each test gets its own freshly migrated database: a copy of a migrated SQLite file, or a PostgreSQL
database created from a migrated template (fast), so tests never see each other's keys or lockouts.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from gateway.auth.key_sealing import new_kek
from lotabots.db import migrate
from lotabots.settings import Settings
from tests.auth.harness import AuthHarness, running_auth
from tests.services import pg_bindir

_db_counter = itertools.count()


# ---- databases --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth-sqlite") / "template.db"
    migrate(f"sqlite+aiosqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def pg_template(postgres: Any) -> str:  # `postgres` comes from tests/conftest.py (a real server)
    url = make_url(postgres.url)
    _psql(url, "DROP DATABASE IF EXISTS auth_template", "CREATE DATABASE auth_template")
    migrate(url.set(database="auth_template").render_as_string(hide_password=False))
    return url.render_as_string(hide_password=False)


def _psql(url: Any, *statements: str) -> None:
    for statement in statements:
        subprocess.run(
            [str(pg_bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", url.host, "-p", str(url.port),
             "-U", url.username, "-d", "postgres", "-c", statement],
            check=True, capture_output=True, timeout=60,
        )


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    n = next(_db_counter)
    if request.param == "sqlite":
        path = tmp_path / f"auth{n}.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite+aiosqlite:///{path}"
        return
    base = make_url(request.getfixturevalue("pg_template"))
    name = f"auth_t{n}_{os.getpid()}"
    _psql(base, f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name} TEMPLATE auth_template")
    yield base.set(database=name).render_as_string(hide_password=False)
    _psql(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# ---- the app ------------------------------------------------------------------------------------


@pytest.fixture
def make_settings(db_url: str, tmp_path: Path) -> Callable[..., Settings]:
    kek = new_kek()

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = dict(
            data_dir=tmp_path / "data", database_url=db_url, auth_bcrypt_rounds=4,
            auth_key_encryption_key=kek, auth_lockout_threshold=3, auth_lockout_window_s=600,
            auth_lockout_duration_s=300, auth_revocation_poll_s=0, auth_jwks_min_refetch_s=0,
            public_base_url="https://app.lotabots.test",
        )
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
async def auth(make_settings: Callable[..., Settings]) -> AsyncIterator[AuthHarness]:
    async with running_auth(make_settings()) as harness:
        yield harness


