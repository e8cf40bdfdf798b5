"""Assembles the auth service's parts around one engine and one event sink."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.api_keys import ApiKeyVerifier
from gateway.auth.access_tokens import AccessTokenVerifier
from gateway.auth.clock import Clock, utcnow
from gateway.auth.events import AuthEventPublisher, AuthEventSink
from gateway.auth.jwks import JwksCache
from gateway.auth.key_ring import SigningKeyRing
from gateway.auth.key_rotation import ensure_signing_key
from gateway.auth.key_sealing import KeySealer, load_kek
from gateway.auth.login_service import LoginService
from gateway.auth.one_time_tokens import OneTimeTokens
from gateway.auth.password_service import PasswordService
from gateway.auth.passwords import PasswordHasher
from gateway.auth.registration import RegistrationService
from gateway.auth.revocations import LiveSessionRevocations
from gateway.auth.sessions import SessionStore
from gateway.auth.signing_keys import SigningKeyStore
from gateway.auth.tenant_tiers import TenantTierCache
from gateway.auth.throttle import LoginThrottle
from gateway.auth.token_issuer import AccessTokenIssuer
from gateway.auth.user_admin import UserAdminService
from gateway.auth.user_store import UserStore
from gateway.security import CredentialVerifier
from lotabots.settings import Settings
from lotabots.tiers import TierConfig, get_tier_config


@dataclass
class AuthServices:
    """Everything the auth routers call, built once per process."""

    settings: Settings
    engine: AsyncEngine
    tier_config: TierConfig
    hasher: PasswordHasher
    key_ring: SigningKeyRing
    registration: RegistrationService
    login: LoginService
    passwords: PasswordService
    user_admin: UserAdminService
    api_keys: ApiKeyVerifier
    tenant_tiers: TenantTierCache
    verifiers: list[CredentialVerifier]

    def close(self) -> None:
        self.hasher.close()


async def build_auth_services(
    settings: Settings, engine: AsyncEngine, sink: AuthEventSink, *, clock: Clock = utcnow,
    tier_config: TierConfig | None = None,
) -> AuthServices:
    tier_config = tier_config or get_tier_config()
    if settings.auth_default_tier not in tier_config.tiers:
        raise ValueError(f"auth_default_tier {settings.auth_default_tier!r} is not a tier: {tier_config.names}")
    key_store = SigningKeyStore(engine, KeySealer(load_kek(settings)), clock)
    await ensure_signing_key(key_store, settings, clock())
    ring = SigningKeyRing(key_store, settings, clock)
    await ring.reload()

    users = UserStore(engine)
    hasher = PasswordHasher(settings.auth_bcrypt_rounds, settings.auth_hash_workers)
    sessions = SessionStore(engine, refresh_ttl_s=settings.auth_refresh_token_ttl_s,
                            session_max_age_s=settings.auth_session_max_age_s, clock=clock)
    throttle = LoginThrottle(engine, window_s=settings.auth_lockout_window_s,
                             lockout_s=settings.auth_lockout_duration_s, clock=clock)
    tokens = OneTimeTokens(engine, clock)
    events = AuthEventPublisher(sink, settings, clock)
    issuer = AccessTokenIssuer(ring, settings)
    tenant_tiers = TenantTierCache(engine)
    api_keys = ApiKeyVerifier(engine)
    access_tokens = AccessTokenVerifier(
        JwksCache(ring, refresh_s=settings.auth_key_reload_s or 1.0, min_refetch_s=0.0),
        LiveSessionRevocations(engine), tenant_tiers,
        issuer=settings.auth_issuer, audience=settings.auth_audience, leeway_s=settings.auth_clock_leeway_s,
    )
    return AuthServices(
        settings=settings, engine=engine, tier_config=tier_config, hasher=hasher, key_ring=ring,
        registration=RegistrationService(settings, users, hasher, tokens, events, throttle, clock),
        login=LoginService(settings, users, hasher, sessions, issuer, throttle, events),
        passwords=PasswordService(settings, users, hasher, sessions, tokens, throttle, events, clock),
        user_admin=UserAdminService(settings, users, sessions, tokens, events, clock),
        api_keys=api_keys, tenant_tiers=tenant_tiers, verifiers=[api_keys, access_tokens],
    )
