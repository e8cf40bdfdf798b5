"""What the OpenAI-compatible routes share: served models, OpenAI's error body, and the path into submit.

Every OpenAI-style call becomes a `SubmitRequestBody` and goes through exactly what `POST /v1/requests`
does (auth, tier, limits, quotas, usage facts, autonomy, the request row): :func:`submit_as_request`.
Errors on these routes use OpenAI's body `{"error": {"message", "type", "param", "code"}}` and status
codes the official SDKs map to their exception classes (a bad parameter is 400, not 422). See
docs/openai.md for what is supported and what is refused.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from gateway.errors import ApiError
from gateway.request_models import SubmitRequestBody, request_resource
from gateway.request_service import SubmitOutcome
from gateway.security import Principal, authorize
from lotabots.settings import Settings

OPENAI_PREFIXES = ("/v1/chat/", "/v1/models", "/v1/responses", "/v1/completions", "/v1/embeddings")
BASE_MODEL = "smollm2-135m-instruct"  # inference.model_build.MODEL_NAME (not imported: it pulls onnx)
CREATED = 1_733_011_200  # when these model ids were first served (2024-12-01), for `created`
# The official SDKs retry 409, 5xx and timeouts by themselves; a retry of a call that did reach the
# platform submits a second request (and bills it), so the refusals that are final say so.
NO_RETRY = {"x-should-retry": "false"}

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "invalid_request_error", 405: "invalid_request_error", 409: "invalid_request_error",
          413: "invalid_request_error", 415: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error"}


def is_openai_path(path: str) -> bool:
    return path.startswith(OPENAI_PREFIXES)


def openai_status(status: int) -> int:
    """OpenAI answers invalid parameters with 400; the native API's 422s become 400 here."""
    return 400 if status == 422 else status


def openai_error_body(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    kind = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def param_of_problems(problems: list[dict[str, Any]]) -> str | None:
    """The first invalid parameter as OpenAI names it (`messages.0.content`)."""
    for p in problems:
        loc = [str(x) for x in p.get("loc", []) if str(x) != "body"]
        if loc:
            return ".".join(loc)
    return None


# ---- models ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServedModel:
    id: str
    variant: str


def served_models(settings: Settings) -> list[ServedModel]:
    """The model ids this deployment answers to: the model, and the model pinned to its variant."""
    if settings.inference_backend == "simulated":
        return [ServedModel("lotabots-simulated", "simulated")]
    if settings.inference_backend == "triton":
        return [ServedModel(BASE_MODEL, "triton"), ServedModel(f"{BASE_MODEL}-triton", "triton")]
    variant = settings.model_variant
    return [ServedModel(BASE_MODEL, variant), ServedModel(f"{BASE_MODEL}-{variant}", variant)]


def model_object(model: ServedModel) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": CREATED, "owned_by": "lotabots"}


def resolve_model(settings: Settings, model_id: str) -> ServedModel:
    for model in served_models(settings):
        if model.id == model_id:
            return model
    raise ApiError(404, "model_not_found", f"The model `{model_id}` does not exist or you do not have access "
                   f"to it; GET /v1/models lists the models served here", param="model")


# ---- submitting ---------------------------------------------------------------------------------
def derived_seed(who: Principal, idempotency_key: str | None, request_id: str) -> int:
    """A seed for sampled requests that name none: a run taken over by another worker then writes the
    same text, and a retry with the same Idempotency-Key is the same request."""
    basis = f"{who.tenant_id}:{idempotency_key}" if idempotency_key else request_id
    return int(hashlib.sha256(basis.encode()).hexdigest()[:15], 16)


async def submit_as_request(request: Request, fields: dict[str, Any]) -> tuple[Principal, SubmitOutcome, dict[str, Any],
                                                                               dict[str, str]]:
    """Authorise, admit and submit like `POST /v1/requests`; returns who, the outcome, the resource and
    the headers a submit answers with (rate limits, Location, Idempotent-Replayed)."""
    who = await authorize(request, "requests:write")
    try:
        body = SubmitRequestBody.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    limits = request.app.state.limits
    admission = await limits.admit(who, body)
    key = request.headers.get("idempotency-key")
    if body.temperature > 0 and body.seed is None:
        body = body.model_copy(update={"seed": derived_seed(who, key, admission.request_id)})
    service = request.app.state.request_service
    try:
        outcome = await service.submit(who, body, key, request_id=admission.request_id)
        admission.bind(outcome.replayed)
    finally:
        if not admission.bound or admission.replayed:
            await limits.give_back(admission)
    resource = request_resource(outcome.row)
    headers = {"LotaBots-Request-Id": resource["id"], "Location": f"/v1/requests/{resource['id']}",
               **admission.headers}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return who, outcome, resource, headers


def refuse_unattended(resource: dict[str, Any]) -> None:
    """Levels of autonomy on OpenAI routes (docs/openai.md#levels-of-autonomy): No AI never runs the
    model and Collaborator/Expert wait for a human, so a synchronous completion cannot answer them."""
    level = (resource.get("autonomy") or {}).get("level")
    rid = resource["id"]
    if level == "no_ai":
        raise ApiError(403, "autonomy_no_ai", f"the autonomy level No AI applies to this request ({rid}): the "
                       "model is not invoked")
    if level in ("collaborator", "expert"):
        raise ApiError(409, "approval_required", f"the autonomy level {level} needs a human decision: request {rid} "
                       f"waits in awaiting_approval (GET /v1/requests/{rid}, POST /v1/requests/{rid}/approve)",
                       headers=NO_RETRY)


def unix(iso: str | None) -> int:
    if not iso:
        return int(time.time())
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp())


async def wait_settled(request: Request, who: Principal, resource: dict[str, Any]) -> dict[str, Any]:
    """Hold until the request is terminal (or awaiting a human), up to `openai_wait_max_s`."""
    from gateway.long_poll import wait_for_outcome
    from gateway.text_follower import settled

    state = request.app.state
    service = state.request_service
    deadline = time.monotonic() + state.settings.openai_wait_max_s
    rid = resource["id"]
    while not settled(resource):
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(504, "timeout", f"request {resource['id']} did not finish in time; it goes on: "
                           f"GET /v1/requests/{resource['id']}", headers=NO_RETRY)
        resource = await wait_for_outcome(state.results_tail, lambda: service.get(who, rid),
                                          rid, min(left, 60.0))
    return resource


def failure_error(resource: dict[str, Any]) -> ApiError:
    """A failed generation as the error a synchronous completion answers."""
    error = resource.get("error") or {}
    code = error.get("code") or "inference_error"
    message = error.get("message") or "the generation failed"
    if code in ("context_length_exceeded", "invalid_prompt", "empty_prompt", "invalid_request_message"):
        return ApiError(400, code, message, param="messages")
    return ApiError(500, code, message, headers=NO_RETRY)
