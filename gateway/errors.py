"""The API's one error type and its mapping to HTTP: every refusal has a stable machine-readable code."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import iter_route_contexts
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.responses import JSONBytes


class ApiError(Exception):
    """Raised by services; the handler turns it into ``{"error": {"code", "message", ...}}``."""

    def __init__(
        self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return {"error": body}


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def validation_problems(exc: RequestValidationError) -> list[dict[str, Any]]:
    return [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]


_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03"}  # admin_shutdown, crash_shutdown, cannot_connect_now
_DATABASE_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite")


def database_unavailable(exc: BaseException) -> bool:
    """True for a lost or refused database connection (the server stopped, restarting, unreachable),
    False for anything else, such as a constraint violation: those are bugs or bad input, never a 503."""
    if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)):
        return True
    if isinstance(exc, sa_exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        # refused at connect: the server is shutting down or starting (57P0x), or a connection exception (08)
        orig = exc.orig
        state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
        return isinstance(state, str) and (state.startswith("08") or state in _UNAVAILABLE_STATES)
    if isinstance(exc, (ConnectionError, TimeoutError)):
        # asyncpg raises the socket's own error when it cannot connect; only one raised from the
        # database client's code is the database's (a webhook or usage-service call has its own handling)
        tb = exc.__traceback__
        while tb is not None:
            if tb.tb_frame.f_globals.get("__name__", "").startswith(_DATABASE_MODULES):
                return True
            tb = tb.tb_next
    return False


_UNSTORABLE_TEXT_STATES = {"22021", "22P05"}  # character_not_in_repertoire, untranslatable_character


def text_not_storable(exc: BaseException) -> bool:
    """PostgreSQL refused a string it cannot hold (NUL): bad input the schema missed, never a 500."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    orig = exc.orig
    state = getattr(orig, "sqlstate", None) or getattr(getattr(orig, "__cause__", None), "sqlstate", None)
    return state in _UNSTORABLE_TEXT_STATES


def invalid_text_error() -> ApiError:
    """The refusal for `text_not_storable(exc)`."""
    return ApiError(422, "invalid_text", "text may not contain the NUL character (U+0000) or unpaired surrogates")


def database_unavailable_error() -> ApiError:
    """The refusal for `database_unavailable(exc)`: a 503 the client retries (a submit with its key)."""
    return ApiError(503, "database_unavailable",
                    "the database is unavailable; retry (a submit with the same Idempotency-Key)",
                    headers={"Retry-After": "1"})


def allowed_methods(app: FastAPI, path: str) -> str:
    """`Allow` of a 405: every method of the path's routes. Starlette names only the first route's
    methods, and a path such as /v1/api-keys has one route per method. Where templates overlap
    (/v1/webhooks/deliveries/replay-failed and /v1/webhooks/deliveries/{delivery_id}) the one with the
    fewest parameters is the path's: the document lists its methods under it."""
    by_template: dict[str, set[str]] = {}
    for route in iter_route_contexts(app.routes):
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(path):
            by_template.setdefault(route.path_format, set()).update(route_methods)
    if not by_template:
        return ""
    template = min(by_template, key=lambda t: (t.count("{"), list(by_template).index(t)))
    return ", ".join(sorted(by_template[template]))


def _openai_error(status: int, code: str, message: str, param: str | None = None,
                  headers: dict[str, str] | None = None) -> JSONBytes:
    """The same refusal in OpenAI's error body, on the OpenAI-compatible routes (docs/openai.md)."""
    from gateway.openai_compat import openai_error_body, openai_status

    status = openai_status(status)
    return JSONBytes(openai_error_body(status, code, message, param), status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    from gateway.openai_compat import is_openai_path, param_of_problems

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONBytes:
        if is_openai_path(request.url.path):
            return _openai_error(exc.status, exc.code, exc.message, exc.details.get("param"), exc.headers)
        return JSONBytes(
            error_body(exc.code, exc.message, **exc.details), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONBytes:
        problems = validation_problems(exc)
        if is_openai_path(request.url.path):
            param = param_of_problems(problems)
            first = problems[0] if problems else {}
            message = f"invalid value for {param}: {first.get('msg', '')}" if param else "the request is invalid"
            return _openai_error(400, "invalid_request", message, param)
        return JSONBytes(
            error_body("invalid_request", "the request body or parameters are invalid", problems=problems),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONBytes:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request.app, request.url.path)}
        if is_openai_path(request.url.path):
            return _openai_error(exc.status_code, code, str(exc.detail), None, headers)
        return JSONBytes(error_body(code, str(exc.detail)), status_code=exc.status_code, headers=headers)

    async def _database(request: Request, exc: Exception) -> JSONBytes:
        if text_not_storable(exc):
            return await _api_error(request, invalid_text_error())
        if not database_unavailable(exc):
            raise exc  # a real fault: the server's 500 handler logs it
        return await _api_error(request, database_unavailable_error())

    for kind in (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, sa_exc.DBAPIError,
                 ConnectionError, TimeoutError):
        app.add_exception_handler(kind, _database)
