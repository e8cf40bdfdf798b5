"""`/v1/users`: the tenant's users (admin scope). Another tenant's user is a 404."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway.api_models import ResetRequired, UserList, UserResource
from gateway.auth.deps import Services
from gateway.auth.models import InviteBody, RoleBody, user_resource
from gateway.openapi_docs import errors, success
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope

router = APIRouter(prefix="/v1/users", tags=["users"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.get("", response_model=UserList)
async def list_users(services: Services, who: Admin) -> JSONBytes:
    return JSONBytes({"data": [user_resource(u) for u in await services.user_admin.list(who)]})


@router.post("", status_code=201, response_model=UserResource,
             responses={**success(201, "Invited (the invitation mail is on its way)", "Location"),
                        **errors(409, 422, e409="the address is taken (`email_unavailable`)")})
async def invite_user(body: InviteBody, services: Services, who: Admin) -> JSONBytes:
    user = await services.user_admin.invite(who, body.email, body.role)
    return JSONBytes(user_resource(user), status_code=201, headers={"Location": f"/v1/users/{user.id}"})


@router.get("/{user_id}", response_model=UserResource)
async def get_user(user_id: str, services: Services, who: Admin) -> JSONBytes:
    return JSONBytes(user_resource(await services.user_admin.get(who, user_id)))


@router.patch("/{user_id}", response_model=UserResource,
              responses=errors(409, 422, e409="the tenant's last owner keeps the role (`last_owner`)"))
async def change_role(user_id: str, body: RoleBody, services: Services, who: Admin) -> JSONBytes:
    return JSONBytes(user_resource(await services.user_admin.set_role(who, user_id, body.role)))


@router.delete("/{user_id}", status_code=204, response_class=Response,
               responses=errors(409, e409="the tenant's last owner cannot be removed (`last_owner`)"))
async def remove_user(user_id: str, services: Services, who: Admin) -> Response:
    await services.user_admin.remove(who, user_id)
    return Response(status_code=204)


@router.post("/{user_id}/password-reset", status_code=202, response_model=ResetRequired)
async def force_password_reset(user_id: str, services: Services, who: Admin) -> JSONBytes:
    await services.passwords.force_reset(who, user_id)
    return JSONBytes({"status": "reset_required"}, status_code=202)
