"""`/v1/auth`: register, verify email, login, refresh, logout (this session / everywhere), me."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from gateway.api_models import Accepted, Me, RevokedSessions, TokenResponse
from gateway.auth.clock import utcnow
from gateway.auth.deps import NO_STORE, ClientAddress, Services
from gateway.auth.login_service import SignedIn
from gateway.auth.models import LoginBody, RefreshBody, RegisterBody, TokenBody, token_response, user_resource
from gateway.auth.refresh_cookie import clear_cookies, cookie_mode, cookie_mode_response, refresh_from_cookie
from gateway.auth.refusals import user_not_found
from gateway.openapi_docs import errors
from gateway.responses import JSONBytes
from gateway.security import Principal, authenticate, require_user_session

router = APIRouter(prefix="/v1/auth", tags=["auth"])

REGISTRATION_ACCEPTED = {
    "status": "accepted",
    "message": "If this address can be registered, the account is created and a confirmation mail is on its way.",
}


@router.post("/register", status_code=202, response_model=Accepted,
             responses=errors(403, 422, 429, e403="self-service registration is closed (`registration_closed`)",
                              e422="invalid body, or the password breaks the policy (`password_too_short`, ...)"))
async def register(body: RegisterBody, services: Services, address: ClientAddress) -> JSONBytes:
    await services.registration.register(body.email, body.password, body.tenant_name, address)
    return JSONBytes(REGISTRATION_ACCEPTED, status_code=202)


def _tokens(request: Request, signed_in: SignedIn) -> JSONBytes:
    """The token response; in cookie mode (`LotaBots-Refresh-Cookie: 1`) the refresh token is a cookie."""
    body = token_response(signed_in, utcnow())
    if not cookie_mode(request):
        return JSONBytes(body, headers=NO_STORE)
    return cookie_mode_response(request, body, NO_STORE)


@router.post("/verify-email", status_code=204, response_class=Response,
             responses={200: {"model": TokenResponse, "description": "cookie mode: signed in"},
                        **errors(400, 422, e400="invalid or expired token (`invalid_or_expired_token`)")})
async def verify_email(body: TokenBody, request: Request, services: Services, address: ClientAddress) -> Response:
    """204; in cookie mode (the web console) a token response that signs the person in."""
    user_id = await services.registration.verify_email(body.token)
    if cookie_mode(request):
        signed_in = await services.login.start_session(user_id, address)
        if signed_in is not None:
            return _tokens(request, signed_in)
    return Response(status_code=204)


@router.post("/login", response_model=TokenResponse,
             responses=errors(401, 422, 429, e401="wrong email or password (`invalid_credentials`)"))
async def login(body: LoginBody, request: Request, services: Services, address: ClientAddress) -> JSONBytes:
    signed_in = await services.login.login(body.email, body.password, address)
    return _tokens(request, signed_in)


@router.post("/refresh", response_model=TokenResponse,
             responses=errors(401, 403, 422, e401="invalid, expired or reused refresh token",
                              e403="cookie mode without a matching `X-CSRF-Token` (`csrf_failed`)"))
async def refresh(request: Request, services: Services, body: RefreshBody | None = None) -> JSONBytes:
    """`{refresh_token}`, or no body and the `lb_refresh` cookie with the `X-CSRF-Token` header (cookie mode)."""
    token = body.refresh_token if body is not None else refresh_from_cookie(request)
    signed_in = await services.login.refresh(token)
    return _tokens(request, signed_in)


@router.post("/logout", status_code=204, response_class=Response)
async def logout(request: Request, services: Services,
                 who: Annotated[Principal, Depends(require_user_session)]) -> Response:
    await services.login.logout(who)
    response = Response(status_code=204)
    clear_cookies(request, response)
    return response


@router.post("/logout-all", response_model=RevokedSessions)
async def logout_everywhere(request: Request, services: Services,
                            who: Annotated[Principal, Depends(require_user_session)]) -> JSONBytes:
    response = JSONBytes({"revoked_sessions": await services.login.logout_everywhere(who)})
    clear_cookies(request, response)
    return response


@router.get("/me", response_model=Me)
async def me(services: Services, who: Annotated[Principal, Depends(authenticate)]) -> JSONBytes:
    """Who the credential speaks for (a user, or an API key)."""
    body: dict[str, Any] = {"tenant_id": who.tenant_id, "tier": who.tier, "scopes": sorted(who.scopes), "kind": who.kind}
    if who.kind == "user":
        user = await services.user_admin.get(who, who.subject)
        if not user.active:
            raise user_not_found()
        body["user"] = user_resource(user)
    else:
        body["api_key_id"] = who.subject
    return JSONBytes(body)
