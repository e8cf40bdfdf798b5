"""`/v1/api-keys`: create (full key shown once), list, revoke. Needs the admin scope; tenant-scoped."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import Response

from gateway.api_keys import create_api_key, list_api_keys, revoke_api_key
from gateway.api_models import ApiKeyList, IssuedApiKey
from gateway.auth.deps import NO_STORE, Services
from gateway.auth.models import ApiKeyCreateBody, api_key_resource, issued_api_key_resource
from gateway.errors import ApiError
from gateway.openapi_docs import errors, success
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.post("", status_code=201, response_model=IssuedApiKey,
             responses={**success(201, "Created; `key` is shown only now", "Location"), **errors(422)})
async def create_key(body: ApiKeyCreateBody, services: Services, who: Admin) -> JSONBytes:
    scopes = tuple(dict.fromkeys(body.scopes))
    beyond = [s for s in scopes if not who.has_scope(s)]
    if beyond:
        raise ApiError(403, "insufficient_scope", "a key cannot hold scopes its creator lacks", scopes=beyond)
    issued = await create_api_key(services.engine, who.tenant_id, name=body.name, scopes=scopes)
    return JSONBytes(issued_api_key_resource(issued, datetime.now(UTC)), status_code=201,
                          headers={**NO_STORE, "Location": f"/v1/api-keys/{issued.id}"})


@router.get("", response_model=ApiKeyList, responses=errors(422))
async def list_keys(services: Services, who: Admin, include_revoked: bool = False) -> JSONBytes:
    keys = await list_api_keys(services.engine, who.tenant_id, include_revoked=include_revoked)
    return JSONBytes({"data": [api_key_resource(k) for k in keys]})


@router.delete("/{key_id}", status_code=204, response_class=Response)
async def revoke_key(key_id: str, services: Services, who: Admin) -> Response:
    if not await revoke_api_key(services.engine, who.tenant_id, key_id):
        raise ApiError(404, "api_key_not_found", "no such API key")
    services.api_keys.forget()  # this process at once; other processes within their cache TTL (5 s)
    return Response(status_code=204)
