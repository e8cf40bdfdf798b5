"""Single-use, expiring tokens that prove control of a mailbox: verify email, reset password, accept invite."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, as_utc, utcnow
from gateway.auth.opaque_tokens import ONE_TIME_TOKEN_PREFIX, new_opaque_token, token_digest
from lotabots.ids import new_id
from schemas.auth_tables import one_time_tokens as OTT


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"
    INVITATION = "invitation"


@dataclass(frozen=True)
class IssuedOneTimeToken:
    token: str
    expires_at: datetime


class OneTimeTokens:
    """Issues tokens (stored as SHA-256) and redeems each at most once before it expires."""

    def __init__(self, engine: AsyncEngine, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._clock = clock

    async def issue(self, user_id: str, purpose: TokenPurpose, ttl_s: int) -> IssuedOneTimeToken:
        now = self._clock()
        token = new_opaque_token(ONE_TIME_TOKEN_PREFIX)
        expires = now + timedelta(seconds=ttl_s)
        async with self._engine.begin() as conn:
            # A new token of the same purpose supersedes older ones: only the latest link works.
            await conn.execute(update(OTT).where(OTT.c.user_id == user_id, OTT.c.purpose == purpose.value,
                                                 OTT.c.used_at.is_(None)).values(used_at=now))
            await conn.execute(OTT.insert().values(
                id=new_id("ott"), user_id=user_id, purpose=purpose.value, token_hash=token_digest(token),
                created_at=now, expires_at=expires,
            ))
        return IssuedOneTimeToken(token, expires)

    async def peek(self, token: str, purposes: set[TokenPurpose]) -> str | None:
        """The user id a live token belongs to, without spending it."""
        row = await self._live(token, purposes)
        return row.user_id if row is not None else None

    async def redeem(self, token: str, purposes: set[TokenPurpose]) -> tuple[str, TokenPurpose] | None:
        """Spend the token; (user id, purpose) if it was live, None if unknown, used or expired."""
        row = await self._live(token, purposes)
        if row is None:
            return None
        async with self._engine.begin() as conn:
            res = await conn.execute(update(OTT).where(OTT.c.id == row.id, OTT.c.used_at.is_(None))
                                     .values(used_at=self._clock()))
        return (row.user_id, TokenPurpose(row.purpose)) if res.rowcount == 1 else None

    async def _live(self, token: str, purposes: set[TokenPurpose]):  # type: ignore[no-untyped-def]
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(OTT).where(OTT.c.token_hash == token_digest(token)))).first()
        if row is None or row.used_at is not None or as_utc(row.expires_at) <= self._clock():
            return None
        return row if TokenPurpose(row.purpose) in purposes else None
