"""`/v1/webhooks`: endpoints, signing secrets, the delivery log and replay. Thin: rules live in
gateway.webhook_service.

Scopes: changing where data goes (endpoints, secrets) needs `admin`; reading endpoints and the
delivery log needs `requests:read`; replaying a delivery needs `requests:write`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response

from gateway.api_models import (
    CreatedWebhookEndpoint,
    DefaultSecret,
    ReplayedCount,
    RotatedSecret,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookEndpoint,
    WebhookEndpointList,
)
from gateway.openapi_docs import errors, success
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope
from gateway.webhook_models import (
    CreateEndpointBody,
    ReplayFailedBody,
    RotateSecretBody,
    UpdateEndpointBody,
    delivery_resource,
    endpoint_resource,
)
from gateway.webhook_secrets import SigningSecretStore
from gateway.webhook_service import WebhookService
from gateway.webhook_signing import SecretBox

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Admin = Annotated[Principal, Depends(require_scope("admin"))]
Reader = Annotated[Principal, Depends(require_scope("requests:read"))]
Writer = Annotated[Principal, Depends(require_scope("requests:write"))]
DeliveryStatus = Literal["pending", "retrying", "succeeded", "failed"]


async def start(app: FastAPI) -> None:
    """Build the service and install the submit-time webhook check on the request service."""
    state = app.state
    secrets = SigningSecretStore(state.engine, SecretBox.from_settings(state.settings))
    state.webhook_service = WebhookService(state.settings, state.engine, state.producer, secrets)
    state.request_service.webhook_check = state.webhook_service.submit_columns


def _service(request: Request) -> WebhookService:
    service: WebhookService = request.app.state.webhook_service
    return service


@router.post("/endpoints", status_code=201, response_model=CreatedWebhookEndpoint,
             responses={**success(201, "Created; `secret` is shown only now", "Location"), **errors(422)})
async def create_endpoint(body: CreateEndpointBody, request: Request, who: Admin) -> JSONBytes:
    row, secrets, secret = await _service(request).create_endpoint(who, body)
    resource = endpoint_resource(row, secrets)
    resource["secret"] = secret  # shown only now
    return JSONBytes(resource, status_code=201, headers={"Location": f"/v1/webhooks/endpoints/{row.id}"})


@router.get("/endpoints", response_model=WebhookEndpointList)
async def list_endpoints(request: Request, who: Reader) -> JSONBytes:
    return JSONBytes({"data": [endpoint_resource(r, s) for r, s in await _service(request).list_endpoints(who)]})


@router.get("/endpoints/{endpoint_id}", response_model=WebhookEndpoint)
async def get_endpoint(endpoint_id: str, request: Request, who: Reader) -> JSONBytes:
    return JSONBytes(endpoint_resource(*await _service(request).get_endpoint(who, endpoint_id)))


@router.patch("/endpoints/{endpoint_id}", response_model=WebhookEndpoint, responses=errors(422))
async def update_endpoint(endpoint_id: str, body: UpdateEndpointBody, request: Request, who: Admin) -> JSONBytes:
    return JSONBytes(endpoint_resource(*await _service(request).update_endpoint(who, endpoint_id, body)))


@router.delete("/endpoints/{endpoint_id}", status_code=204, response_class=Response)
async def delete_endpoint(endpoint_id: str, request: Request, who: Admin) -> Response:
    await _service(request).delete_endpoint(who, endpoint_id)
    return Response(status_code=204)


@router.post("/endpoints/{endpoint_id}/rotate-secret", response_model=RotatedSecret, responses=errors(422))
async def rotate_endpoint_secret(
    endpoint_id: str, request: Request, who: Admin, body: RotateSecretBody | None = None
) -> JSONBytes:
    overlap = body.overlap_s if body else None
    return JSONBytes(await _service(request).rotate_secret(who, endpoint_id, overlap))


@router.get("/endpoints/{endpoint_id}/deliveries", response_model=WebhookDeliveryList,
            responses=errors(422, e422="invalid parameter or `cursor` (`invalid_cursor`)"))
async def list_endpoint_deliveries(
    endpoint_id: str, request: Request, who: Reader,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JSONBytes:
    rows, next_cursor = await _service(request).list_deliveries(
        who, endpoint_id=endpoint_id, request_id=None, status=status, limit=limit, cursor=cursor)
    return JSONBytes({"data": [delivery_resource(r) for r in rows], "next_cursor": next_cursor})


@router.get("/deliveries", response_model=WebhookDeliveryList,
            responses=errors(404, 422, e404="`endpoint_id` names no endpoint of the tenant "
                                             "(`webhook_endpoint_not_found`)",
                             e422="invalid parameter or `cursor` (`invalid_cursor`)"))
async def list_deliveries(
    request: Request, who: Reader,
    request_id: str | None = None,
    endpoint_id: str | None = None,
    status: DeliveryStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
) -> JSONBytes:
    rows, next_cursor = await _service(request).list_deliveries(
        who, endpoint_id=endpoint_id, request_id=request_id, status=status, limit=limit, cursor=cursor)
    return JSONBytes({"data": [delivery_resource(r) for r in rows], "next_cursor": next_cursor})


@router.post("/deliveries/replay-failed", status_code=202, response_model=ReplayedCount,
             responses=errors(404, 422, e404="`endpoint_id` names no endpoint of the tenant "
                                             "(`webhook_endpoint_not_found`)"))
async def replay_failed_deliveries(body: ReplayFailedBody, request: Request, who: Writer) -> JSONBytes:
    return JSONBytes({"replayed": await _service(request).replay_failed(who, body)}, status_code=202)


@router.get("/deliveries/{delivery_id}", response_model=WebhookDelivery)
async def get_delivery(delivery_id: str, request: Request, who: Reader) -> JSONBytes:
    row, attempts = await _service(request).get_delivery(who, delivery_id)
    return JSONBytes(delivery_resource(row, attempts))


@router.post("/deliveries/{delivery_id}/replay", status_code=202, response_model=WebhookDelivery,
             responses=errors(409, e409="the delivery is being attempted now, or its endpoint is disabled"))
async def replay_delivery(delivery_id: str, request: Request, who: Writer) -> JSONBytes:
    return JSONBytes(delivery_resource(await _service(request).replay(who, delivery_id)), status_code=202)


@router.get("/default-secret", response_model=DefaultSecret)
async def get_default_secret(request: Request, who: Admin) -> JSONBytes:
    """The secret signing webhooks sent to URLs given directly on a request (`webhook`)."""
    return JSONBytes({"secret": await _service(request).default_secret(who)})


@router.post("/default-secret/rotate", response_model=RotatedSecret, responses=errors(422))
async def rotate_default_secret(request: Request, who: Admin, body: RotateSecretBody | None = None) -> JSONBytes:
    overlap = body.overlap_s if body else None
    return JSONBytes(await _service(request).rotate_secret(who, None, overlap))
