"""Failed-login throttling per account and per client address, with a lockout that ends on its own.

Counters live in the database (`login_throttle`), so every auth replica enforces the same limits. The
account key is a digest of the normalised email whether or not such an account exists, so lockouts behave
the same for unknown and known emails. Each failure increments atomically (UPDATE ... RETURNING).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, as_utc, utcnow
from schemas.auth_tables import login_throttle as T


def account_key(email: str) -> str:
    return "acct:" + hashlib.sha256(email.encode()).hexdigest()


def address_key(address: str) -> str:
    return "addr:" + address[:64]


class LoginThrottle:
    """Counts failures in a fixed window; reaching the threshold locks the key for `lockout_s`."""

    def __init__(self, engine: AsyncEngine, *, window_s: int, lockout_s: int, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._window = timedelta(seconds=window_s)
        self._lockout = timedelta(seconds=lockout_s)
        self._clock = clock

    async def retry_after(self, keys: list[str]) -> int | None:
        """Seconds until every key in `keys` is unlocked, or None if none is locked."""
        now = self._clock()
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(T.c.locked_until).where(T.c.key.in_(keys), T.c.locked_until > now))
            until = [as_utc(r.locked_until) for r in rows]
        return self._seconds(max(until) - now) if until else None

    async def record_failure(self, key: str, threshold: int) -> int | None:
        """Count one failure; returns the lockout in seconds if this failure reached the threshold."""
        now = self._clock()
        fresh = T.c.window_started_at < now - self._window
        async with self._engine.begin() as conn:
            await conn.execute(self._insert_missing(conn.dialect.name, key, now))
            failures = (await conn.execute(
                update(T).where(T.c.key == key)
                .values(failures=case((fresh, 1), else_=T.c.failures + 1),
                        window_started_at=case((fresh, now), else_=T.c.window_started_at))
                .returning(T.c.failures)
            )).scalar_one()
            if failures < threshold:
                return None
            await conn.execute(update(T).where(T.c.key == key)
                               .values(failures=0, window_started_at=now, locked_until=now + self._lockout))
        return self._seconds(self._lockout)

    async def clear(self, key: str) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(delete(T).where(T.c.key == key))

    @staticmethod
    def _insert_missing(dialect: str, key: str, now: datetime):  # type: ignore[no-untyped-def]
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        return insert(T).values(key=key, failures=0, window_started_at=now).on_conflict_do_nothing()

    @staticmethod
    def _seconds(delta: timedelta) -> int:
        return max(1, math.ceil(delta.total_seconds()))
