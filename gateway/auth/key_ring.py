"""The auth service's cached view of the signing keys: which one signs now, and the JWKS to publish."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gateway.auth.clock import Clock, utcnow
from gateway.auth.key_rotation import token_lifetime
from gateway.auth.signing_keys import KeySchedule, PrivateKey, SigningKeyStore, key_schedule
from lotabots.settings import Settings


@dataclass(frozen=True)
class ActiveSigningKey:
    kid: str
    algorithm: str
    private_key: PrivateKey


class SigningKeyRing:
    """Reloads keys from the store every `auth_key_reload_s` and whenever a pending key's time has come,
    so a key added by `lotabots auth rotate-keys` in another process is picked up without a restart."""

    def __init__(self, store: SigningKeyStore, settings: Settings, clock: Clock = utcnow) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._schedule: KeySchedule | None = None
        self._active: ActiveSigningKey | None = None
        self._loaded_at = -1e18
        self._next_activation: datetime | None = None
        self._lock = asyncio.Lock()

    async def signing_key(self) -> ActiveSigningKey:
        await self._refresh_if_due()
        if self._active is None:
            raise RuntimeError("no signing key is active: run `lotabots auth rotate-keys --lead-seconds 0`")
        return self._active

    async def jwks(self) -> dict[str, Any]:
        await self._refresh_if_due()
        assert self._schedule is not None
        return {"keys": [k.public_jwk for k in self._schedule.published]}

    async def reload(self) -> None:
        async with self._lock:
            await self._load()

    async def _refresh_if_due(self) -> None:
        if not self._due():
            return
        async with self._lock:
            if self._due():
                await self._load()

    def _due(self) -> bool:
        if self._schedule is None or time.monotonic() - self._loaded_at >= self._settings.auth_key_reload_s:
            return True
        return self._next_activation is not None and self._clock() >= self._next_activation

    async def _load(self) -> None:
        now = self._clock()
        schedule = key_schedule(await self._store.load(), now, token_lifetime(self._settings))
        signing = schedule.signing
        if signing is not None and (self._active is None or self._active.kid != signing.kid):
            self._active = ActiveSigningKey(signing.kid, signing.algorithm, self._store.private_key(signing))
        self._schedule = schedule
        pending = [k.activates_at for k in schedule.published if k.activates_at > now]
        self._next_activation = min(pending, default=None)
        self._loaded_at = time.monotonic()

    async def fetch(self) -> list[dict[str, Any]]:
        """`JwksSource` form, so the auth service verifies its own tokens without a network hop."""
        return list((await self.jwks())["keys"])
