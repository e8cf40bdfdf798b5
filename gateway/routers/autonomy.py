"""`/v1/autonomy/...` (policy store, resolve) and the human decisions on requests
(`/v1/requests/{id}/approve|reject|edit`, `/v1/requests/{id}/audit`). Thin: rules live in
gateway.autonomy_service; semantics and precedence in docs/autonomy.md.

Tenant-wide settings and rules (tenant default and maximum, task/context rules, other users'
defaults and rules) need the `admin` scope (owners and admins hold it); any caller with `requests:write`
manages its own default (`/users/me`) and its own task/context rules (`/users/me/rules`), as a user id,
or an API key id for API keys. Another user's own rules are invisible to non-admins (404).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from gateway.api_models import (
    AutonomyPolicy,
    AutonomyResolution,
    AutonomyRule,
    AutonomyRuleList,
    RequestAudit,
    RequestResource,
    TenantLevels,
)
from gateway.autonomy_service import AutonomyService, rule_resource, tenant_resource
from gateway.errors import ApiError
from gateway.openapi_docs import errors, success
from gateway.request_models import request_resource
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope
from schemas.autonomy_levels import AutonomyLevel

router = APIRouter(tags=["autonomy"])

Admin = Annotated[Principal, Depends(require_scope("admin"))]
Reader = Annotated[Principal, Depends(require_scope("requests:read"))]
Writer = Annotated[Principal, Depends(require_scope("requests:write"))]
Name = Annotated[str, Field(min_length=1, max_length=100, pattern="^[^\u0000]*$")]  # PostgreSQL text holds no NUL
_RULE_422 = "invalid body, or neither `task` nor `context` given (`rule_needs_task_or_context`)"
_DECIDE_409 = ("the request is not awaiting a decision (`request_not_awaiting_approval`, "
               "`request_already_decided`, `decision_not_applicable`)")


async def start(app: FastAPI) -> None:
    """Build the service and install the submit-time resolution on the request service."""
    state = app.state
    state.autonomy_service = service = AutonomyService(state.engine, state.producer,
                                                       state.settings.autonomy_policy_ttl_s)
    state.request_service.autonomy_check = service.submit_columns
    state.request_service.finish_without_model = service.finish_without_model


def _service(request: Request) -> AutonomyService:
    service: AutonomyService = request.app.state.autonomy_service
    return service


def _default_not_above_maximum() -> dict[str, object]:
    """JSON Schema for `default_level` not above `max_level` (a missing `max_level` is `agent`)."""
    order = list(AutonomyLevel)
    pairs = [{"properties": {"max_level": {"const": m.value},
                             "default_level": {"enum": [d.value for d in order[: i + 1]]}},
              "required": ["max_level"]} for i, m in enumerate(order)]
    return {"anyOf": [*pairs, {"not": {"required": ["max_level"]}}]}


class TenantLevelsBody(BaseModel):
    """`default_level` may not be above `max_level` (no_ai < assisted < collaborator < expert < agent)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_default_not_above_maximum())
    default_level: AutonomyLevel
    max_level: AutonomyLevel = AutonomyLevel.AGENT


class LevelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    level: AutonomyLevel


class RuleBody(BaseModel):
    """A task rule, a context rule, or a (task, context) rule: give task, context or both."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"properties": {"task": {"type": "string", "minLength": 1}}, "required": ["task"]},
        {"properties": {"context": {"type": "string", "minLength": 1}}, "required": ["context"]}]})
    task: Name | None = None
    context: Name | None = None
    level: AutonomyLevel


def _rule_key(body: RuleBody) -> tuple[str, str, str]:
    """(kind, task, context) of a task, context or (task, context) rule."""
    if not body.task and not body.context:
        raise ApiError(422, "rule_needs_task_or_context", "a rule names a task, a context, or both")
    kind = "task_context" if body.task and body.context else "task" if body.task else "context"
    return kind, body.task or "", body.context or ""


def _created(row: object) -> JSONBytes:
    resource = rule_resource(row)
    return JSONBytes(resource, status_code=201, headers={"Location": f"/v1/autonomy/rules/{resource['id']}"})


class ApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str, Field(max_length=2000)] | None = None


class EditBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: Annotated[str, Field(min_length=1, max_length=32_768)]
    comment: Annotated[str, Field(max_length=2000)] | None = None


# ---- policy ------------------------------------------------------------------------------------
@router.get("/v1/autonomy/policy", response_model=AutonomyPolicy)
async def get_policy(request: Request, who: Reader) -> JSONBytes:
    return JSONBytes(await _service(request).policy(who))


@router.put("/v1/autonomy/tenant", response_model=TenantLevels,
            responses=errors(422, e422="invalid body, or `default_level` above `max_level` (`default_above_maximum`)"))
async def set_tenant_levels(body: TenantLevelsBody, request: Request, who: Admin) -> JSONBytes:
    return JSONBytes(tenant_resource(await _service(request).set_tenant(who, body.default_level, body.max_level)))


@router.put("/v1/autonomy/users/me", response_model=AutonomyRule, responses=errors(422))
async def set_my_default(body: LevelBody, request: Request, who: Writer) -> JSONBytes:
    return JSONBytes(rule_resource(await _service(request).put_rule(who, "default", body.level, user_id=who.subject)))


@router.delete("/v1/autonomy/users/me", status_code=204, response_class=Response)
async def delete_my_default(request: Request, who: Writer) -> Response:
    await _service(request).delete_user_default(who, who.subject)
    return Response(status_code=204)


# Declared before /users/{user_id}/rules so that "me" is never taken for a user id.
@router.get("/v1/autonomy/users/me/rules", response_model=AutonomyRuleList)
async def list_my_rules(request: Request, who: Reader) -> JSONBytes:
    return JSONBytes({"data": await _service(request).user_rules(who, who.subject)})


@router.post("/v1/autonomy/users/me/rules", status_code=201, response_model=AutonomyRule,
             responses={**success(201, "Created or replaced", "Location"), **errors(422, e422=_RULE_422)})
async def put_my_rule(body: RuleBody, request: Request, who: Writer) -> JSONBytes:
    """Create or replace the caller's own task, context or (task, context) rule."""
    kind, task, context = _rule_key(body)
    return _created(await _service(request).put_rule(who, kind, body.level, user_id=who.subject, task=task,
                                                     context=context))


