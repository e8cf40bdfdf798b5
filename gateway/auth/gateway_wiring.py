"""What the gateway process needs from auth: a local, cheap verifier for access tokens."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.access_tokens import AccessTokenVerifier
from gateway.auth.jwks import DatabaseJwks, HttpJwks, JwksCache, JwksSource
from gateway.auth.key_rotation import token_lifetime
from gateway.auth.revocations import PolledSessionRevocations
from gateway.auth.tenant_tiers import TenantTierCache
from lotabots.settings import Settings


def gateway_token_verifier(settings: Settings, engine: AsyncEngine, *, cache_size: int = 10_000) -> AccessTokenVerifier:
    """JWKS from `auth_jwks_url` (HTTP) or straight from the database; revocations polled every few seconds."""
    lifetime = token_lifetime(settings)
    source: JwksSource = HttpJwks(settings.auth_jwks_url) if settings.auth_jwks_url else DatabaseJwks(engine, lifetime)
    return AccessTokenVerifier(
        JwksCache(source, settings.auth_jwks_refresh_s, settings.auth_jwks_min_refetch_s),
        PolledSessionRevocations(engine, settings.auth_revocation_poll_s, lifetime),
        TenantTierCache(engine),
        issuer=settings.auth_issuer, audience=settings.auth_audience, leeway_s=settings.auth_clock_leeway_s,
        cache_size=cache_size,
    )
