"""Sign-in, token refresh and sign-out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NoReturn

from gateway.auth.events import AuthEventPublisher
from gateway.auth.metrics import LOCKOUTS, LOGINS, REFRESH_REUSE
from gateway.auth.passwords import PasswordHasher
from gateway.auth.policy import check_password_length, normalize_email
from gateway.auth.refusals import invalid_credentials, too_many_attempts
from gateway.auth.sessions import IssuedRefresh, RefreshRefused, RefreshReused, SessionStore
from gateway.auth.throttle import LoginThrottle, account_key, address_key
from gateway.auth.token_issuer import AccessTokenIssuer, IssuedAccessToken
from gateway.auth.user_store import UserRecord, UserStore
from gateway.errors import ApiError
from gateway.security import Principal
from lotabots.settings import Settings
from schemas.auth_events import AuthEventType

log = logging.getLogger("lotabots.auth.login")


@dataclass(frozen=True)
class SignedIn:
    """A successful sign-in or refresh: a short-lived access token and the next refresh token."""

    access: IssuedAccessToken
    refresh: IssuedRefresh


class LoginService:
    """Checks passwords (throttled), starts sessions, rotates refresh tokens, ends sessions."""

    def __init__(self, settings: Settings, users: UserStore, hasher: PasswordHasher, sessions: SessionStore,
                 issuer: AccessTokenIssuer, throttle: LoginThrottle, events: AuthEventPublisher) -> None:
        self._settings = settings
        self._users = users
        self._hasher = hasher
        self._sessions = sessions
        self._issuer = issuer
        self._throttle = throttle
        self._events = events

    async def login(self, raw_email: str, password: str, client_address: str) -> SignedIn:
        check_password_length(password)
        email = normalize_email(raw_email)
        keys = [account_key(email or raw_email.strip().lower()), address_key(client_address)]
        wait = await self._throttle.retry_after(keys)
        if wait is not None:
            LOGINS.labels("locked").inc()
            raise too_many_attempts(wait)
        user = await self._users.by_email(email) if email else None
        matched = await self._hasher.verify(password, user.password_hash if user else None)
        if user is None or not matched or not self._may_sign_in(user):
            await self._failed(keys, user)
        assert user is not None
        await self._throttle.clear(keys[0])
        LOGINS.labels("succeeded").inc()
        refresh = await self._sessions.start(user.id, user.tenant_id, client_address)
        return SignedIn(await self._issuer.issue(user.subject, refresh.session_id), refresh)

    async def start_session(self, user_id: str, client_address: str) -> SignedIn | None:
        """A session for a user who just proved control of their mailbox (a verification link followed in the
        web console); None when the user may not sign in (disabled)."""
        user = await self._users.by_id(user_id)
        if user is None or not self._may_sign_in(user) or user.password_hash is None:
            return None
        LOGINS.labels("succeeded").inc()
        refresh = await self._sessions.start(user.id, user.tenant_id, client_address)
        return SignedIn(await self._issuer.issue(user.subject, refresh.session_id), refresh)

    async def refresh(self, refresh_token: str) -> SignedIn:
        try:
            refresh = await self._sessions.rotate(refresh_token)
        except RefreshReused as reuse:
            REFRESH_REUSE.inc()
            log.warning("refresh token reused: session %s of user %s revoked", reuse.session_id, reuse.user_id)
            await self._events.emit(AuthEventType.REFRESH_TOKEN_REUSE_DETECTED, user_id=reuse.user_id,
                                    session_id=reuse.session_id)
            raise ApiError(401, "refresh_token_reused",
                           "this refresh token was already used; the session has been revoked") from None
        except RefreshRefused:
            raise ApiError(401, "invalid_refresh_token", "the refresh token is invalid, expired or revoked") from None
        user = await self._users.by_id(refresh.user_id)
        if user is None or not user.active:
            await self._sessions.revoke(refresh.session_id, "user_disabled")
            raise ApiError(401, "invalid_refresh_token", "the refresh token is invalid, expired or revoked")
        # Role and tenant are read fresh: a role change shows up in the next access token.
        return SignedIn(await self._issuer.issue(user.subject, refresh.session_id), refresh)

    async def logout(self, who: Principal) -> None:
        assert who.session_id is not None
        await self._sessions.revoke(who.session_id, "logout")

    async def logout_everywhere(self, who: Principal) -> int:
        return await self._sessions.revoke_user_sessions(who.subject, "logout_everywhere")

    def _may_sign_in(self, user: UserRecord) -> bool:
        verified = user.email_verified_at is not None or not self._settings.auth_require_email_verification
        return user.active and verified

    async def _failed(self, keys: list[str], user: UserRecord | None) -> NoReturn:
        LOGINS.labels("failed").inc()
        account_wait = await self._throttle.record_failure(keys[0], self._settings.auth_lockout_threshold)
        address_wait = await self._throttle.record_failure(keys[1], self._settings.auth_lockout_address_threshold)
        if account_wait is not None:
            LOCKOUTS.labels("account").inc()
            if user is not None:
                await self._events.emit(AuthEventType.ACCOUNT_LOCKED, user_id=user.id, tenant_id=user.tenant_id)
        if address_wait is not None:
            LOCKOUTS.labels("address").inc()
        wait = max(account_wait or 0, address_wait or 0)
        if wait:
            raise too_many_attempts(wait)
        raise invalid_credentials()
