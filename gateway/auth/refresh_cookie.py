"""Cookie mode for browsers (the web console): the refresh token travels in an HttpOnly cookie.

API clients keep the OAuth 2.0 token response with `refresh_token` in the JSON body. A caller that sends
`LotaBots-Refresh-Cookie: 1` on login, refresh or verify-email gets the refresh token as the `lb_refresh`
cookie instead (HttpOnly, SameSite=Strict, Path=/v1/auth, Secure over https), never in the body, so page
script cannot read it. Refresh reads the cookie when the body has no token; because a cookie is sent by the
browser on its own, that route also needs a CSRF proof: the `X-CSRF-Token` header must equal the
`lb_csrf` cookie (double submit; `lb_csrf` is readable by the page, SameSite=Strict, Path=/), else 403
`csrf_failed`. Logout clears both cookies.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from gateway.errors import ApiError
from gateway.responses import JSONBytes

MODE_HEADER = "lotabots-refresh-cookie"
CSRF_HEADER = "x-csrf-token"
REFRESH_COOKIE = "lb_refresh"
CSRF_COOKIE = "lb_csrf"
REFRESH_PATH = "/v1/auth"


def cookie_mode(request: Request) -> bool:
    return request.headers.get(MODE_HEADER, "").strip().lower() in {"1", "true", "yes"}


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def refresh_from_cookie(request: Request) -> str:
    """The refresh token of a cookie-mode refresh, after the double-submit CSRF check."""
    csrf_cookie = request.cookies.get(CSRF_COOKIE, "")
    csrf_header = request.headers.get(CSRF_HEADER, "")
    if not csrf_cookie or not hmac.compare_digest(csrf_cookie.encode(), csrf_header.encode()):
        raise ApiError(403, "csrf_failed",
                       f"a cookie-authenticated refresh needs the {CSRF_HEADER.upper()} header equal to the "
                       f"{CSRF_COOKIE} cookie")
    token = request.cookies.get(REFRESH_COOKIE)
    if not token:
        raise ApiError(401, "invalid_refresh_token", "the refresh token is invalid, expired or revoked")
    return token


def cookie_mode_response(request: Request, body: dict[str, Any], headers: dict[str, str]) -> JSONBytes:
    """A token response with the refresh token moved out of the body into the cookies."""
    out = dict(body)
    token = out.pop("refresh_token")
    out["refresh_cookie"] = REFRESH_COOKIE
    max_age = int(out.get("refresh_expires_in") or 0)
    secure = _secure(request)
    response = JSONBytes(out, headers=headers)
    response.set_cookie(REFRESH_COOKIE, token, max_age=max_age, path=REFRESH_PATH, secure=secure,
                        httponly=True, samesite="strict")
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), max_age=max_age, path="/", secure=secure,
                        httponly=False, samesite="strict")
    return response


def clear_cookies(request: Request, response: Response) -> None:
    secure = _secure(request)
    response.delete_cookie(REFRESH_COOKIE, path=REFRESH_PATH, secure=secure, httponly=True, samesite="strict")
    response.delete_cookie(CSRF_COOKIE, path="/", secure=secure, httponly=False, samesite="strict")
