"""`/.well-known/jwks.json`: the public keys that verify access tokens (pending, signing and retired)."""

from __future__ import annotations

from fastapi import APIRouter

from gateway.api_models import JsonWebKeySet
from gateway.auth.deps import Services
from gateway.responses import JSONBytes

router = APIRouter(tags=["keys"])


@router.get("/.well-known/jwks.json", response_model=JsonWebKeySet)
async def jwks(services: Services) -> JSONBytes:
    # Cache no longer than the publish lead, so a pending key reaches every cache before it signs.
    max_age = int(min(services.settings.auth_jwks_refresh_s, services.settings.auth_key_publish_lead_s))
    return JSONBytes(await services.key_ring.jwks(), headers={"Cache-Control": f"public, max-age={max_age}"})
