"""Is the login session behind an access token revoked? (logout, logout-all, password change, refresh reuse)"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, utcnow
from schemas.auth_tables import auth_sessions


class SessionRevocations(Protocol):
    async def is_revoked(self, session_id: str) -> bool: ...


class PolledSessionRevocations:
    """The gateway's view: the set of sessions revoked within one token lifetime, reloaded every `poll_s`.

    Keeps verification a set lookup; a revocation reaches this process within `poll_s`. Older revocations
    need not be listed: every access token of such a session has expired anyway.
    """

    def __init__(self, engine: AsyncEngine, poll_s: float, token_lifetime: timedelta, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._poll_s = poll_s
        self._horizon = token_lifetime
        self._clock = clock
        self._revoked: frozenset[str] = frozenset()
        self._loaded_at = -1e18
        self._lock = asyncio.Lock()

    async def is_revoked(self, session_id: str) -> bool:
        if time.monotonic() - self._loaded_at >= self._poll_s:
            await self.reload(min_age_s=self._poll_s)
        return session_id in self._revoked

    async def reload(self, min_age_s: float = 0.0) -> None:
        async with self._lock:
            if min_age_s and time.monotonic() - self._loaded_at < min_age_s:
                return
            since = self._clock() - self._horizon
            async with self._engine.connect() as conn:
                rows = await conn.execute(select(auth_sessions.c.id).where(auth_sessions.c.revoked_at > since))
                self._revoked = frozenset(r.id for r in rows)
            self._loaded_at = time.monotonic()


class LiveSessionRevocations:
    """The auth service's view: one primary-key read per call, so its own endpoints see revocations at once."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def is_revoked(self, session_id: str) -> bool:
        async with self._engine.connect() as conn:
            row = (await conn.execute(
                select(auth_sessions.c.revoked_at).where(auth_sessions.c.id == session_id)
            )).first()
        return row is None or row.revoked_at is not None
