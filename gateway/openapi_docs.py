"""The OpenAPI document of the gateway (and the auth app): what cuts across routes.

Routes declare their success model (`response_model`, documentation only: they return pre-encoded JSON)
and the refusals particular to them (`responses=errors(...)`). This module adds what every route shares:

- the HTTP bearer security scheme, on every operation that authenticates, with the scope or role it
  needs written in the operation's description (read off the route's `require_scope`/`require_role`
  dependency, or `MANUAL_AUTH` for the routes that authorise by hand for speed);
- 401 (with `WWW-Authenticate`) and 403 where a credential is checked, 404 where a path names a
  resource, 503 (`database_unavailable`, with `Retry-After`) everywhere, and FastAPI's 422 re-pointed at
  the error body the handlers really send (gateway.errors);
- on the OpenAI-compatible paths the error body is OpenAI's, and a 422 is answered as 400;
- the request bodies the hot routes parse themselves (`openapi_extra`) registered as components, so
  their `$ref`s resolve.

`lotabots schemas openapi` writes the document to docs/openapi.json; tests/test_openapi_contract.py fails
when the two drift.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from gateway.api_models import ErrorBody, OpenAIErrorBody

REF = "#/components/schemas/{model}"
SECURITY_SCHEME = "bearerAuth"

_RETRY_AFTER = {"description": "seconds to wait before retrying", "schema": {"type": "string", "pattern": "^[0-9]+$"}}
HEADERS: dict[str, dict[str, Any]] = {
    "Location": {"description": "path of the created (or submitted) resource", "schema": {"type": "string"}},
    "RateLimit-Policy": {"description": "the tier's quota policies (IETF draft-ietf-httpapi-ratelimit-headers)",
                         "schema": {"type": "string"}},
    "RateLimit": {"description": "what is left of each policy (IETF draft-ietf-httpapi-ratelimit-headers)",
                  "schema": {"type": "string"}},
    "Retry-After": _RETRY_AFTER,
    "Idempotent-Replayed": {"description": "`true` when the answer replays an earlier submit with this "
                                           "Idempotency-Key (no new request was made)",
                            "schema": {"type": "string", "enum": ["true"]}},
    "Preference-Applied": {"description": "the `Prefer: wait=N` actually applied (N capped by the server)",
                           "schema": {"type": "string"}},
    "WWW-Authenticate": {"description": "RFC 6750 Bearer challenge", "schema": {"type": "string"}},
    "LotaBots-Request-Id": {"description": "the id of the native request behind this answer",
                            "schema": {"type": "string"}},
    "Allow": {"description": "the methods this path supports", "schema": {"type": "string"}},
}
# One Server-Sent Event as a client's parser yields it (the body is a sequence of them; `data` is the
# JSON text of the event's payload, or `[DONE]` on the OpenAI routes).
SSE_EVENT: dict[str, Any] = {"type": "object", "properties": {
    "event": {"type": "string", "description": "`token`, `restart` or `done` (native); absent on OpenAI routes"},
    "data": {"type": "string"}, "id": {"type": "string"}, "retry": {"type": "integer"}}}
SSE_CONTENT: dict[str, Any] = {"text/event-stream": {"schema": SSE_EVENT}}
SUBMIT_HEADERS = ("Location", "RateLimit-Policy", "RateLimit", "Idempotent-Replayed")

_DESCRIPTIONS = {
    400: "Bad request (an invalid or expired one-time token; on OpenAI routes any invalid parameter)",
    401: "Missing, invalid, expired or revoked credential",
    403: "The credential lacks the scope or role this call needs (or the action is not allowed)",
    404: "No such resource (another tenant's resources do not exist for the caller)",
    409: "Conflict with the resource's current state",
    422: "The body or parameters are invalid (`invalid_request`, with `details.problems`), or a rule "
         "the schema cannot express was broken (its own code)",
    429: "Rate limit or quota exceeded; retry after `Retry-After` seconds",
    503: "A dependency (database, queue, usage service) is unavailable; retry after `Retry-After` seconds",
    504: "The request did not finish in time; it goes on (poll it)",
}
_ERROR_HEADERS = {401: ("WWW-Authenticate",), 429: ("Retry-After", "RateLimit-Policy", "RateLimit"),
                  503: ("Retry-After",)}


def headers(*names: str) -> dict[str, Any]:
    return {name: HEADERS[name] for name in names}


def errors(*statuses: int, openai: bool = False, **descriptions: str) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for refusals: the shared error body (OpenAI's on OpenAI routes).
    `descriptions` override by status, as `e409="..."`."""
    model = OpenAIErrorBody if openai else ErrorBody
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"model": model,
                                 "description": descriptions.get(f"e{status}", _DESCRIPTIONS.get(status, "Error"))}
        if status in _ERROR_HEADERS:
            entry["headers"] = headers(*_ERROR_HEADERS[status])
        out[status] = entry
    return out


