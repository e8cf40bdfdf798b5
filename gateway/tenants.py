"""Tenants: creation (with a first API key) and tier changes."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.api_keys import ALL_SCOPES, IssuedApiKey, create_api_key
from lotabots.ids import new_id
from lotabots.tiers import TierConfig
from schemas.relational import tenants


class UnknownTier(ValueError):
    pass


async def create_tenant(
    engine: AsyncEngine, tier_config: TierConfig, name: str, tier: str, scopes: tuple[str, ...] = ALL_SCOPES
) -> tuple[str, IssuedApiKey]:
    """Create a tenant on `tier` and its first API key (returned once)."""
    if tier not in tier_config.tiers:
        raise UnknownTier(f"unknown tier {tier!r}; known: {tier_config.names}")
    tenant_id = new_id("ten")
    async with engine.begin() as conn:
        await conn.execute(tenants.insert().values(id=tenant_id, name=name, tier=tier, created_at=datetime.now(UTC)))
    key = await create_api_key(engine, tenant_id, name="initial", scopes=scopes)
    return tenant_id, key


async def set_tenant_tier(engine: AsyncEngine, tier_config: TierConfig, tenant_id: str, tier: str) -> bool:
    if tier not in tier_config.tiers:
        raise UnknownTier(f"unknown tier {tier!r}; known: {tier_config.names}")
    async with engine.begin() as conn:
        res = await conn.execute(update(tenants).where(tenants.c.id == tenant_id).values(tier=tier))
    return res.rowcount == 1


async def get_tenant_tier(engine: AsyncEngine, tenant_id: str) -> str | None:
    async with engine.connect() as conn:
        return (await conn.execute(select(tenants.c.tier).where(tenants.c.id == tenant_id))).scalar()
