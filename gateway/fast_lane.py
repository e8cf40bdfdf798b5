"""The submit fast lane: `POST /v1/requests` skips Starlette's routing and middleware layers.

Submitting is the API's hot path, and on it the framework layers (error middleware, exception
middleware, exit-stack middleware, route matching, endpoint wrapping) cost as much CPU as the submit's
own work. This ASGI layer sits just inside the application and calls the very same route function
(`gateway.routers.requests.submit_request`) directly, rendering errors exactly as the app's exception
handlers do. Every other path goes through the full stack unchanged; the route stays registered in
FastAPI, so OpenAPI documents it as usual.
"""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import (
    ApiError,
    database_unavailable,
    database_unavailable_error,
    error_body,
    invalid_text_error,
    text_not_storable,
    validation_problems,
)
from gateway.metrics import observe_request
from gateway.responses import JSONBytes
from gateway.routers.requests import submit_request

log = logging.getLogger(__name__)
ROUTE = "/v1/requests"


class SubmitFastLane:
    def __init__(self, inner: ASGIApp) -> None:
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != ROUTE or scope["method"] != "POST":
            await self.inner(scope, receive, send)
            return
        start = time.perf_counter()
        request = Request(scope, receive)
        try:
            response = await submit_request(request)
        except ApiError as exc:
            response = _api_error(exc)
        except RequestValidationError as exc:
            response = JSONBytes(error_body("invalid_request", "the request body or parameters are invalid",
                                            problems=validation_problems(exc)), status_code=422)
        except Exception as exc:
            if text_not_storable(exc):  # e.g. a NUL in `webhook_endpoint_id`, looked up in PostgreSQL
                response = _api_error(invalid_text_error())
            elif database_unavailable(exc):
                response = _api_error(database_unavailable_error())
            else:
                log.exception("submit failed")
                response = JSONBytes(error_body("internal_error", "internal error"), status_code=500)
        await response(scope, receive, send)
        principal = (scope.get("state") or {}).get("principal")
        observe_request(ROUTE, "POST", response.status_code, getattr(principal, "tier", ""),
                        time.perf_counter() - start)


def _api_error(exc: ApiError) -> JSONBytes:
    return JSONBytes(error_body(exc.code, exc.message, **exc.details), status_code=exc.status, headers=exc.headers)


def install_fast_lane(app: FastAPI) -> None:
    build = app.build_middleware_stack

    def build_with_fast_lane() -> ASGIApp:
        return SubmitFastLane(build())

    app.build_middleware_stack = build_with_fast_lane  # type: ignore[method-assign]