def success(status: int, description: str, *header_names: str, **extra: Any) -> dict[int | str, dict[str, Any]]:
    """`responses=` entry that adds headers (and a description) to the route's success answer."""
    return {status: {"description": description, "headers": headers(*header_names), **extra}}


def body_ref(model: type[BaseModel], *examples: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that parses its body itself: a `$ref` to `model` (registered by
    install_openapi) instead of the model's inline schema, whose `$defs` no document resolves."""
    content: dict[str, Any] = {"schema": {"$ref": REF.format(model=model.__name__)}}
    if examples:
        content["examples"] = {f"example{i}": {"value": e} for i, e in enumerate(examples, 1)}
    BODY_MODELS.append(model)
    return {"requestBody": {"required": True, "content": {"application/json": content}}}


BODY_MODELS: list[type[BaseModel]] = []  # the models body_ref pointed at (registered as components)

# Routes that authorise by hand (no dependency to read the need from): endpoint function -> scope, or
# "" for any valid credential.
MANUAL_AUTH = {
    "submit_request": "requests:write",
    "stream_request": "requests:read",
    "create_chat_completion": "requests:write",
    "list_models": "",
    "get_model": "",
    "create_response": "requests:write",
    "retrieve_response": "requests:read",
    "cancel_response": "requests:write",
}
OPENAI_PREFIXES = ("/v1/chat/", "/v1/models", "/v1/responses")


def _auth_need(route: Any) -> tuple[bool, str]:
    """(authenticates?, what it needs in words) of one route."""
    name = getattr(route.endpoint, "__name__", "")
    if name in MANUAL_AUTH:
        scope = MANUAL_AUTH[name]
        return True, f"scope `{scope}`" if scope else "any valid credential (API key or access token)"
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        call = getattr(dep.call, "__name__", "")
        if call.startswith("require_role_"):
            return True, "a signed-in user with role " + " or ".join(f"`{r}`" for r in call[13:].split("_"))
        if call == "require_user_session":
            return True, "a user's access token with a login session (API keys are refused)"
        if call.startswith("require_") and call not in ("require_user_session",):
            scope = call[len("require_"):].replace("_", ":", 1)
            note = "" if scope.startswith("platform:") else " (the `admin` scope implies every tenant scope)"
            return True, f"scope `{scope}`{note}"
        if call == "authenticate":
            return True, "any valid credential (API key or access token)"
        stack.extend(dep.dependencies)
    return False, ""


def _register(doc: dict[str, Any], models: Iterable[type[BaseModel]]) -> None:
    models = list(dict.fromkeys(models))
    if not models:
        return
    _, top = models_json_schema([(m, "validation") for m in models], ref_template=REF)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)


def _error_ref(openai: bool) -> dict[str, Any]:
    return {"$ref": REF.format(model=(OpenAIErrorBody if openai else ErrorBody).__name__)}


