"""`/v1/requests`: submit, poll, list, cancel. Thin: rules live in gateway.request_service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from gateway.long_poll import prefer_wait, wait_for_outcome
from gateway.request_models import SubmitRequestBody, request_resource
from gateway.request_service import RequestService
from gateway.responses import JSONBytes
from gateway.security import Principal, authorize, require_scope
from schemas.events import RequestStatus

router = APIRouter(prefix="/v1/requests", tags=["requests"])


def _service(request: Request) -> RequestService:
    return request.app.state.request_service


_SUBMIT_BODY = TypeAdapter(SubmitRequestBody)


@router.post(
    "", status_code=202,
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": SubmitRequestBody.model_json_schema(ref_template="#/components/schemas/{model}")}}},
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string"}},
                       {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "wait=N: hold the answer up to N seconds until the request ends"}]},
)
async def submit_request(request: Request) -> JSONBytes:
    """Queue a chat request. The hot path of the API: it reads headers and body itself instead of through
    FastAPI's dependency solver (which cost a quarter of a submit's CPU); errors keep the same shapes."""
    who = await authorize(request, "requests:write")
    raw = await request.body()
    try:
        body = _SUBMIT_BODY.validate_json(raw)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    headers = request.headers
    limits = request.app.state.limits
    admission = await limits.admit(who, body)  # raises the 429s (gateway.limits)
    try:
        outcome = await _service(request).submit(who, body, headers.get("idempotency-key"),
                                                 request_id=admission.request_id)
        admission.bind(outcome.replayed)
    finally:
        # unbound: the submit failed before a request existed; replayed: admitted when first submitted
        if not admission.bound or admission.replayed:
            await limits.give_back(admission)
    resource = request_resource(outcome.row)
    response_headers = {"Location": f"/v1/requests/{resource['id']}", **admission.headers}
    if outcome.replayed:
        response_headers["Idempotent-Replayed"] = "true"
    if body.stream or "text/event-stream" in (headers.get("accept") or ""):
        from gateway.routers.streaming import native_stream

        return native_stream(request, who, resource, cancel_on_disconnect=body.cancel_on_disconnect,  # type: ignore[return-value]
                             headers=response_headers)
    wait = prefer_wait(headers.get("prefer"))
    if wait is not None:
        wait = min(wait, request.app.state.settings.long_poll_max_s)
        resource = await _wait(request, who, resource["id"], wait)
        response_headers["Preference-Applied"] = f"wait={wait:g}"
    return JSONBytes(resource, status_code=202, headers=response_headers)


async def _wait(request: Request, who: Principal, request_id: str, seconds: float) -> dict:
    service = _service(request)
    return await wait_for_outcome(request.app.state.results_tail, lambda: service.get(who, request_id),
                                  request_id, seconds)


@router.get("")
async def list_requests(
    request: Request,
    who: Annotated[Principal, Depends(require_scope("requests:read"))],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    status: RequestStatus | None = None,
) -> JSONBytes:
    rows, next_cursor = await _service(request).list(who, limit, cursor, status.value if status else None)
    return JSONBytes({"data": [request_resource(r) for r in rows], "next_cursor": next_cursor})


@router.get("/{request_id}")
async def get_request(
    request_id: str, request: Request, who: Annotated[Principal, Depends(require_scope("requests:read"))],
    wait: Annotated[float | None, Query(ge=0, description="long-poll: hold up to N seconds (capped)")] = None,
) -> JSONBytes:
    if wait:
        wait = min(wait, request.app.state.settings.long_poll_max_s)
        return JSONBytes(await _wait(request, who, request_id, wait))
    return JSONBytes(request_resource(await _service(request).get(who, request_id)))


@router.post("/{request_id}/cancel", status_code=202)
async def cancel_request(
    request_id: str, request: Request, who: Annotated[Principal, Depends(require_scope("requests:write"))]
) -> JSONBytes:
    row = await _service(request).cancel(who, request_id)
    return JSONBytes(request_resource(row), status_code=202)
