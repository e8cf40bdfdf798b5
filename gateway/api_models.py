"""Response bodies of the public API, as the OpenAPI document shows them (docs/openapi.json).

The routes build their answers as dicts and return pre-encoded JSON (gateway.responses.JSONBytes), so
these models are documentation only: FastAPI returns a `Response` as it is and never validates or
re-serialises through them (nothing here is on a hot path). tests/test_openapi_contract.py and the
schemathesis suite check that what the routes return matches them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.autonomy_levels import AutonomyLevel
from schemas.events import RequestStatus


class _Out(BaseModel):
    # Answers may gain fields (additive changes are compatible); clients ignore what they do not know.
    model_config = ConfigDict(extra="allow")


# ---- errors -----------------------------------------------------------------------------------------
class ErrorDetail(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. `insufficient_scope`")
    message: str = Field(description="for people; may change")
    details: dict[str, Any] | None = Field(default=None, description="code-specific fields (absent when none)")


class ErrorBody(BaseModel):
    """Every refusal of the native API: `{"error": {"code", "message", "details"?}}`."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"code": "insufficient_scope", "message": "this call needs the 'requests:write' scope",
                   "details": {"required_scope": "requests:write"}}}]})
    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, "
                                  "rate_limit_error or server_error")
    param: str | None = None
    code: str | None = None


class OpenAIErrorBody(BaseModel):
    """Refusals on the OpenAI-compatible routes use OpenAI's error body (docs/openai.md)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"error": {"message": "The model `gpt-4` does not exist or you do not have access to it",
                   "type": "invalid_request_error", "param": "model", "code": "model_not_found"}}]})
    error: OpenAIErrorDetail


# ---- requests ---------------------------------------------------------------------------------------
class RequestOutput(_Out):
    text: str | None
    finish_reason: str | None


class RequestFailure(_Out):
    code: str
    message: str | None


class TokenUsage(_Out):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class RequestTimings(_Out):
    created_at: datetime | None
    started_at: datetime | None
    first_token_at: datetime | None
    finished_at: datetime | None
    queue_ms: float | None = None
    run_ms: float | None = None


class AutonomyDecision(_Out):
    kind: str
    by: str | None
    at: datetime | None


class RequestAutonomy(_Out):
    level: AutonomyLevel
    rule: dict[str, Any] | None = Field(default=None, description="the rule that resolved the level (scope, "
                                                                   "level, and the rule's id where one matched)")
    task: str | None
    context: str | None
    no_ai: bool
    presentation: str | None = Field(description="what the user gets: suggestions, draft, advice or answer; "
                                                 "null at No AI")
    needs_decision: bool
    decision: AutonomyDecision | None
    action: dict[str, Any] | None
    suggestions: list[Any] | None = None


class RequestResource(_Out):
    """A chat request as submit, poll, list, cancel and the decisions show it."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{
        "id": "req_01JF3W1Q2Z8K7M9N0P4R5S6T7V", "object": "request", "status": "succeeded", "tier": "pro",
        "conversation_id": None, "created_at": "2026-12-01T10:00:00+00:00",
        "input": {"messages": [{"role": "user", "content": "Say hi"}]},
        "params": {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0, "stop": [], "seed": None},
        "output": {"text": "Hi! How can I help?", "finish_reason": "stop"}, "error": None,
        "usage": {"prompt_tokens": 31, "completion_tokens": 7, "total_tokens": 38},
        "timings": {"created_at": "2026-12-01T10:00:00+00:00", "started_at": "2026-12-01T10:00:00.020000+00:00",
                    "first_token_at": "2026-12-01T10:00:00.060000+00:00",
                    "finished_at": "2026-12-01T10:00:00.200000+00:00", "queue_ms": 20.0, "run_ms": 180.0},
        "autonomy": None}]})
    id: str
    object: Literal["request"]
    status: RequestStatus
    tier: str
    conversation_id: str | None
    created_at: datetime | None
    input: dict[str, Any]
    params: dict[str, Any]
    output: RequestOutput | None
    error: RequestFailure | None
    usage: TokenUsage | None
    timings: RequestTimings
    autonomy: RequestAutonomy | None


class RequestList(_Out):
    data: list[RequestResource]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class AuditEntry(_Out):
    event: str
    actor: str | None
    actor_kind: str | None
    level: str | None
    at: datetime | None
    detail: dict[str, Any] | None


class RequestAudit(_Out):
    request_id: str
    data: list[AuditEntry]


# ---- autonomy -------------------------------------------------------------------------------------
class AutonomyRule(_Out):
    id: str
    object: Literal["autonomy_rule"]
    scope: str
    kind: str = Field(description="default, task, context or task_context")
    owner: Literal["user", "tenant"]
    user_id: str | None
    task: str | None
    context: str | None
    level: AutonomyLevel
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class AutonomyRuleList(_Out):
    data: list[AutonomyRule]


