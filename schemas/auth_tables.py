"""Relational schema of the auth service: users, login sessions, refresh and one-time tokens, signing keys,
and login throttling. Same `Base` as the spine so one metadata (and one Alembic history) covers both.

Secrets are never stored in the clear: refresh and one-time tokens are 256-bit random strings kept as
SHA-256 digests, passwords are bcrypt hashes, and private signing keys are sealed with AES-GCM.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import JSON, Boolean, DateTime, ForeignKey, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from schemas.relational import Base


class User(Base):
    """A person who signs in. Belongs to exactly one tenant, with one role there."""

    __tablename__ = "users"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)  # normalised (see gateway.auth.policy)
    password_hash: Mapped[str | None] = mapped_column(String(100), nullable=True)  # NULL: must set one
    role: Mapped[str] = mapped_column(String(20))
    platform_operator: Mapped[bool] = mapped_column(Boolean, default=False)
    email_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    password_changed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class AuthSession(Base):
    """One login: the family of its refresh tokens. Access tokens carry its id as `sid`."""

    __tablename__ = "auth_sessions"
    __table_args__ = (Index("ix_auth_sessions_revoked_at", "revoked_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    revoked_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    client_address: Mapped[str | None] = mapped_column(String(64), nullable=True)


class RefreshToken(Base):
    """One refresh token of a session; rotated on every use (`used_at`), its successor points back."""

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("auth_sessions.id", ondelete="CASCADE"), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class OneTimeToken(Base):
    """A single-use, expiring token mailed to a user: verify email, reset password, accept invitation."""

    __tablename__ = "one_time_tokens"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    purpose: Mapped[str] = mapped_column(String(20))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    used_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class SigningKey(Base):
    """An access-token signing key. Public half published as a JWK; private half sealed (AES-GCM, AAD=kid)."""

    __tablename__ = "signing_keys"
    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    algorithm: Mapped[str] = mapped_column(String(10))
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    private_key_sealed: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    activates_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # signs from here on


class LoginThrottle(Base):
    """Failed-login counter for one account (by email digest) or one client address, and its lockout."""

    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    window_started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


users = cast(Table, User.__table__)
auth_sessions = cast(Table, AuthSession.__table__)
refresh_tokens = cast(Table, RefreshToken.__table__)
one_time_tokens = cast(Table, OneTimeToken.__table__)
signing_keys = cast(Table, SigningKey.__table__)
login_throttle = cast(Table, LoginThrottle.__table__)
