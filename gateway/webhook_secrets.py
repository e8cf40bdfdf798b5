"""Signing secrets of webhook endpoints (and each tenant's secret for direct webhook URLs).

Rotation keeps the old secret signing until its overlap ends (`expires_at`), so a receiver can switch
secrets without a window where deliveries fail verification.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from gateway.webhook_signing import SecretBox, new_secret
from lotabots.ids import new_id
from schemas.webhook_tables import webhook_secrets as S


@dataclass(frozen=True)
class SecretInfo:
    """A secret's metadata as the API shows it (never the secret itself after creation)."""

    id: str
    created_at: datetime
    expires_at: datetime | None


def _owner(tenant_id: str, endpoint_id: str | None):  # type: ignore[no-untyped-def]
    return and_(S.c.tenant_id == tenant_id,
                S.c.endpoint_id.is_(None) if endpoint_id is None else S.c.endpoint_id == endpoint_id)


def _live(now: datetime):  # type: ignore[no-untyped-def]
    return or_(S.c.expires_at.is_(None), S.c.expires_at > now)


class SigningSecretStore:
    def __init__(self, engine: AsyncEngine, box: SecretBox) -> None:
        self.engine = engine
        self.box = box

    async def create(self, conn: AsyncConnection, tenant_id: str, endpoint_id: str | None) -> str:
        """Insert a new live secret (inside the caller's transaction) and return it: the only time it is shown."""
        secret_id = new_id("whs")
        secret = new_secret()
        await conn.execute(S.insert().values(
            id=secret_id, tenant_id=tenant_id, endpoint_id=endpoint_id, secret_sealed=self.box.seal(secret_id, secret),
            created_at=datetime.now(UTC), expires_at=None,
        ))
        return secret

    async def rotate(self, tenant_id: str, endpoint_id: str | None, overlap_s: float) -> tuple[str, datetime]:
        """A new secret; the current ones keep signing for `overlap_s` more seconds. Returns (secret, overlap end)."""
        now = datetime.now(UTC)
        ends = now + timedelta(seconds=overlap_s)
        async with self.engine.begin() as conn:
            await conn.execute(
                update(S).where(and_(_owner(tenant_id, endpoint_id), or_(S.c.expires_at.is_(None), S.c.expires_at > ends)))
                .values(expires_at=ends)
            )
            secret = await self.create(conn, tenant_id, endpoint_id)
        return secret, ends

    async def live(self, tenant_id: str, endpoint_id: str | None, conn: AsyncConnection | None = None) -> list[str]:
        """Every secret that signs now, newest first."""
        now = datetime.now(UTC)
        query = (select(S.c.id, S.c.secret_sealed).where(and_(_owner(tenant_id, endpoint_id), _live(now)))
                 .order_by(S.c.created_at.desc()))
        if conn is None:
            async with self.engine.connect() as own:
                rows = (await own.execute(query)).fetchall()
        else:
            rows = (await conn.execute(query)).fetchall()
        return [self.box.unseal(r.id, r.secret_sealed) for r in rows]

    async def live_for(self, conn: AsyncConnection, owners: set[tuple[str, str | None]]) -> dict[tuple[str, str | None], list[str]]:
        """Live secrets of many owners ((tenant, endpoint or None)) in one query, newest first."""
        endpoint_ids = [e for _, e in owners if e is not None]
        default_tenants = [t for t, e in owners if e is None]
        if not owners:
            return {}
        rows = (await conn.execute(
            select(S.c.id, S.c.tenant_id, S.c.endpoint_id, S.c.secret_sealed)
            .where(and_(_live(datetime.now(UTC)), or_(
                S.c.endpoint_id.in_(endpoint_ids),
                and_(S.c.endpoint_id.is_(None), S.c.tenant_id.in_(default_tenants)),
            )))
            .order_by(S.c.created_at.desc())
        )).fetchall()
        found: dict[tuple[str, str | None], list[str]] = {owner: [] for owner in owners}
        for r in rows:
            key = (r.tenant_id, r.endpoint_id)
            if key in found:
                found[key].append(self.box.unseal(r.id, r.secret_sealed))
        return found

    async def info(self, tenant_id: str, endpoint_id: str | None) -> list[SecretInfo]:
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(S.c.id, S.c.created_at, S.c.expires_at).where(and_(_owner(tenant_id, endpoint_id), _live(now)))
                .order_by(S.c.created_at.desc())
            )).fetchall()
        return [SecretInfo(r.id, r.created_at, r.expires_at) for r in rows]

    async def ensure_default(self, tenant_id: str) -> list[str]:
        """The tenant's live secrets for direct URLs, creating the first one when there is none."""
        secrets = await self.live(tenant_id, None)
        if secrets:
            return secrets
        async with self.engine.begin() as conn:
            await self.create(conn, tenant_id, None)
        return await self.live(tenant_id, None)
