"""Alembic environment: runs migrations over the async engine named by the settings' DATABASE_URL."""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

import schemas.auth_tables  # noqa: F401  (registers the auth tables on Base.metadata)
import schemas.autonomy_tables  # noqa: F401  (registers the autonomy tables on Base.metadata)
import schemas.mail_tables  # noqa: F401  (registers the mailer ledger on Base.metadata)
import schemas.webhook_tables  # noqa: F401  (registers the webhook tables on Base.metadata)
from schemas.relational import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _main(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(_run)
        await conn.commit()
    await engine.dispose()


url = config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_main(url))
