"""Login sessions and their refresh-token families.

Every refresh rotates the token. Presenting a token that was already rotated means it leaked (or a client
raced itself): the whole family — the session and every token descended from the reused one — is revoked,
as Keycloak and GoTrue do. The used-check is a conditional UPDATE, so two concurrent uses cannot both win.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, as_utc, utcnow
from gateway.auth.opaque_tokens import REFRESH_TOKEN_PREFIX, new_opaque_token, token_digest
from lotabots.ids import new_id
from schemas.auth_tables import auth_sessions as S
from schemas.auth_tables import refresh_tokens as RT


@dataclass(frozen=True)
class IssuedRefresh:
    session_id: str
    user_id: str
    refresh_token: str  # shown to the client once; only its digest is stored
    expires_at: datetime


class RefreshRefused(Exception):
    """The refresh token is unknown, expired or from a revoked session."""


class RefreshReused(Exception):
    """An already-rotated refresh token came back; its session has been revoked."""

    def __init__(self, session_id: str, user_id: str) -> None:
        super().__init__("refresh token reused")
        self.session_id = session_id
        self.user_id = user_id


class SessionStore:
    """Creates, rotates and revokes login sessions."""

    def __init__(self, engine: AsyncEngine, *, refresh_ttl_s: int, session_max_age_s: int,
                 clock: Clock = utcnow) -> None:
        self._engine = engine
        self._refresh_ttl = timedelta(seconds=refresh_ttl_s)
        self._max_age = timedelta(seconds=session_max_age_s)
        self._clock = clock

    async def start(self, user_id: str, tenant_id: str, client_address: str | None) -> IssuedRefresh:
        now = self._clock()
        session_id = new_id("ses")
        session_expires = now + self._max_age
        async with self._engine.begin() as conn:
            await conn.execute(S.insert().values(
                id=session_id, user_id=user_id, tenant_id=tenant_id, created_at=now, expires_at=session_expires,
                last_used_at=now, client_address=(client_address or "")[:64] or None,
            ))
            token, expires = await self._insert_token(conn, session_id, None, now, session_expires)
        return IssuedRefresh(session_id, user_id, token, expires)

    async def rotate(self, refresh_token: str) -> IssuedRefresh:
        """Spend `refresh_token` and hand out its successor. Raises RefreshRefused or RefreshReused."""
        now = self._clock()
        async with self._engine.begin() as conn:
            row = (await conn.execute(
                select(RT.c.id, RT.c.session_id, RT.c.used_at, RT.c.expires_at, S.c.user_id, S.c.revoked_at,
                       S.c.expires_at.label("session_expires_at"))
                .join(S, S.c.id == RT.c.session_id)
                .where(RT.c.token_hash == token_digest(refresh_token))
            )).first()
            if row is None or row.revoked_at is not None:
                raise RefreshRefused
            reused = row.used_at is not None
            if not reused:
                if as_utc(row.expires_at) <= now or as_utc(row.session_expires_at) <= now:
                    raise RefreshRefused
                spent = await conn.execute(
                    update(RT).where(RT.c.id == row.id, RT.c.used_at.is_(None)).values(used_at=now)
                )
                reused = spent.rowcount != 1
            if not reused:
                token, expires = await self._insert_token(
                    conn, row.session_id, row.id, now, as_utc(row.session_expires_at)
                )
                await conn.execute(update(S).where(S.c.id == row.session_id).values(last_used_at=now))
                return IssuedRefresh(row.session_id, row.user_id, token, expires)
        await self.revoke(row.session_id, "refresh_token_reused")
        raise RefreshReused(row.session_id, row.user_id)

    async def revoke(self, session_id: str, reason: str) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(
                update(S).where(S.c.id == session_id, S.c.revoked_at.is_(None))
                .values(revoked_at=self._clock(), revoked_reason=reason)
            )
        return res.rowcount == 1

    async def revoke_user_sessions(self, user_id: str, reason: str, *, keep: str | None = None) -> int:
        """Revoke every live session of a user (except `keep`); returns how many."""
        where = [S.c.user_id == user_id, S.c.revoked_at.is_(None)]
        if keep is not None:
            where.append(S.c.id != keep)
        async with self._engine.begin() as conn:
            res = await conn.execute(update(S).where(*where).values(revoked_at=self._clock(), revoked_reason=reason))
        return res.rowcount

    async def _insert_token(self, conn, session_id: str, parent_id: str | None, now: datetime,  # type: ignore[no-untyped-def]
                            session_expires: datetime) -> tuple[str, datetime]:
        token = new_opaque_token(REFRESH_TOKEN_PREFIX)
        expires = min(now + self._refresh_ttl, session_expires)
        await conn.execute(RT.insert().values(
            id=new_id("rt"), session_id=session_id, parent_id=parent_id, token_hash=token_digest(token),
            created_at=now, expires_at=expires,
        ))
        return token, expires
