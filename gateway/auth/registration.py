"""Sign-up and email verification. The answer to a sign-up never says whether the email was free."""

from __future__ import annotations

from gateway.auth.clock import Clock, utcnow
from gateway.auth.events import AuthEventPublisher
from gateway.auth.one_time_tokens import OneTimeTokens, TokenPurpose
from gateway.auth.passwords import PasswordHasher
from gateway.auth.policy import check_new_password, require_email
from gateway.auth.refusals import invalid_token, too_many_attempts
from gateway.auth.roles import Role
from gateway.auth.throttle import LoginThrottle
from gateway.auth.user_store import UserStore
from gateway.errors import ApiError
from lotabots.settings import Settings
from schemas.auth_events import AuthEventType


class RegistrationService:
    """Creates a tenant with its first user (the owner) and asks the mailer to verify the address."""

    def __init__(self, settings: Settings, users: UserStore, hasher: PasswordHasher, tokens: OneTimeTokens,
                 events: AuthEventPublisher, throttle: LoginThrottle, clock: Clock = utcnow) -> None:
        self._settings = settings
        self._users = users
        self._hasher = hasher
        self._tokens = tokens
        self._events = events
        self._throttle = throttle
        self._clock = clock

    async def register(self, raw_email: str, password: str, tenant_name: str | None, client_address: str) -> None:
        if not self._settings.auth_registration_open:
            raise ApiError(403, "registration_closed", "self-service registration is closed; ask for an invitation")
        email = require_email(raw_email)
        check_new_password(password, email, self._settings.auth_password_min_length)
        await self._count_attempt(client_address)
        password_hash = await self._hasher.hash(password)  # paid on both paths: timing says nothing either
        verified = not self._settings.auth_require_email_verification
        user = await self._users.create_with_tenant(
            email=email, password_hash=password_hash, tenant_name=tenant_name or email,
            tier=self._settings.auth_default_tier, role=Role.OWNER.value, now=self._clock(), verified=verified,
        )
        if user is None:
            existing = await self._users.by_email(email)
            await self._events.emit(AuthEventType.REGISTRATION_ATTEMPT_EXISTING_ACCOUNT, email=email,
                                    user_id=existing.id if existing else None,
                                    tenant_id=existing.tenant_id if existing else None)
            return
        await self._events.emit(AuthEventType.USER_REGISTERED, user_id=user.id, tenant_id=user.tenant_id,
                                 email=email)
        if not verified:
            issued = await self._tokens.issue(user.id, TokenPurpose.VERIFY_EMAIL,
                                              self._settings.auth_verify_token_ttl_s)
            await self._events.emit_link(AuthEventType.EMAIL_VERIFICATION_REQUESTED, TokenPurpose.VERIFY_EMAIL,
                                         issued, user_id=user.id, tenant_id=user.tenant_id, email=email)

    async def verify_email(self, token: str) -> str:
        """Marks the address verified; returns the user id."""
        redeemed = await self._tokens.redeem(token, {TokenPurpose.VERIFY_EMAIL})
        if redeemed is None:
            raise invalid_token()
        await self._users.mark_email_verified(redeemed[0], self._clock())
        return redeemed[0]

    async def _count_attempt(self, client_address: str) -> None:
        key = "register:" + client_address[:64]
        wait = await self._throttle.retry_after([key])
        if wait is None:
            wait = await self._throttle.record_failure(key, self._settings.auth_lockout_address_threshold)
        if wait is not None:
            raise too_many_attempts(wait)
