"""Issues access tokens: short-lived JWTs (RFC 9068 profile, `typ: at+jwt`) signed with the active key."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from gateway.auth.key_ring import SigningKeyRing
from gateway.auth.roles import scopes_for
from lotabots.ids import new_id
from lotabots.settings import Settings

ACCESS_TOKEN_TYPE = "at+jwt"


@dataclass(frozen=True)
class TokenSubject:
    """Whom a token speaks for: read fresh from the users table at login and at every refresh."""

    user_id: str
    tenant_id: str
    role: str
    platform_operator: bool = False


@dataclass(frozen=True)
class IssuedAccessToken:
    token: str
    expires_in: int
    scope: str


class AccessTokenIssuer:
    """Signs access tokens. Uses real time (not the injectable clock): verifiers check against real time."""

    def __init__(self, ring: SigningKeyRing, settings: Settings) -> None:
        self._ring = ring
        self._settings = settings

    async def issue(self, subject: TokenSubject, session_id: str) -> IssuedAccessToken:
        key = await self._ring.signing_key()
        now = int(time.time())
        ttl = self._settings.auth_access_token_ttl_s
        scope = " ".join(scopes_for(subject.role, subject.platform_operator))
        claims = {
            "iss": self._settings.auth_issuer,
            "aud": self._settings.auth_audience,
            "sub": subject.user_id,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": new_id("at"),
            "tid": subject.tenant_id,
            "role": subject.role,
            "scope": scope,
            "sid": session_id,
        }
        token = jwt.encode(claims, key.private_key, algorithm=key.algorithm,
                           headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE})
        return IssuedAccessToken(token, ttl, scope)
