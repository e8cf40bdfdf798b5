"""`/v1/admin/tenants`: platform operators change a tenant's tier (scope `platform:admin`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from sqlalchemy import select

from gateway.api_models import TenantResource
from gateway.auth.deps import Services
from gateway.auth.models import TierBody
from gateway.auth.roles import PLATFORM_ADMIN_SCOPE
from gateway.errors import ApiError
from gateway.openapi_docs import errors
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope
from gateway.tenants import UnknownTier, set_tenant_tier
from schemas.relational import tenants

router = APIRouter(prefix="/v1/admin/tenants", tags=["platform-admin"])
Operator = Annotated[Principal, Depends(require_scope(PLATFORM_ADMIN_SCOPE))]


async def _tenant(services: Services, tenant_id: str) -> dict[str, Any]:
    async with services.engine.connect() as conn:
        row = (await conn.execute(select(tenants).where(tenants.c.id == tenant_id))).first()
    if row is None:
        raise ApiError(404, "tenant_not_found", "no such tenant")
    return {"id": row.id, "name": row.name, "tier": row.tier, "created_at": row.created_at}


@router.get("/{tenant_id}", response_model=TenantResource)
async def get_tenant(tenant_id: str, services: Services, who: Operator) -> JSONBytes:
    return JSONBytes(await _tenant(services, tenant_id))


@router.put("/{tenant_id}/tier", response_model=TenantResource,
            responses=errors(422, e422="invalid body or an unknown tier (`unknown_tier`)"))
async def set_tier(tenant_id: str, body: TierBody, services: Services, who: Operator) -> JSONBytes:
    try:
        changed = await set_tenant_tier(services.engine, services.tier_config, tenant_id, body.tier)
    except UnknownTier:
        raise ApiError(422, "unknown_tier", f"unknown tier {body.tier!r}", tiers=services.tier_config.names) from None
    if not changed:
        raise ApiError(404, "tenant_not_found", "no such tenant")
    services.tenant_tiers.forget(tenant_id)
    return JSONBytes(await _tenant(services, tenant_id))
