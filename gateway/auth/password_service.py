"""Password change, self-service reset (request + confirm), and the admin-forced reset."""

from __future__ import annotations

from gateway.auth.clock import Clock, utcnow
from gateway.auth.events import AuthEventPublisher
from gateway.auth.one_time_tokens import OneTimeTokens, TokenPurpose
from gateway.auth.passwords import PasswordHasher
from gateway.auth.policy import check_new_password, check_password_length, normalize_email
from gateway.auth.refusals import invalid_token, too_many_attempts, user_not_found
from gateway.auth.roles import Role
from gateway.auth.sessions import SessionStore
from gateway.auth.throttle import LoginThrottle, account_key
from gateway.auth.user_store import UserRecord, UserStore
from gateway.errors import ApiError
from gateway.security import Principal
from lotabots.settings import Settings
from schemas.auth_events import AuthEventType, PasswordResetReason

_RESET_PURPOSES = {TokenPurpose.RESET_PASSWORD, TokenPurpose.INVITATION}


class PasswordService:
    """Every way a password changes; each one ends the sessions that should not survive it."""

    def __init__(self, settings: Settings, users: UserStore, hasher: PasswordHasher, sessions: SessionStore,
                 tokens: OneTimeTokens, throttle: LoginThrottle, events: AuthEventPublisher,
                 clock: Clock = utcnow) -> None:
        self._settings = settings
        self._users = users
        self._hasher = hasher
        self._sessions = sessions
        self._tokens = tokens
        self._throttle = throttle
        self._events = events
        self._clock = clock

    async def change(self, who: Principal, current_password: str, new_password: str) -> int:
        """Needs the current password; revokes every other session. Returns how many were revoked."""
        check_password_length(current_password)
        user = await self._users.by_id(who.subject, who.tenant_id)
        if user is None or not user.active:
            raise user_not_found()
        key = account_key(user.email)
        wait = await self._throttle.retry_after([key])
        if wait is not None:
            raise too_many_attempts(wait)
        if not await self._hasher.verify(current_password, user.password_hash):
            wait = await self._throttle.record_failure(key, self._settings.auth_lockout_threshold)
            if wait is not None:
                raise too_many_attempts(wait)
            raise ApiError(403, "current_password_incorrect", "the current password is incorrect")
        check_new_password(new_password, user.email, self._settings.auth_password_min_length)
        await self._users.set_password(user.id, await self._hasher.hash(new_password), self._clock())
        revoked = await self._sessions.revoke_user_sessions(user.id, "password_changed", keep=who.session_id)
        await self._events.emit(AuthEventType.PASSWORD_CHANGED, user_id=user.id, tenant_id=user.tenant_id)
        return revoked

    async def request_reset(self, raw_email: str, client_address: str) -> None:
        """Mail a reset link if the account exists; the caller's answer is the same either way."""
        key = "reset:" + client_address[:64]
        wait = await self._throttle.retry_after([key]) or await self._throttle.record_failure(
            key, self._settings.auth_lockout_address_threshold)
        if wait is not None:
            raise too_many_attempts(wait)
        email = normalize_email(raw_email)
        user = await self._users.by_email(email) if email else None
        if user is None or not user.active:
            if email:
                await self._events.emit(AuthEventType.PASSWORD_RESET_UNKNOWN_EMAIL, email=email)
            return
        await self._send_reset(user, PasswordResetReason.USER_REQUEST)

    async def confirm_reset(self, token: str, new_password: str) -> None:
        """Set a new password with a reset (or invitation) token; ends every session of the account."""
        check_password_length(new_password)
        user_id = await self._tokens.peek(token, _RESET_PURPOSES)
        user = await self._users.by_id(user_id) if user_id else None
        if user is None or not user.active:
            raise invalid_token()
        check_new_password(new_password, user.email, self._settings.auth_password_min_length)
        password_hash = await self._hasher.hash(new_password)
        if await self._tokens.redeem(token, _RESET_PURPOSES) is None:
            raise invalid_token()
        await self._users.set_password(user.id, password_hash, self._clock(), verify_email=True)
        await self._sessions.revoke_user_sessions(user.id, "password_reset")
        await self._throttle.clear(account_key(user.email))
        await self._events.emit(AuthEventType.PASSWORD_CHANGED, user_id=user.id, tenant_id=user.tenant_id)

    async def force_reset(self, who: Principal, user_id: str) -> None:
        """Admin action: the password stops working at once, sessions end, a reset link is mailed."""
        user = await self._users.by_id(user_id, who.tenant_id)
        if user is None:
            raise user_not_found()
        if user.role == Role.OWNER and who.role != Role.OWNER:
            raise ApiError(403, "owner_required", "only an owner can force a password reset on an owner")
        await self._users.set_password(user.id, None, self._clock())
        await self._sessions.revoke_user_sessions(user.id, "admin_forced_reset")
        await self._send_reset(user, PasswordResetReason.ADMIN_FORCED)

    async def _send_reset(self, user: UserRecord, reason: PasswordResetReason) -> None:
        issued = await self._tokens.issue(user.id, TokenPurpose.RESET_PASSWORD, self._settings.auth_reset_token_ttl_s)
        await self._events.emit_link(AuthEventType.PASSWORD_RESET_REQUESTED, TokenPurpose.RESET_PASSWORD, issued,
                                     user_id=user.id, tenant_id=user.tenant_id, email=user.email, reason=reason)
