"""A stopped PostgreSQL is a 503 `database_unavailable` with Retry-After, never a 500; a constraint
violation is not mistaken for an outage. Real server: the test starts its own and stops it."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from gateway.errors import database_unavailable, install_error_handlers
from lotabots.db import make_engine
from tests.services import start_postgres

pytestmark = pytest.mark.integration


@pytest.fixture
async def app_on_own_postgres(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, int]]:
    pg = start_postgres(tmp_path)
    assert pg.pid is not None
    engine = make_engine(pg.url)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/one")
    async def one() -> dict:
        async with engine.connect() as conn:
            return {"one": (await conn.execute(text("SELECT 1"))).scalar_one()}

    @app.get("/duplicate")
    async def duplicate() -> dict:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TEMP TABLE t (id int PRIMARY KEY)"))
            await conn.execute(text("INSERT INTO t VALUES (1), (1)"))
        return {}

    @app.get("/nul")
    async def nul() -> dict:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TEMP TABLE n (s text)"))
            await conn.execute(text("INSERT INTO n VALUES (:s)"), {"s": "a\x00b"})
        return {}

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        try:
            yield client, pg
        finally:
            await engine.dispose()
            pg.stop()


async def test_a_stopped_database_answers_503_with_retry_after(app_on_own_postgres) -> None:  # type: ignore[no-untyped-def]
    client, pg = app_on_own_postgres
    assert (await client.get("/one")).json() == {"one": 1}  # the pool now holds a live connection
    lock = pg.workdir / "data" / "postmaster.pid"
    assert lock.exists()
    os.kill(pg.pid, signal.SIGINT)  # fast shutdown: the server closes every connection and exits
    deadline = time.monotonic() + 60
    while lock.exists():  # the server removes it as the very last step of its shutdown
        assert time.monotonic() < deadline, "PostgreSQL did not shut down"
        await asyncio.sleep(0.1)
    # first the pooled connection that the server closed, then a new connection that is refused
    for _ in range(2):
        r = await client.get("/one")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "database_unavailable"
        assert r.headers["retry-after"] == "1"


async def test_a_constraint_violation_is_not_an_outage(app_on_own_postgres) -> None:  # type: ignore[no-untyped-def]
    client, _ = app_on_own_postgres
    r = await client.get("/duplicate")
    assert r.status_code == 500  # a bug in the caller, not a reason to tell clients to retry


async def test_text_postgresql_cannot_hold_is_a_422_not_a_500(app_on_own_postgres) -> None:  # type: ignore[no-untyped-def]
    client, _ = app_on_own_postgres
    r = await client.get("/nul")
    assert (r.status_code, r.json()["error"]["code"]) == (422, "invalid_text")


def test_only_database_frames_make_a_connection_error_the_databases() -> None:
    assert not database_unavailable(ConnectionRefusedError("webhook target refused"))
    assert not database_unavailable(ValueError("x"))


def test_a_server_that_is_shutting_down_or_starting_is_unavailable() -> None:
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    for cause in (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
                  asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command")):
        orig = RuntimeError("translated")
        orig.__cause__ = cause
        assert database_unavailable(DBAPIError("connect", None, orig))
    orig = RuntimeError("translated")
    orig.__cause__ = asyncpg.exceptions.UniqueViolationError("duplicate key")
    assert not database_unavailable(DBAPIError("insert", None, orig))
