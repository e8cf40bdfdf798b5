"""Access-token signing keys: stored sealed in the database, published as JWKs, rotated without a gap.

Schedule (computed from `activates_at` alone, so every process agrees on it):
- a key is *pending* until `activates_at`: already published in the JWKS, not yet signing;
- the newest key whose `activates_at` has passed *signs*;
- an older key is *retired*: still published until every token it signed has expired (its successor's
  `activates_at` + access-token TTL + clock leeway), then pruned.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.clock import Clock, as_utc, utcnow
from gateway.auth.key_sealing import KeySealer
from lotabots.ids import new_id
from schemas.auth_tables import signing_keys

ALLOWED_ALGORITHMS = frozenset({"EdDSA", "ES256"})
PrivateKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class StoredKey:
    kid: str
    algorithm: str
    public_jwk: dict[str, Any]
    private_key_sealed: str
    created_at: datetime
    activates_at: datetime


@dataclass(frozen=True)
class KeySchedule:
    """Where each stored key stands at one instant."""

    signing: StoredKey | None
    published: list[StoredKey]
    expired: list[StoredKey]


def key_schedule(keys: list[StoredKey], now: datetime, token_lifetime: timedelta) -> KeySchedule:
    ordered = sorted(keys, key=lambda k: (k.activates_at, k.kid))
    active = [k for k in ordered if k.activates_at <= now]
    signing = active[-1] if active else None
    published: list[StoredKey] = []
    expired: list[StoredKey] = []
    for i, key in enumerate(ordered):
        if key.activates_at > now or key is signing:
            published.append(key)
            continue
        successor = ordered[i + 1]  # exists and is active: `key` is active but not the newest active
        (published if now < successor.activates_at + token_lifetime else expired).append(key)
    return KeySchedule(signing, published, expired)


def generate_private_key(algorithm: str) -> PrivateKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported signing algorithm {algorithm!r}; allowed: {sorted(ALLOWED_ALGORITHMS)}")


def public_jwk(kid: str, algorithm: str, private_key: PrivateKey) -> dict[str, Any]:
    public = private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    return {**jwk, "kid": kid, "alg": algorithm, "use": "sig"}


class SigningKeyStore:
    """Reads and writes the `signing_keys` table; unseals private keys on demand."""

    def __init__(self, engine: AsyncEngine, sealer: KeySealer, clock: Clock = utcnow) -> None:
        self._engine = engine
        self._sealer = sealer
        self._clock = clock

    async def load(self) -> list[StoredKey]:
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(signing_keys))).all()
        return [
            StoredKey(r.kid, r.algorithm, dict(r.public_jwk), r.private_key_sealed, as_utc(r.created_at),
                      as_utc(r.activates_at))
            for r in rows
        ]

    async def add(self, algorithm: str, activates_at: datetime) -> StoredKey:
        private_key = generate_private_key(algorithm)
        kid = new_id("sk")
        pem = private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key = StoredKey(kid, algorithm, public_jwk(kid, algorithm, private_key), self._sealer.seal(kid, pem),
                        self._clock(), activates_at)
        async with self._engine.begin() as conn:
            await conn.execute(signing_keys.insert().values(
                kid=key.kid, algorithm=key.algorithm, public_jwk=key.public_jwk,
                private_key_sealed=key.private_key_sealed, created_at=key.created_at, activates_at=activates_at,
            ))
        return key

    async def delete(self, kids: list[str]) -> None:
        if kids:
            async with self._engine.begin() as conn:
                await conn.execute(delete(signing_keys).where(signing_keys.c.kid.in_(kids)))

    def private_key(self, key: StoredKey) -> PrivateKey:
        loaded = serialization.load_pem_private_key(self._sealer.unseal(key.kid, key.private_key_sealed), None)
        assert isinstance(loaded, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey)
        return loaded
