"""Rotation of signing keys: add a key that is published before it signs, prune keys nobody can need."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from gateway.auth.signing_keys import SigningKeyStore, key_schedule
from lotabots.settings import Settings


def token_lifetime(settings: Settings) -> timedelta:
    """How long after a key stops signing a token it signed may still be presented."""
    return timedelta(seconds=settings.auth_access_token_ttl_s + settings.auth_clock_leeway_s)


@dataclass(frozen=True)
class RotationResult:
    kid: str
    algorithm: str
    activates_at: datetime
    pruned: list[str]


async def rotate_keys(
    store: SigningKeyStore, settings: Settings, now: datetime, *, lead_s: int | None = None,
    algorithm: str | None = None,
) -> RotationResult:
    """Add a signing key that starts signing `lead_s` from now (default: the configured publish lead).

    The lead should exceed how long verifiers cache the JWKS, so every verifier knows the key before the
    first token it signs arrives (an unknown `kid` also triggers a refetch, as a safety net).
    """
    lead = settings.auth_key_publish_lead_s if lead_s is None else lead_s
    key = await store.add(algorithm or settings.auth_jwt_algorithm, now + timedelta(seconds=lead))
    pruned = await prune_keys(store, settings, now)
    return RotationResult(key.kid, key.algorithm, key.activates_at, pruned)


async def prune_keys(store: SigningKeyStore, settings: Settings, now: datetime) -> list[str]:
    schedule = key_schedule(await store.load(), now, token_lifetime(settings))
    kids = [k.kid for k in schedule.expired]
    await store.delete(kids)
    return kids


async def ensure_signing_key(store: SigningKeyStore, settings: Settings, now: datetime) -> None:
    """First start: with no key able to sign yet, add one that signs at once (nobody holds tokens yet)."""
    if key_schedule(await store.load(), now, token_lifetime(settings)).signing is None:
        await store.add(settings.auth_jwt_algorithm, now)
