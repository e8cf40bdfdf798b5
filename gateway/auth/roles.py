"""Roles inside a tenant and the scopes each one grants."""

from __future__ import annotations

from enum import StrEnum

from gateway.api_keys import ALL_SCOPES

PLATFORM_ADMIN_SCOPE = "platform:admin"  # operators of the platform; never held by API keys or tenant roles


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    FINANCE = "finance"


ROLE_SCOPES: dict[Role, tuple[str, ...]] = {
    Role.OWNER: ALL_SCOPES,
    Role.ADMIN: ALL_SCOPES,
    Role.MEMBER: ("requests:write", "requests:read", "usage:read"),
    Role.FINANCE: ("usage:read", "billing:read"),
}


def scopes_for(role: str, platform_operator: bool = False) -> tuple[str, ...]:
    scopes = ROLE_SCOPES[Role(role)]
    return (*scopes, PLATFORM_ADMIN_SCOPE) if platform_operator else scopes
