"""Request and response bodies of the auth API. Sizes are bounded here; rules live in `policy`."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.api_keys import ApiKeyInfo, IssuedApiKey
from gateway.auth.login_service import SignedIn
from gateway.auth.roles import Role
from gateway.auth.user_store import UserRecord

Email = Annotated[str, Field(min_length=3, max_length=320)]
PasswordInput = Annotated[str, Field(min_length=1, max_length=1024)]  # the 72-byte rule gives its own 422
OpaqueToken = Annotated[str, Field(min_length=8, max_length=256)]
Scope = Literal["requests:write", "requests:read", "usage:read", "billing:read", "admin"]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterBody(_Body):
    email: Email
    password: PasswordInput
    tenant_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None


class LoginBody(_Body):
    email: Email
    password: PasswordInput


class RefreshBody(_Body):
    refresh_token: OpaqueToken


class TokenBody(_Body):
    token: OpaqueToken


class PasswordChangeBody(_Body):
    current_password: PasswordInput
    new_password: PasswordInput


class ResetRequestBody(_Body):
    email: Email


class ResetConfirmBody(_Body):
    token: OpaqueToken
    new_password: PasswordInput


class InviteBody(_Body):
    email: Email
    role: Role = Role.MEMBER


class RoleBody(_Body):
    role: Role


class TierBody(_Body):
    tier: Annotated[str, Field(min_length=1, max_length=40)]


class ApiKeyCreateBody(_Body):
    name: Annotated[str, Field(max_length=200)] = ""
    scopes: Annotated[list[Scope], Field(min_length=1, max_length=5)] = ["requests:write", "requests:read", "usage:read"]


def token_response(signed_in: SignedIn, now: datetime) -> dict[str, Any]:
    """OAuth 2.0 token response shape (RFC 6749 §5.1)."""
    return {
        "access_token": signed_in.access.token,
        "token_type": "Bearer",
        "expires_in": signed_in.access.expires_in,
        "scope": signed_in.access.scope,
        "refresh_token": signed_in.refresh.refresh_token,
        "refresh_expires_in": max(0, int((signed_in.refresh.expires_at - now).total_seconds())),
    }


def user_resource(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "tenant_id": user.tenant_id,
        "email": user.email,
        "role": user.role,
        "email_verified": user.email_verified_at is not None,
        "password_set": user.password_hash is not None,
        "active": user.active,
        "created_at": user.created_at,
    }


def api_key_resource(key: ApiKeyInfo) -> dict[str, Any]:
    return {
        "id": key.id, "prefix": key.prefix, "name": key.name, "scopes": list(key.scopes),
        "created_at": key.created_at, "last_used_at": key.last_used_at, "revoked_at": key.revoked_at,
    }


def issued_api_key_resource(key: IssuedApiKey, created_at: datetime) -> dict[str, Any]:
    return {
        "id": key.id, "key": key.key, "prefix": key.prefix, "name": key.name, "scopes": list(key.scopes),
        "created_at": created_at, "last_used_at": None,
        "note": "store this key now: it is shown only once",
    }