class TenantLevels(_Out):
    default_level: AutonomyLevel | None
    max_level: AutonomyLevel | None
    configured: bool
    updated_by: str | None = None
    updated_at: datetime | None = None


class AutonomyPolicy(_Out):
    tenant: TenantLevels
    rules: list[AutonomyRule]


class AutonomyResolution(_Out):
    level: AutonomyLevel
    rule: dict[str, Any] | None = Field(description="the rule that decided the level")
    task: str | None
    context: str | None
    subject: str


# ---- webhooks -------------------------------------------------------------------------------------
class SigningSecretInfo(_Out):
    id: str
    created_at: datetime | None
    expires_at: datetime | None


class WebhookEndpoint(_Out):
    id: str
    object: Literal["webhook_endpoint"]
    url: str
    description: str | None
    event_types: list[str]
    all_requests: bool
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    secrets: list[SigningSecretInfo]


class CreatedWebhookEndpoint(WebhookEndpoint):
    secret: str = Field(description="the `whsec_` signing secret, shown only in this answer")


class WebhookEndpointList(_Out):
    data: list[WebhookEndpoint]


class DeliveryAttempt(_Out):
    attempt: int
    attempted_at: datetime | None
    status_code: int | None
    latency_ms: float | None
    response_body: str | None
    error: str | None
    next_attempt_at: datetime | None
    replay: bool | None


class WebhookDelivery(_Out):
    id: str
    object: Literal["webhook_delivery"]
    webhook_id: str
    endpoint_id: str | None
    request_id: str | None
    event_type: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    event_at: datetime | None
    created_at: datetime | None
    updated_at: datetime | None
    delivered_at: datetime | None
    payload: Any = Field(default=None, description="the detail view only")
    attempt_log: list[DeliveryAttempt] | None = Field(default=None, description="the detail view only")


class WebhookDeliveryList(_Out):
    data: list[WebhookDelivery]
    next_cursor: str | None


class ReplayedCount(_Out):
    replayed: int


class RotatedSecret(_Out):
    secret: str = Field(description="the new signing secret, shown only in this answer")
    previous_secrets_expire_at: datetime
    secrets: list[SigningSecretInfo]


class DefaultSecret(_Out):
    secret: str


# ---- usage and billing ---------------------------------------------------------------------------
class UsageReport(_Out):
    """The usage service's per-tenant aggregates (docs/usage.md)."""


class Invoice(_Out):
    tenant_id: str
    period: str
    currency: str
    lines: list[dict[str, Any]]
    total: str = Field(description="decimal string")


class SqlResult(_Out):
    """Columns and rows of one SELECT (docs/usage.md#finance-sql)."""


# ---- auth -----------------------------------------------------------------------------------------
class Accepted(_Out):
    status: str
    message: str | None = None


class TokenResponse(_Out):
    """OAuth 2.0 token response (RFC 6749 §5.1). In cookie mode the refresh token is a cookie, not a field."""

    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    refresh_token: str | None = None
    refresh_expires_in: int | None = None


class UserResource(_Out):
    id: str
    tenant_id: str
    email: str
    role: str
    email_verified: bool
    password_set: bool
    active: bool
    created_at: datetime


class UserList(_Out):
    data: list[UserResource]


class Me(_Out):
    tenant_id: str
    tier: str
    scopes: list[str]
    kind: Literal["user", "api_key"]
    user: UserResource | None = None
    api_key_id: str | None = None


class PasswordChanged(_Out):
    status: Literal["changed"]
    revoked_sessions: int


class RevokedSessions(_Out):
    revoked_sessions: int


class ResetRequired(_Out):
    status: Literal["reset_required"]


class JsonWebKey(_Out):
    kty: str
    kid: str


class JsonWebKeySet(_Out):
    keys: list[JsonWebKey]


class ApiKeyResource(_Out):
    id: str
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None = None


class IssuedApiKey(ApiKeyResource):
    key: str = Field(description="the full key, shown only in this answer")
    note: str


class ApiKeyList(_Out):
    data: list[ApiKeyResource]


class TenantResource(_Out):
    id: str
    name: str
    tier: str
    created_at: datetime


# ---- OpenAI-compatible --------------------------------------------------------------------------
class ModelObject(_Out):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Out):
    object: Literal["list"]
    data: list[ModelObject]


class ChatCompletion(_Out):
    """OpenAI's `chat.completion` (with `stream: true` the answer is `text/event-stream` chunks)."""

    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str | None = None
    choices: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class ResponseObject(_Out):
    """OpenAI's `response` object (with `stream: true` the answer is `text/event-stream` events)."""

    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None
    error: dict[str, Any] | None
