"""The `mail_sent` ledger on SQLite (the single-machine default; the integration tests use PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

from consumers.mail_store import Claim, MailKey, MailStore
from lotabots.db import make_engine, migrate


async def test_claim_mark_and_in_doubt(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)
    try:
        store = MailStore(engine)
        keys = [MailKey(f"aev_{i}", "user_invited", f"<aev_{i}@x>") for i in range(3)]
        assert await store.claim([*keys, keys[0]]) == dict.fromkeys(("aev_0", "aev_1", "aev_2"), Claim.NEW)
        await store.mark_sent("aev_0")
        await store.mark_failed("aev_1", "smtp_rejected: 550")
        await store.note_error("aev_2", "SMTPConnectError")
        again = await store.claim(keys)
        assert again == {"aev_0": Claim.DONE, "aev_1": Claim.DONE, "aev_2": Claim.IN_DOUBT}
        assert (await store.status("aev_0"), await store.status("aev_1"), await store.status("aev_2")) == \
            ("sent", "failed", "sending")
        await store.mark_sent("aev_1")  # a failed mail stays failed
        assert await store.status("aev_1") == "failed"
    finally:
        await engine.dispose()


async def test_mailer_migration_matches_the_model_and_downgrades(tmp_path: Path) -> None:
    import asyncio

    from alembic import command
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import inspect

    from schemas.mail_tables import mail_sent

    url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    engine = make_engine(url)

    def diff(conn):  # type: ignore[no-untyped-def]
        ctx = MigrationContext.configure(conn)
        return [d for d in compare_metadata(ctx, mail_sent.metadata) if "mail_sent" in repr(d)]

    async def tables() -> set[str]:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))

    try:
        async with engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        await asyncio.to_thread(command.downgrade, _cfg(url), "0004_autonomy")
        assert "mail_sent" not in await tables()
        await asyncio.to_thread(migrate, url)
        assert "mail_sent" in await tables()
    finally:
        await engine.dispose()


def _cfg(url: str):  # type: ignore[no-untyped-def]
    from lotabots.db import alembic_config

    return alembic_config(url)
