"""Input rules for identities: email normalisation and the password policy (bcrypt's 72-byte limit included)."""

from __future__ import annotations

import re
import unicodedata

from gateway.errors import ApiError

BCRYPT_MAX_BYTES = 72  # bcrypt ignores (bcrypt>=5: refuses) anything longer
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]+$")


def normalize_email(raw: str) -> str | None:
    """The canonical form we store and look up by (NFKC, trimmed, lower-case, IDNA domain); None if malformed."""
    value = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        return None
    local, _, domain = value.rpartition("@")
    try:
        domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None
    return f"{local}@{domain}"


def require_email(raw: str) -> str:
    email = normalize_email(raw)
    if email is None:
        raise ApiError(422, "invalid_email", "the email address is malformed")
    return email


def check_password_length(password: str) -> None:
    """The one rule every password field obeys (login included): bcrypt cannot take more than 72 bytes."""
    if len(password.encode()) > BCRYPT_MAX_BYTES:
        raise ApiError(
            422, "password_too_long",
            f"passwords are limited to {BCRYPT_MAX_BYTES} bytes in UTF-8 (fewer characters outside ASCII)",
            max_bytes=BCRYPT_MAX_BYTES,
        )


def check_new_password(password: str, email: str, min_length: int) -> None:
    """Policy for a password being set: length bounds, no control characters, not the email address."""
    check_password_length(password)
    if len(password) < min_length:
        raise ApiError(422, "password_too_short", f"passwords need at least {min_length} characters",
                       min_length=min_length)
    if any(unicodedata.category(ch) == "Cc" for ch in password):
        raise ApiError(422, "password_invalid_characters", "passwords may not contain control characters")
    if unicodedata.normalize("NFKC", password).strip().lower() == email:
        raise ApiError(422, "password_equals_email", "the password may not be the email address")
