"""API keys: `lbk_<lookup>_<secret>`, shown once, stored as SHA-256, verified with a short-lived cache."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.security import Principal
from lotabots.ids import new_id
from schemas.relational import api_keys, tenants

KEY_PREFIX = "lbk_"
ALL_SCOPES = ("requests:write", "requests:read", "usage:read", "billing:read", "admin")
DEFAULT_SCOPES = ("requests:write", "requests:read", "usage:read")


@dataclass(frozen=True)
class IssuedApiKey:
    """A freshly created key: the only moment the full secret exists outside the client."""

    id: str
    key: str  # the full key: returned once, never stored
    prefix: str
    tenant_id: str
    scopes: tuple[str, ...]
    name: str


@dataclass(frozen=True)
class VerifiedApiKey:
    """What a valid key grants."""

    key_id: str
    tenant_id: str
    tier: str
    scopes: frozenset[str]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    """Return (lookup prefix, secret) of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    parts = key[len(KEY_PREFIX) :].split("_", 1)
    if len(parts) != 2 or len(parts[0]) != 12 or len(parts[1]) < 32:
        return None
    return KEY_PREFIX + parts[0], parts[1]


async def create_api_key(
    engine: AsyncEngine, tenant_id: str, name: str = "", scopes: tuple[str, ...] = DEFAULT_SCOPES
) -> IssuedApiKey:
    unknown = set(scopes) - set(ALL_SCOPES)
    if unknown:
        raise ValueError(f"unknown scopes: {sorted(unknown)}")
    lookup = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{lookup}_{secrets.token_urlsafe(32)}"
    prefix = KEY_PREFIX + lookup
    key_id = new_id("key")
    async with engine.begin() as conn:
        await conn.execute(
            api_keys.insert().values(
                id=key_id, tenant_id=tenant_id, prefix=prefix, key_hash=hash_key(key), name=name,
                scopes=list(scopes), created_at=datetime.now(UTC),
            )
        )
    return IssuedApiKey(key_id, key, prefix, tenant_id, tuple(scopes), name)


@dataclass(frozen=True)
class ApiKeyInfo:
    """A key as listings show it: never the secret, never its hash."""

    id: str
    prefix: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


async def list_api_keys(engine: AsyncEngine, tenant_id: str, *, include_revoked: bool = False) -> list[ApiKeyInfo]:
    query = select(api_keys.c.id, api_keys.c.prefix, api_keys.c.name, api_keys.c.scopes, api_keys.c.created_at,
                   api_keys.c.last_used_at, api_keys.c.revoked_at).where(api_keys.c.tenant_id == tenant_id)
    if not include_revoked:
        query = query.where(api_keys.c.revoked_at.is_(None))
    async with engine.connect() as conn:
        rows = await conn.execute(query.order_by(api_keys.c.id))
        return [ApiKeyInfo(r.id, r.prefix, r.name, tuple(r.scopes), r.created_at, r.last_used_at, r.revoked_at)
                for r in rows]


async def revoke_api_key(engine: AsyncEngine, tenant_id: str, key_id: str) -> bool:
    """Revoke a key of this tenant; False if the tenant has no such live key (other tenants' keys included)."""
    async with engine.begin() as conn:
        res = await conn.execute(
            update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=datetime.now(UTC))
        )
    return res.rowcount == 1


class ApiKeyVerifier:
    """Verifies keys against the database; caches hits for `ttl_s` (revocation takes effect within it)."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 5.0) -> None:
        self._engine = engine
        self._ttl = ttl_s
        self._cache: dict[str, tuple[float, VerifiedApiKey]] = {}
        self._last_used_flushed: dict[str, float] = {}

    async def verify(self, key: str) -> VerifiedApiKey | None:
        now = time.monotonic()
        digest = hash_key(key)
        hit = self._cache.get(digest)
        if hit and hit[0] > now:
            return hit[1]
        parts = split_key(key)
        if parts is None:
            return None
        async with self._engine.connect() as conn:
            row = (
                await conn.execute(
                    select(api_keys.c.id, api_keys.c.tenant_id, api_keys.c.key_hash, api_keys.c.scopes,
                           api_keys.c.revoked_at, tenants.c.tier)
                    .join(tenants, tenants.c.id == api_keys.c.tenant_id)
                    .where(api_keys.c.prefix == parts[0])
                )
            ).first()
        if row is None or row.revoked_at is not None or not hmac.compare_digest(row.key_hash, digest):
            self._cache.pop(digest, None)
            return None
        verified = VerifiedApiKey(row.id, row.tenant_id, row.tier, frozenset(row.scopes))
        self._cache[digest] = (now + self._ttl, verified)
        await self._touch(row.id, now)
        return verified

    async def _touch(self, key_id: str, now: float) -> None:
        # last_used_at is informative: write it at most once a minute per key, off the hot path.
        if now - self._last_used_flushed.get(key_id, -1e9) < 60:
            return
        self._last_used_flushed[key_id] = now
        async with self._engine.begin() as conn:
            await conn.execute(update(api_keys).where(api_keys.c.id == key_id).values(last_used_at=datetime.now(UTC)))

    async def __call__(self, credential: str) -> Principal | None:
        """The `CredentialVerifier` form: a Principal for a valid `lbk_` key, None for anything else."""
        if not credential.startswith(KEY_PREFIX):
            return None
        key = await self.verify(credential)
        if key is None:
            return None
        return Principal(key.tenant_id, key.tier, key.scopes, key.key_id, "api_key")

    def forget(self) -> None:
        self._cache.clear()
