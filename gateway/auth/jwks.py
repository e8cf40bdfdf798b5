"""Where verifiers get public keys: the JWKS, from the database or over HTTP, cached with refetch on miss."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

import httpx
import jwt
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, as_utc, utcnow
from gateway.auth.signing_keys import ALLOWED_ALGORITHMS, StoredKey, key_schedule
from schemas.auth_tables import signing_keys

log = logging.getLogger("lotabots.auth.jwks")


class JwksSource(Protocol):
    async def fetch(self) -> list[dict[str, Any]]: ...


class DatabaseJwks:
    """Reads the published public keys straight from `signing_keys` (no private material is selected)."""

    def __init__(self, engine: AsyncEngine, token_lifetime: timedelta, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._lifetime = token_lifetime
        self._clock = clock

    async def fetch(self) -> list[dict[str, Any]]:
        cols = (signing_keys.c.kid, signing_keys.c.algorithm, signing_keys.c.public_jwk,
                signing_keys.c.created_at, signing_keys.c.activates_at)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(*cols))).all()
        keys = [StoredKey(r.kid, r.algorithm, dict(r.public_jwk), "", as_utc(r.created_at), as_utc(r.activates_at))
                for r in rows]
        return [k.public_jwk for k in key_schedule(keys, self._clock(), self._lifetime).published]


class HttpJwks:
    """Fetches `/.well-known/jwks.json` from the auth service."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self._url = url
        self._client = httpx.AsyncClient(timeout=timeout_s)

    async def fetch(self) -> list[dict[str, Any]]:
        response = await self._client.get(self._url)
        response.raise_for_status()
        keys = response.json().get("keys", [])
        return [k for k in keys if isinstance(k, dict)]

    async def aclose(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True)
class VerificationKey:
    kid: str
    algorithm: str
    key: Any


def _parse(jwk: dict[str, Any]) -> VerificationKey | None:
    """Only signing keys of an allowed algorithm, whose declared alg matches the key type, are kept."""
    if jwk.get("use", "sig") != "sig" or jwk.get("alg") not in ALLOWED_ALGORITHMS or not jwk.get("kid"):
        return None
    try:
        parsed = jwt.PyJWK(jwk)
    except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
        return None
    if parsed.algorithm_name != jwk["alg"]:
        return None
    return VerificationKey(jwk["kid"], jwk["alg"], parsed.key)


class JwksCache:
    """Public keys by `kid`, refreshed every `refresh_s`; an unknown `kid` refetches at most every
    `min_refetch_s` (so random kids cannot turn into a fetch storm). A failed fetch keeps the old keys."""

    def __init__(self, source: JwksSource, refresh_s: float, min_refetch_s: float) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._min_refetch_s = min_refetch_s
        self._keys: dict[str, VerificationKey] = {}
        self._fetched_at = -1e18
        self._healthy = False
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> VerificationKey | None:
        await self.refresh_if_due()
        found = self._keys.get(kid)
        if found is None:
            await self._refetch(self._min_refetch_s)
            found = self._keys.get(kid)
        return found

    async def refresh_if_due(self) -> None:
        if time.monotonic() - self._fetched_at >= self._refresh_s:
            await self._refetch(self._refresh_s)

    def knows(self, kid: str) -> bool:
        """Whether `kid` is among the keys fetched last (no fetch)."""
        return kid in self._keys

    async def aclose(self) -> None:
        close = getattr(self._source, "aclose", None)
        if close is not None:
            await close()

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def _refetch(self, min_age_s: float) -> None:
        async with self._lock:
            if time.monotonic() - self._fetched_at < min_age_s:
                return  # another task just fetched
            try:
                fetched = await self._source.fetch()
            except Exception as exc:  # noqa: BLE001 - keep serving with the keys we have
                log.warning("JWKS fetch failed, keeping %d cached keys: %s", len(self._keys), type(exc).__name__)
                self._healthy = False
                self._fetched_at = time.monotonic() - max(self._refresh_s - self._min_refetch_s, 0)
                return
            self._keys = {k.kid: k for k in (_parse(j) for j in fetched) if k is not None}
            self._fetched_at = time.monotonic()
            self._healthy = True
