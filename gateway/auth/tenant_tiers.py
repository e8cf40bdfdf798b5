"""Tenant tier lookups for token principals: the tier lives on the tenant (not in the token), cached briefly
so a tier change applies within `ttl_s` without a database read per request."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.relational import tenants


class TenantTierCache:
    """tenant id -> tier, with a short TTL; `forget` applies a local tier change at once."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, str | None]] = {}

    async def tier(self, tenant_id: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(tenant_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        async with self._engine.connect() as conn:
            tier = (await conn.execute(select(tenants.c.tier).where(tenants.c.id == tenant_id))).scalar()
        self._cache[tenant_id] = (now + self._ttl, tier)
        return tier

    def forget(self, tenant_id: str | None = None) -> None:
        if tenant_id is None:
            self._cache.clear()
        else:
            self._cache.pop(tenant_id, None)