def _error_response(status: int, openai: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {"description": _DESCRIPTIONS.get(status, "Error"),
                             "content": {"application/json": {"schema": _error_ref(openai)}}}
    if status in _ERROR_HEADERS:
        entry["headers"] = headers(*_ERROR_HEADERS[status])
    return entry


def _uses(doc: Any, ref: str) -> bool:
    if isinstance(doc, dict):
        return doc.get("$ref") == ref or any(_uses(v, ref) for v in doc.values())
    if isinstance(doc, list):
        return any(_uses(v, ref) for v in doc)
    return False


def build_openapi(app: FastAPI, description: str = "") -> dict[str, Any]:
    # FastAPI keeps included routers as such (app.routes holds `_IncludedRouter`s): walk their route
    # contexts, which carry the prefixed path and proxy the APIRoute's attributes.
    routes = [r for r in iter_route_contexts(app.routes)
              if isinstance(r.original_route, APIRoute) and r.include_in_schema]
    doc = get_openapi(title=app.title, version=app.version, description=description or app.description,
                      routes=app.routes)
    components = doc.setdefault("components", {})
    _register(doc, [*BODY_MODELS, ErrorBody, OpenAIErrorBody])
    components.setdefault("securitySchemes", {})[SECURITY_SCHEME] = {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <credential>`: an API key (`lb_...`, scopes chosen when it is "
                       "created) or a user's JWT access token from `POST /v1/auth/login` (the scopes of the "
                       "user's role: owner/admin all, member requests:write+requests:read+usage:read, finance "
                       "usage:read+billing:read)."}
    names: dict[str, str] = {}
    for route in routes:
        for method in sorted(route.methods - {"HEAD"}):
            op = doc["paths"][route.path_format][method.lower()]
            # the endpoint's own name (`submit_request`), so generated clients read like the code
            name = route.name if len(route.methods - {"HEAD"}) == 1 else f"{route.name}_{method.lower()}"
            if names.setdefault(name, route.path_format) != route.path_format:
                raise ValueError(f"two operations named {name}: {names[name]} and {route.path_format}")
            op["operationId"] = name
            _finish_operation(route, op)
    validation_ref = REF.format(model="HTTPValidationError")
    if not _uses(doc["paths"], validation_ref):
        for name in ("HTTPValidationError", "ValidationError"):
            components.get("schemas", {}).pop(name, None)
    return doc


def _finish_operation(route: Any, op: dict[str, Any]) -> None:
    openai = route.path_format.startswith(OPENAI_PREFIXES)
    responses: dict[str, Any] = op.setdefault("responses", {})
    authenticates, need = _auth_need(route)
    if authenticates:
        op["security"] = [{SECURITY_SCHEME: []}]
        line = f"**Authorization:** bearer credential; needs {need}."
        op["description"] = f"{op['description']}\n\n{line}" if op.get("description") else line
        responses.setdefault("401", _error_response(401, openai))
        if "any valid credential" not in need:
            responses.setdefault("403", _error_response(403, openai))
    else:
        op["security"] = []  # public: no credential
        line = "**Authorization:** none (public)."
        op["description"] = f"{op['description']}\n\n{line}" if op.get("description") else line
    if "{" in route.path_format:
        responses.setdefault("404", _error_response(404, openai))
    responses.setdefault("503", _error_response(503, openai))
    validation = responses.pop("422", None)
    if validation is not None or openai:
        if openai:  # the OpenAI routes answer invalid parameters with 400 (OpenAI's status)
            responses.setdefault("400", _error_response(400, True))
        else:
            responses["422"] = _error_response(422, False) if _is_default(validation) else validation
    if "requestBody" in op and "400" not in responses:  # bytes that are not JSON at all
        responses["400"] = {**_error_response(400, openai), "description": _BODY_NOT_JSON}
    for status, entry in responses.items():
        if status.startswith(("4", "5")):  # refusals are JSON, whatever the route's own media type
            schema = _error_ref(openai) if openai else _media_schema(entry) or _error_ref(False)
            entry["content"] = {"application/json": {"schema": schema}}
    op["responses"] = dict(sorted(responses.items()))


_BODY_NOT_JSON = "The body is not JSON (`bad_request`: it could not be parsed)"


def _media_schema(entry: dict[str, Any]) -> dict[str, Any] | None:
    for media in entry.get("content", {}).values():
        if "schema" in media:
            return media["schema"]
    return None


def _is_default(entry: dict[str, Any] | None) -> bool:
    return entry is None or _uses(entry, REF.format(model="HTTPValidationError"))


API_DESCRIPTION = """The LotaBots public API: submit chat requests (`POST /v1/requests`, answered 202 at once with
the request's id and `Location`), poll them (`GET /v1/requests/{id}`, or `Prefer: wait=N` / `?wait=N`
long-polls), stream them (SSE), cancel them, decide on them (levels of autonomy), and manage webhooks,
autonomy policies, API keys, users and usage. OpenAI-compatible routes: `/v1/chat/completions`,
`/v1/models`, `/v1/responses`.

Errors: every refusal of the native API has the body `{"error": {"code", "message", "details"?}}` with a
stable machine-readable `code`; the OpenAI-compatible routes answer OpenAI's error body
`{"error": {"message", "type", "param", "code"}}` (and 400 where the native API says 422).
Submits answer with `RateLimit-Policy` and `RateLimit` fields; 429 and 503 carry `Retry-After`.
A 405 carries `Allow` with the path's methods."""


def install_openapi(app: FastAPI, description: str = API_DESCRIPTION) -> None:
    """Replace `app.openapi` with the finished document (built once, then cached like FastAPI's)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app, description)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def openapi_json() -> str:
    """The gateway's document as docs/openapi.json holds it: the default deployment (auth embedded),
    keys in the app's order, two-space indents."""
    import json

    from gateway.app import create_app
    from lotabots.settings import Settings

    app = create_app(Settings(auth_embedded=True))
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False) + "\n"
