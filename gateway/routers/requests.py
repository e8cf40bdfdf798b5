"""`/v1/requests`: submit, poll, list, cancel. Thin: rules live in gateway.request_service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from gateway.api_models import RequestList, RequestResource
from gateway.long_poll import prefer_wait, wait_for_outcome
from gateway.openapi_docs import SSE_CONTENT, SUBMIT_HEADERS, body_ref, errors, success
from gateway.request_models import SubmitRequestBody, request_resource
from gateway.request_service import RequestService
from gateway.responses import JSONBytes
from gateway.security import Principal, authorize, require_scope
from schemas.events import RequestStatus

router = APIRouter(prefix="/v1/requests", tags=["requests"])


def _service(request: Request) -> RequestService:
    return request.app.state.request_service


_SUBMIT_BODY = TypeAdapter(SubmitRequestBody)


_SUBMIT_DOC = body_ref(
    SubmitRequestBody,
    {"messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 4},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}],
     "max_tokens": 4, "conversation_id": "conv-42", "temperature": 0.7, "seed": 7},
)
_SUBMIT_DOC["parameters"] = [
    {"name": "Idempotency-Key", "in": "header", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255},
     "description": "same key + same body = the same request (answered again, `Idempotent-Replayed: true`); "
                    "same key + another body = 409 `idempotency_key_reused`"},
    {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
     "description": "`wait=N`: hold the answer up to N seconds (capped by the server) until the request ends; "
                    "`Preference-Applied` says what was applied"},
]


# The fast lane (gateway/fast_lane.py) calls this function directly for POST /v1/requests: the
# decorator's arguments are documentation only and never run on the hot path.
@router.post(
    "", status_code=202, response_model=RequestResource, openapi_extra=_SUBMIT_DOC,
    responses={200: {"description": "`\"stream\": true` or `Accept: text/event-stream`: the request is durable "
                          "and its events follow (as GET /v1/requests/{id}/stream)", "content": SSE_CONTENT},
               **success(202, "Accepted: the request is durable and queued (with `Prefer: wait=N`, possibly "
                              "already finished). `\"stream\": true` or `Accept: text/event-stream` answers "
                              "the SSE stream of GET /v1/requests/{id}/stream instead",
                         *SUBMIT_HEADERS, "Preference-Applied"),
               **errors(409, 422, 429, e409="this Idempotency-Key was used with another body "
                                            "(`idempotency_key_reused`)",
                        e422="invalid body (`invalid_request`), `max_tokens` above the tier's cap "
                             "(`max_tokens_exceeds_tier_cap`), an Idempotency-Key outside 1..255 characters, "
                             "or webhook/autonomy fields this request may not use"),
               **errors(503, e503="the queue or the database is unavailable; retry with the same "
                                  "Idempotency-Key")},
)
async def submit_request(request: Request) -> JSONBytes:
    """Queue a chat request.

    Answers 202 with the request (status `queued`, or further on with `Prefer: wait=N`) and its
    `Location`. `max_tokens` defaults to min(128, the tier's cap) and may not exceed the tier's cap
    (free 256, pro 1024, enterprise 4096 by default: 422 `max_tokens_exceeds_tier_cap`). `webhook_events_filter`
    needs `webhook`; `webhook` and `webhook_endpoint_id` exclude each other; `autonomy_level` may not be
    above the level the policy resolves for `task`/`context` (docs/autonomy.md)."""
    # The hot path of the API: it reads headers and body itself instead of through FastAPI's dependency
    # solver (which cost a quarter of a submit's CPU); errors keep the same shapes.
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


@router.get("", response_model=RequestList, responses=errors(422))
async def list_requests(
    request: Request,
    who: Annotated[Principal, Depends(require_scope("requests:read"))],
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: str | None = None,
    status: RequestStatus | None = None,
) -> JSONBytes:
    rows, next_cursor = await _service(request).list(who, limit, cursor, status.value if status else None)
    return JSONBytes({"data": [request_resource(r) for r in rows], "next_cursor": next_cursor})


@router.get("/{request_id}", response_model=RequestResource, responses=errors(422))
async def get_request(
    request_id: str, request: Request, who: Annotated[Principal, Depends(require_scope("requests:read"))],
    wait: Annotated[float | None, Query(ge=0, description="long-poll: hold up to N seconds (capped)")] = None,
) -> JSONBytes:
    if wait:
        wait = min(wait, request.app.state.settings.long_poll_max_s)
        return JSONBytes(await _wait(request, who, request_id, wait))
    return JSONBytes(request_resource(await _service(request).get(who, request_id)))


@router.post("/{request_id}/cancel", status_code=202, response_model=RequestResource,
             responses=errors(409, e409="the request already ended (`request_already_finished`)"))
async def cancel_request(
    request_id: str, request: Request, who: Annotated[Principal, Depends(require_scope("requests:write"))]
) -> JSONBytes:
    row = await _service(request).cancel(who, request_id)
    return JSONBytes(request_resource(row), status_code=202)
