"""`/v1/auth`: register, verify email, login, refresh, logout (this session / everywhere), me."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway.auth.clock import utcnow
from gateway.auth.deps import NO_STORE, ClientAddress, Services
from gateway.auth.models import LoginBody, RefreshBody, RegisterBody, TokenBody, token_response, user_resource
from gateway.auth.refusals import user_not_found
from gateway.responses import JSONBytes
from gateway.security import Principal, authenticate, require_user_session

router = APIRouter(prefix="/v1/auth", tags=["auth"])

REGISTRATION_ACCEPTED = {
    "status": "accepted",
    "message": "If this address can be registered, the account is created and a confirmation mail is on its way.",
}


@router.post("/register", status_code=202)
async def register(body: RegisterBody, services: Services, address: ClientAddress) -> JSONBytes:
    await services.registration.register(body.email, body.password, body.tenant_name, address)
    return JSONBytes(REGISTRATION_ACCEPTED, status_code=202)


@router.post("/verify-email", status_code=204)
async def verify_email(body: TokenBody, services: Services) -> Response:
    await services.registration.verify_email(body.token)
    return Response(status_code=204)


@router.post("/login")
async def login(body: LoginBody, services: Services, address: ClientAddress) -> JSONBytes:
    signed_in = await services.login.login(body.email, body.password, address)
    return JSONBytes(token_response(signed_in, utcnow()), headers=NO_STORE)


@router.post("/refresh")
async def refresh(body: RefreshBody, services: Services) -> JSONBytes:
    signed_in = await services.login.refresh(body.refresh_token)
    return JSONBytes(token_response(signed_in, utcnow()), headers=NO_STORE)


@router.post("/logout", status_code=204)
async def logout(services: Services, who: Annotated[Principal, Depends(require_user_session)]) -> Response:
    await services.login.logout(who)
    return Response(status_code=204)


@router.post("/logout-all")
async def logout_everywhere(services: Services,
                            who: Annotated[Principal, Depends(require_user_session)]) -> JSONBytes:
    return JSONBytes({"revoked_sessions": await services.login.logout_everywhere(who)})


@router.get("/me")
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
