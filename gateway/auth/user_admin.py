"""Tenant admins manage their users: list, invite, change role, remove. Always inside the caller's tenant."""

from __future__ import annotations

from gateway.auth.clock import Clock, utcnow
from gateway.auth.events import AuthEventPublisher
from gateway.auth.one_time_tokens import OneTimeTokens, TokenPurpose
from gateway.auth.policy import require_email
from gateway.auth.refusals import user_not_found
from gateway.auth.roles import Role
from gateway.auth.sessions import SessionStore
from gateway.auth.user_store import UserRecord, UserStore
from gateway.errors import ApiError
from gateway.security import Principal
from lotabots.settings import Settings
from schemas.auth_events import AuthEventType


class UserAdminService:
    """Only owners may grant, change or remove the owner role; a tenant always keeps one active owner."""

    def __init__(self, settings: Settings, users: UserStore, sessions: SessionStore, tokens: OneTimeTokens,
                 events: AuthEventPublisher, clock: Clock = utcnow) -> None:
        self._settings = settings
        self._users = users
        self._sessions = sessions
        self._tokens = tokens
        self._events = events
        self._clock = clock

    async def list(self, who: Principal) -> list[UserRecord]:
        return await self._users.list_in_tenant(who.tenant_id)

    async def get(self, who: Principal, user_id: str) -> UserRecord:
        user = await self._users.by_id(user_id, who.tenant_id)
        if user is None:
            raise user_not_found()
        return user

    async def invite(self, who: Principal, raw_email: str, role: Role) -> UserRecord:
        email = require_email(raw_email)
        self._guard_owner_role(who, role)
        user = await self._users.create_in_tenant(tenant_id=who.tenant_id, email=email, role=role.value,
                                                  now=self._clock())
        if user is None:
            raise ApiError(409, "email_unavailable", "this email address cannot be invited")
        issued = await self._tokens.issue(user.id, TokenPurpose.INVITATION, self._settings.auth_invite_token_ttl_s)
        await self._events.emit_link(AuthEventType.USER_INVITED, TokenPurpose.INVITATION, issued,
                                     user_id=user.id, tenant_id=user.tenant_id, email=email)
        return user

    async def set_role(self, who: Principal, user_id: str, role: Role) -> UserRecord:
        user = await self.get(who, user_id)
        self._guard_owner_role(who, Role(user.role))
        self._guard_owner_role(who, role)
        if user.role == Role.OWNER and role != Role.OWNER:
            await self._guard_last_owner(user)
        if user.role != role:
            await self._users.set_role(user.id, role.value)
            # Old access tokens carry the old role: end the sessions instead of waiting for them to expire.
            await self._sessions.revoke_user_sessions(user.id, "role_changed")
        return await self.get(who, user_id)

    async def remove(self, who: Principal, user_id: str) -> None:
        user = await self.get(who, user_id)
        self._guard_owner_role(who, Role(user.role))
        if user.role == Role.OWNER:
            await self._guard_last_owner(user)
        await self._users.disable(user.id, self._clock())
        await self._sessions.revoke_user_sessions(user.id, "user_removed")

    @staticmethod
    def _guard_owner_role(who: Principal, role: Role) -> None:
        if role == Role.OWNER and who.role != Role.OWNER:
            raise ApiError(403, "owner_required", "only an owner can grant, change or remove the owner role")

    async def _guard_last_owner(self, user: UserRecord) -> None:
        if user.active and await self._users.count_active_owners(user.tenant_id) <= 1:
            raise ApiError(409, "last_owner", "a tenant needs at least one owner; make someone else owner first")
