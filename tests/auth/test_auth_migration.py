"""Migration 0002_auth runs down and up again on SQLite and PostgreSQL alike."""

from __future__ import annotations

import asyncio

from alembic import command
from sqlalchemy import inspect

from lotabots.db import alembic_config, make_engine, migrate

AUTH_TABLES = {"users", "auth_sessions", "refresh_tokens", "one_time_tokens", "signing_keys", "login_throttle"}


async def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    finally:
        await engine.dispose()


async def test_auth_migration_downgrades_and_upgrades_again(db_url: str) -> None:
    assert AUTH_TABLES <= await _tables(db_url)
    await asyncio.to_thread(command.downgrade, alembic_config(db_url), "0001_spine")
    remaining = await _tables(db_url)
    assert not AUTH_TABLES & remaining and "tenants" in remaining
    await asyncio.to_thread(migrate, db_url)
    assert AUTH_TABLES <= await _tables(db_url)
