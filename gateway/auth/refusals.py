"""The auth service's refusals, each with its stable code (mapped to HTTP by gateway.errors)."""

from __future__ import annotations

from gateway.errors import ApiError

INVALID_CREDENTIALS_MESSAGE = "the email or password is incorrect, or the email address is not verified yet"


def invalid_credentials() -> ApiError:
    # One message for unknown email, wrong password, unverified and disabled accounts: reveals nothing.
    return ApiError(401, "invalid_credentials", INVALID_CREDENTIALS_MESSAGE)


def too_many_attempts(retry_after_s: int) -> ApiError:
    return ApiError(429, "too_many_attempts", f"too many attempts; retry in {retry_after_s} seconds",
                    headers={"Retry-After": str(retry_after_s)}, retry_after_s=retry_after_s)


def invalid_token() -> ApiError:
    return ApiError(400, "invalid_or_expired_token", "the link is invalid, expired or already used")


def user_not_found() -> ApiError:
    return ApiError(404, "user_not_found", "no such user")
