"""Verifies access tokens locally (the gateway's hot path): allow-listed algorithms, cached JWKS, and the
RFC 9068 checks (`typ` at+jwt, `iss`, `aud`, `exp`, `nbf`, `iat`), then session revocation and the tenant tier."""

from __future__ import annotations

import binascii
import time
from collections import OrderedDict
from typing import Any

import jwt

from gateway.auth.jwks import JwksCache
from gateway.auth.revocations import SessionRevocations
from gateway.auth.signing_keys import ALLOWED_ALGORITHMS
from gateway.auth.tenant_tiers import TenantTierCache
from gateway.errors import ApiError
from gateway.security import Principal, unauthenticated

_ACCEPTED_TYP = frozenset({"at+jwt", "application/at+jwt"})
_REQUIRED_CLAIMS = ["iss", "aud", "sub", "exp", "iat", "nbf", "jti", "tid", "role", "scope", "sid"]


def _looks_like_jwt(credential: str) -> bool:
    return credential.count(".") == 2 and credential.startswith("eyJ")


class AccessTokenVerifier:
    """A `CredentialVerifier` for JWT access tokens; refuses (401) anything that is not exactly ours."""

    def __init__(
        self, keys: JwksCache, revocations: SessionRevocations, tiers: TenantTierCache, *,
        issuer: str, audience: str, leeway_s: int, cache_size: int = 10_000,
    ) -> None:
        self._keys = keys
        self._revocations = revocations
        self._tiers = tiers
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway_s
        # Clients reuse one token for its whole life: remember tokens whose signature and claims already
        # checked out (keyed by the exact token text), so a repeat costs a dict hit plus the expiry check.
        # Revocation and the tenant's tier are still checked on every call.
        self._verified: OrderedDict[str, tuple[str, dict[str, Any]]] = OrderedDict()
        self._cache_size = cache_size

    async def __call__(self, credential: str) -> Principal | None:
        if not _looks_like_jwt(credential):
            return None
        await self._keys.refresh_if_due()  # so a key withdrawn from the JWKS also ends remembered tokens
        claims = self._remembered(credential) or await self._verified_claims(credential)
        if await self._revocations.is_revoked(claims["sid"]):
            raise unauthenticated("the session of this token was revoked")
        tier = await self._tiers.tier(claims["tid"])
        if tier is None:
            raise unauthenticated("the token's tenant does not exist")
        return Principal(
            tenant_id=claims["tid"], tier=tier, scopes=frozenset(claims["scope"].split()), subject=claims["sub"],
            kind="user", role=claims["role"], session_id=claims["sid"], extra={"jti": claims["jti"]},
        )

    def _remembered(self, token: str) -> dict[str, Any] | None:
        hit = self._verified.get(token)
        if hit is None:
            return None
        kid, claims = hit
        if claims["exp"] + self._leeway <= time.time() or not self._keys.knows(kid):
            del self._verified[token]
            return None  # re-verify: refused as expired, or as signed by a key withdrawn from the JWKS
        self._verified.move_to_end(token)
        return claims

    def _remember(self, token: str, kid: str, claims: dict[str, Any]) -> None:
        if self._cache_size <= 0:
            return
        self._verified[token] = (kid, claims)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)

    async def aclose(self) -> None:
        await self._keys.aclose()

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.DecodeError, binascii.Error, ValueError):
            raise unauthenticated("malformed token") from None
        alg, kid, typ = header.get("alg"), header.get("kid"), header.get("typ")
        if alg not in ALLOWED_ALGORITHMS:
            raise unauthenticated("token algorithm not allowed")
        if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP:
            raise unauthenticated("not an access token (typ must be at+jwt)")
        if not isinstance(kid, str):
            raise unauthenticated("token has no key id")
        key = await self._keys.key(kid)
        if key is None:
            if not self._keys.healthy:
                raise ApiError(503, "auth_unavailable", "signing keys cannot be fetched right now",
                               headers={"Retry-After": "5"})
            raise unauthenticated("token signed by an unknown key")
        if key.algorithm != alg:
            raise unauthenticated("token algorithm does not match its key")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[key.algorithm], audience=self._audience, issuer=self._issuer,
                leeway=self._leeway, options={"require": _REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token expired") from None
        except jwt.ImmatureSignatureError:
            raise unauthenticated("token not yet valid") from None
        except jwt.InvalidTokenError:
            raise unauthenticated("invalid token") from None
        if not all(isinstance(claims[c], str) for c in ("sub", "tid", "role", "scope", "sid", "jti")):
            raise unauthenticated("invalid token claims")
        self._remember(token, kid, claims)
        return claims
