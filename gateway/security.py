"""Authentication and authorization for every gateway route.

`Authorization: Bearer <credential>` is checked by the registered verifiers in order (API keys first;
the auth service adds JWT access tokens). Routes declare what they need with `require_scope(...)`.
401 (with `WWW-Authenticate`) for missing/invalid credentials, 403 for insufficient scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from fastapi import Depends, Request

from gateway.errors import ApiError


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every resource is scoped to, and what they may do."""

    tenant_id: str
    tier: str
    scopes: frozenset[str]
    subject: str  # api key id or user id
    kind: str  # "api_key" | "user"
    role: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)


# A verifier returns a Principal, None when the credential is not its kind, or raises ApiError(401).
CredentialVerifier = Callable[[str], Awaitable[Principal | None]]


def _unauthenticated(message: str, error: str = "invalid_token") -> ApiError:
    return ApiError(
        401, "unauthenticated", message,
        headers={"WWW-Authenticate": f'Bearer realm="lotabots", error="{error}"'},
    )


async def authenticate(request: Request) -> Principal:
    header = request.headers.get("authorization")
    if not header:
        raise ApiError(401, "unauthenticated", "missing Authorization header",
                       headers={"WWW-Authenticate": 'Bearer realm="lotabots"'})
    scheme, _, credential = header.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise _unauthenticated("use Authorization: Bearer <api key or access token>", "invalid_request")
    verifiers: list[CredentialVerifier] = request.app.state.credential_verifiers
    for verify in verifiers:
        principal = await verify(credential.strip())
        if principal is not None:
            request.state.principal = principal
            return principal
    raise _unauthenticated("invalid, expired or revoked credential")


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller must hold `scope` (or `admin`)."""

    async def dependency(principal: Principal = Depends(authenticate)) -> Principal:
        if scope not in principal.scopes and "admin" not in principal.scopes:
            raise ApiError(403, "insufficient_scope", f"this call needs the {scope!r} scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency
