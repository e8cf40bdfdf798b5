"""Wire model of ``auth.events`` (keyed by user id, else by the email's digest).

A mailer consumes it: verification, password-reset and invitation links travel here. The ``link`` carries a
single-use secret, so the topic is confidential (ACL: the auth service writes, the mailer reads); the
database only ever holds the token's SHA-256.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import ClassVar, Literal

from schemas.events import WireModel


class AuthEventType(StrEnum):
    USER_REGISTERED = "user_registered"
    EMAIL_VERIFICATION_REQUESTED = "email_verification_requested"
    REGISTRATION_ATTEMPT_EXISTING_ACCOUNT = "registration_attempt_existing_account"
    PASSWORD_RESET_REQUESTED = "password_reset_requested"
    PASSWORD_RESET_UNKNOWN_EMAIL = "password_reset_unknown_email"
    USER_INVITED = "user_invited"
    PASSWORD_CHANGED = "password_changed"
    ACCOUNT_LOCKED = "account_locked"
    REFRESH_TOKEN_REUSE_DETECTED = "refresh_token_reuse_detected"


class PasswordResetReason(StrEnum):
    USER_REQUEST = "user_request"
    ADMIN_FORCED = "admin_forced"


class AuthEvent(WireModel):
    """Something a mailer or an auditor wants to know about an account."""

    SCHEMA_NAME: ClassVar[str] = "auth_event"
    SCHEMA_VERSION: ClassVar[int] = 1
    schema_version: Literal[1] = 1
    event_id: str
    type: AuthEventType
    at: datetime
    tenant_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    link: str | None = None  # contains a single-use token: never log this field
    link_expires_at: datetime | None = None
    reason: PasswordResetReason | None = None
    session_id: str | None = None

    @property
    def kafka_key(self) -> str:
        if self.user_id:
            return self.user_id
        return hashlib.sha256((self.email or self.event_id).encode()).hexdigest()


AUTH_WIRE_MODELS: list[type[WireModel]] = [AuthEvent]
