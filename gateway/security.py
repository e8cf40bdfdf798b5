"""Authentication and authorization for every gateway route.

`Authorization: Bearer <credential>` is checked by the registered verifiers in order (API keys first,
then JWT access tokens from the auth service). Routes declare what they need with `require_scope(...)`
or `require_role(...)`. 401 (with `WWW-Authenticate`) for missing/invalid credentials, 403 for
insufficient scope or role. The `admin` scope stands for every tenant scope; platform scopes
(`platform:*`) are never implied by it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, Request

from gateway.errors import ApiError

ADMIN_SCOPE = "admin"
PLATFORM_SCOPE_PREFIX = "platform:"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant every resource is scoped to, and what they may do."""

    tenant_id: str
    tier: str
    scopes: frozenset[str]
    subject: str  # api key id or user id
    kind: str  # "api_key" | "user"
    role: str | None = None
    session_id: str | None = None  # login session of a user's access token
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def has_scope(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        return ADMIN_SCOPE in self.scopes and not scope.startswith(PLATFORM_SCOPE_PREFIX)


# A verifier returns a Principal, None when the credential is not its kind, or raises ApiError(401).
CredentialVerifier = Callable[[str], Awaitable[Principal | None]]


def unauthenticated(message: str, error: str = "invalid_token") -> ApiError:
    """401 with an RFC 6750 `WWW-Authenticate` challenge."""
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
        raise unauthenticated("use Authorization: Bearer <api key or access token>", "invalid_request")
    verifiers: list[CredentialVerifier] = request.app.state.credential_verifiers
    for verify in verifiers:
        principal = await verify(credential.strip())
        if principal is not None:
            request.state.principal = principal
            return principal
    raise unauthenticated("invalid, expired or revoked credential")


Authenticated = Annotated[Principal, Depends(authenticate)]


async def authorize(request: Request, scope: str) -> Principal:
    """Authenticate and check `scope` without FastAPI's dependency machinery (for the submit hot path)."""
    principal = await authenticate(request)
    if not principal.has_scope(scope):
        raise ApiError(403, "insufficient_scope", f"this call needs the {scope!r} scope", required_scope=scope)
    return principal


def require_scope(scope: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller must hold `scope` (or `admin`, for tenant scopes)."""

    async def dependency(principal: Authenticated) -> Principal:
        if not principal.has_scope(scope):
            raise ApiError(403, "insufficient_scope", f"this call needs the {scope!r} scope", required_scope=scope)
        return principal

    dependency.__name__ = f"require_{scope.replace(':', '_')}"
    return dependency


def require_role(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the caller must be a signed-in user with one of `roles` (API keys have no role)."""

    async def dependency(principal: Authenticated) -> Principal:
        if principal.kind != "user" or principal.role not in roles:
            raise ApiError(403, "insufficient_role", f"this call needs one of the roles {sorted(roles)}",
                           required_roles=sorted(roles))
        return principal

    dependency.__name__ = "require_role_" + "_".join(roles)
    return dependency


async def require_user_session(principal: Authenticated) -> Principal:
    """The caller must be a user with a login session (an access token, not an API key)."""
    if principal.kind != "user" or principal.session_id is None:
        raise ApiError(403, "user_session_required", "this call needs a user's access token, not an API key")
    return principal
