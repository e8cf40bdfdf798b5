"""`/v1/auth/password`: change, reset request, reset confirm."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway.api_models import Accepted, PasswordChanged
from gateway.auth.deps import ClientAddress, Services
from gateway.auth.models import PasswordChangeBody, ResetConfirmBody, ResetRequestBody
from gateway.openapi_docs import errors
from gateway.responses import JSONBytes
from gateway.security import Principal, require_user_session

router = APIRouter(prefix="/v1/auth/password", tags=["auth"])

RESET_ACCEPTED = {"status": "accepted", "message": "If an account uses this address, a reset link is on its way."}


@router.post("/change", response_model=PasswordChanged,
             responses=errors(403, 422, 429, e403="wrong current password (`current_password_incorrect`), or not a "
                                             "user session"))
async def change_password(body: PasswordChangeBody, services: Services,
                          who: Annotated[Principal, Depends(require_user_session)]) -> JSONBytes:
    revoked = await services.passwords.change(who, body.current_password, body.new_password)
    return JSONBytes({"status": "changed", "revoked_sessions": revoked})


@router.post("/reset-request", status_code=202, response_model=Accepted, responses=errors(422, 429))
async def request_password_reset(body: ResetRequestBody, services: Services,
                                 address: ClientAddress) -> JSONBytes:
    await services.passwords.request_reset(body.email, address)
    return JSONBytes(RESET_ACCEPTED, status_code=202)


@router.post("/reset", status_code=204, response_class=Response,
             responses=errors(400, 422, e400="invalid or expired token (`invalid_or_expired_token`)"))
async def reset_password(body: ResetConfirmBody, services: Services) -> Response:
    """Also accepts an invitation token: that is how an invited user sets a first password."""
    await services.passwords.confirm_reset(body.token, body.new_password)
    return Response(status_code=204)