@router.get("/v1/autonomy/users/{user_id}/rules", response_model=AutonomyRuleList)
async def list_user_rules(user_id: str, request: Request, who: Admin) -> JSONBytes:
    return JSONBytes({"data": await _service(request).user_rules(who, user_id)})


@router.post("/v1/autonomy/users/{user_id}/rules", status_code=201, response_model=AutonomyRule,
             responses={**success(201, "Created or replaced", "Location"), **errors(422, e422=_RULE_422)})
async def put_user_rule(user_id: str, body: RuleBody, request: Request, who: Admin) -> JSONBytes:
    kind, task, context = _rule_key(body)
    return _created(await _service(request).put_rule(who, kind, body.level, user_id=user_id, task=task,
                                                     context=context))


@router.put("/v1/autonomy/users/{user_id}", response_model=AutonomyRule, responses=errors(422))
async def set_user_default(user_id: str, body: LevelBody, request: Request, who: Admin) -> JSONBytes:
    return JSONBytes(rule_resource(await _service(request).put_rule(who, "default", body.level, user_id=user_id)))


@router.delete("/v1/autonomy/users/{user_id}", status_code=204, response_class=Response)
async def delete_user_default(user_id: str, request: Request, who: Admin) -> Response:
    await _service(request).delete_user_default(who, user_id)
    return Response(status_code=204)


@router.get("/v1/autonomy/rules", response_model=AutonomyRuleList)
async def list_rules(request: Request, who: Reader) -> JSONBytes:
    return JSONBytes({"data": (await _service(request).policy(who))["rules"]})


@router.post("/v1/autonomy/rules", status_code=201, response_model=AutonomyRule,
             responses={**success(201, "Created or replaced", "Location"), **errors(422, e422=_RULE_422)})
async def put_rule(body: RuleBody, request: Request, who: Admin) -> JSONBytes:
    """Create or replace a tenant-wide task, context or (task, context) rule."""
    kind, task, context = _rule_key(body)
    return _created(await _service(request).put_rule(who, kind, body.level, task=task, context=context))


@router.get("/v1/autonomy/rules/{rule_id}", response_model=AutonomyRule)
async def get_rule(rule_id: str, request: Request, who: Reader) -> JSONBytes:
    return JSONBytes(rule_resource(await _service(request).get_rule(who, rule_id)))


@router.patch("/v1/autonomy/rules/{rule_id}", response_model=AutonomyRule, responses=errors(422))
async def update_rule(rule_id: str, body: LevelBody, request: Request, who: Writer) -> JSONBytes:
    return JSONBytes(rule_resource(await _service(request).update_rule(who, rule_id, body.level)))


@router.delete("/v1/autonomy/rules/{rule_id}", status_code=204, response_class=Response)
async def delete_rule(rule_id: str, request: Request, who: Writer) -> Response:
    await _service(request).delete_rule(who, rule_id)
    return Response(status_code=204)


@router.get("/v1/autonomy/resolve", response_model=AutonomyResolution, responses=errors(422))
async def resolve_level(request: Request, who: Reader, task: str | None = None,
                        context: str | None = None) -> JSONBytes:
    resolution = await _service(request).resolve(who, task or None, context or None)
    return JSONBytes({"level": resolution.level.value, "rule": resolution.rule, "task": task, "context": context,
                      "subject": who.subject})


# ---- decisions on requests ---------------------------------------------------------------------
@router.post("/v1/requests/{request_id}/approve", response_model=RequestResource,
             responses=errors(409, 422, e409=_DECIDE_409))
async def approve_request(request_id: str, request: Request, who: Writer,
                          body: ApproveBody | None = None) -> JSONBytes:
    comment = body.comment if body else None
    return JSONBytes(request_resource(await _service(request).decide(who, request_id, "approve", None, comment)))


@router.post("/v1/requests/{request_id}/edit", response_model=RequestResource,
             responses=errors(409, 422, e409=_DECIDE_409))
async def edit_request(request_id: str, body: EditBody, request: Request, who: Writer) -> JSONBytes:
    return JSONBytes(request_resource(await _service(request).decide(who, request_id, "edit", body.text,
                                                                     body.comment)))


@router.post("/v1/requests/{request_id}/reject", response_model=RequestResource,
             responses=errors(409, 422, e409=_DECIDE_409))
async def reject_request(request_id: str, request: Request, who: Writer,
                         body: ApproveBody | None = None) -> JSONBytes:
    comment = body.comment if body else None
    return JSONBytes(request_resource(await _service(request).decide(who, request_id, "reject", None, comment)))


@router.get("/v1/requests/{request_id}/audit", response_model=RequestAudit)
async def request_audit(request_id: str, request: Request, who: Reader) -> JSONBytes:
    return JSONBytes({"request_id": request_id, "data": await _service(request).audit(who, request_id)})
