"""Levels of autonomy as the gateway enforces them (docs/autonomy.md): the policy store, resolution at
submit, the No AI finish, human decisions on requests awaiting approval, and the per-request audit trail.

Human decisions are written by the gateway with a guarded UPDATE (`status = awaiting_approval AND
decision IS NULL`), so of two concurrent decisions exactly one wins, in the same transaction as its
audit entry; the gateway then produces the matching lifecycle event to `results`. The result writer
sees that event at the same rank as the row (3) and leaves the row alone (its monotonic rule holds);
the webhook dispatcher delivers it, and — for an accepted request with an action — the action event.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.autonomy_policy import PolicyCache, Resolution, apply_requested, resolve, scope_name
from gateway.errors import ApiError
from gateway.request_models import SubmitRequestBody
from gateway.security import Principal
from lotabots.ids import new_id
from lotabots.kafka_io import encode
from lotabots.usage_events import UsageEmitter
from schemas.autonomy_levels import ACTION_EVENT_TYPE, NO_AI_FINISH_REASON, AutonomyLevel
from schemas.autonomy_tables import autonomy_audit as A
from schemas.autonomy_tables import autonomy_rules as RU
from schemas.autonomy_tables import autonomy_tenant_settings as S
from schemas.events import LifecycleType, RequestLifecycleEvent, RequestStatus
from schemas.relational import requests_table as R
from schemas.topics import RESULTS
from schemas.webhook_tables import webhook_deliveries as D
from schemas.webhook_tables import webhook_endpoints as E

log = logging.getLogger(__name__)

DECISIONS = {"approve": ("approved", RequestStatus.SUCCEEDED), "edit": ("edited", RequestStatus.SUCCEEDED),
             "reject": ("rejected", RequestStatus.CANCELED)}


def is_tenant_admin(who: Principal) -> bool:
    return who.role in ("owner", "admin") or who.has_scope("admin")


class AutonomyService:
    """Policy CRUD, resolution, decisions and the audit trail for one gateway."""

    def __init__(self, engine: AsyncEngine, producer: AIOKafkaProducer, ttl_s: float) -> None:
        self.engine = engine
        self.producer = producer
        self.policies = PolicyCache(engine, ttl_s)
        self.usage = UsageEmitter(producer)

    # ---- resolution (the submit hot path) -------------------------------------------------------
    async def resolve(self, who: Principal, task: str | None, context: str | None) -> Resolution:
        return resolve(await self.policies.get(who.tenant_id), who.subject, task, context)

    async def submit_columns(self, who: Principal, body: SubmitRequestBody) -> dict[str, Any]:
        """The request row's autonomy columns; refuses escalation and actions the level never runs."""
        resolution = apply_requested(await self.resolve(who, body.task, body.context), body.autonomy_level)
        level = resolution.level
        columns: dict[str, Any] = {
            "submitted_by": who.subject, "autonomy_level": level.value, "autonomy_rule": resolution.rule,
            "task": body.task, "context": body.context, "action": None,
        }
        if body.action is not None:
            if not level.allows_actions:
                raise ApiError(422, "action_not_allowed_at_level",
                               f"actions never run at autonomy level {level.value!r}", level=level.value)
            await self._check_action_endpoint(who, body.action.endpoint_id)
            columns["action"] = body.action.model_dump()
        if not level.invokes_model:  # No AI: recorded and finished here; no worker ever sees it
            now = datetime.now(UTC)
            columns.update(status=RequestStatus.SUCCEEDED.value, status_rank=RequestStatus.SUCCEEDED.rank,
                           finish_reason=NO_AI_FINISH_REASON, prompt_tokens=0, completion_tokens=0,
                           finished_at=now)
        return columns

    async def _check_action_endpoint(self, who: Principal, endpoint_id: str) -> None:
        async with self.engine.connect() as conn:
            endpoint = (await conn.execute(select(E.c.enabled).where(
                and_(E.c.id == endpoint_id, E.c.tenant_id == who.tenant_id)))).first()
        if endpoint is None:
            raise ApiError(422, "action_endpoint_not_found", "the action's webhook endpoint does not exist",
                           endpoint_id=endpoint_id)
        if not endpoint.enabled:
            raise ApiError(422, "webhook_endpoint_disabled", "the action's webhook endpoint is disabled",
                           endpoint_id=endpoint_id)

    async def finish_without_model(self, row: dict[str, Any], api_key_id: str | None) -> None:
        """A No AI request: its lifecycle event (for webhooks and long-polls) and zero-token usage facts.
        Every id is deterministic, so a replay re-sends the same facts."""
        at = row["finished_at"] or row["created_at"]
        event = RequestLifecycleEvent(
            event_id=f"{row['id']}:no_ai", request_id=row["id"], tenant_id=row["tenant_id"], tier=row["tier"],
            type=LifecycleType.SUCCEEDED, at=at, finish_reason=NO_AI_FINISH_REASON, prompt_tokens=0,
            completion_tokens=0, finished_at=at,
        )
        try:
            result_ack = await self.producer.send(RESULTS, encode(event), key=row["id"].encode())
            accepted_ack = await self.usage.send_request_accepted(
                tenant_id=row["tenant_id"], tier=row["tier"], request_id=row["id"], max_tokens_reserved=0,
                api_key_id=api_key_id, at=row["created_at"])
            await result_ack
            await accepted_ack
            await self.usage.inference_completed(
                tenant_id=row["tenant_id"], tier=row["tier"], request_id=row["id"], model="none",
                prompt_tokens=0, completion_tokens=0, latency_ms=0, finish_reason=NO_AI_FINISH_REASON,
                status=RequestStatus.SUCCEEDED.value, autonomy_level=AutonomyLevel.NO_AI.value, at=at)
        except Exception as exc:
            raise ApiError(503, "queue_unavailable", "the request could not be recorded; retry with the same "
                           "Idempotency-Key", headers={"Retry-After": "1"}, request_id=row["id"]) from exc

    # ---- policy store ---------------------------------------------------------------------------
    async def policy(self, who: Principal) -> dict[str, Any]:
        """The tenant's settings and the rules the caller may see: a tenant admin sees every rule; anyone
        else the tenant-wide rules and its own (another user's rules are invisible)."""
        visible = RU.c.tenant_id == who.tenant_id
        if not is_tenant_admin(who):
            visible = and_(visible, or_(RU.c.user_id == "", RU.c.user_id == who.subject))
        async with self.engine.connect() as conn:
            settings = (await conn.execute(select(S).where(S.c.tenant_id == who.tenant_id))).first()
            rules = (await conn.execute(select(RU).where(visible).order_by(RU.c.created_at, RU.c.id))).fetchall()
        return {"tenant": tenant_resource(settings), "rules": [rule_resource(r) for r in rules]}

    async def user_rules(self, who: Principal, user_id: str) -> list[dict[str, Any]]:
        """One user's own rules (its default and its task/context rules)."""
        async with self.engine.connect() as conn:
            rules = (await conn.execute(select(RU).where(and_(RU.c.tenant_id == who.tenant_id,
                                                              RU.c.user_id == user_id))
                                        .order_by(RU.c.created_at, RU.c.id))).fetchall()
        return [rule_resource(r) for r in rules]

    async def set_tenant(self, who: Principal, default_level: AutonomyLevel, max_level: AutonomyLevel) -> Any:
        if default_level.rank > max_level.rank:
            raise ApiError(422, "default_above_maximum", "the tenant default cannot be above its maximum")
        now = datetime.now(UTC)
        values = {"default_level": default_level.value, "max_level": max_level.value, "updated_by": who.subject,
                  "updated_at": now}
        async with self.engine.begin() as conn:
            res = await conn.execute(update(S).where(S.c.tenant_id == who.tenant_id).values(**values))
            if res.rowcount == 0:
                await conn.execute(S.insert().values(tenant_id=who.tenant_id, **values))
            row = (await conn.execute(select(S).where(S.c.tenant_id == who.tenant_id))).one()
        self.policies.invalidate(who.tenant_id)
        return row

    async def put_rule(self, who: Principal, scope: str, level: AutonomyLevel, *, user_id: str = "",
                       task: str = "", context: str = "") -> Any:
        """Create or replace the rule with this key (a rule is identified by what it matches and whose it
        is: `scope` is its kind, `user_id` its owner, "" for a tenant-wide rule)."""
        now = datetime.now(UTC)
        key = and_(RU.c.tenant_id == who.tenant_id, RU.c.scope == scope, RU.c.user_id == user_id,
                   RU.c.task == task, RU.c.context == context)
        for _ in range(2):  # a concurrent insert of the same key: the retry updates it
            try:
                async with self.engine.begin() as conn:
                    res = await conn.execute(update(RU).where(key).values(level=level.value, updated_at=now,
                                                                          created_by=who.subject))
                    if res.rowcount == 0:
                        await conn.execute(RU.insert().values(
                            id=new_id("arule"), tenant_id=who.tenant_id, scope=scope, user_id=user_id, task=task,
                            context=context, level=level.value, created_by=who.subject, created_at=now,
                            updated_at=now))
                    row = (await conn.execute(select(RU).where(key))).one()
                break
            except IntegrityError:
                continue
        self.policies.invalidate(who.tenant_id)
        return row

    async def get_rule(self, who: Principal, rule_id: str) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(RU).where(and_(RU.c.id == rule_id,
                                                            RU.c.tenant_id == who.tenant_id)))).first()
        if row is None:
            raise ApiError(404, "autonomy_rule_not_found", "no such autonomy rule")
        if row.user_id and row.user_id != who.subject and not is_tenant_admin(who):
            # another user's own rule is invisible to it: indistinguishable from an unknown one
            raise ApiError(404, "autonomy_rule_not_found", "no such autonomy rule")
        return row

    async def update_rule(self, who: Principal, rule_id: str, level: AutonomyLevel) -> Any:
        row = await self.get_rule(who, rule_id)
        self._may_manage(who, row)
        async with self.engine.begin() as conn:
            await conn.execute(update(RU).where(RU.c.id == row.id).values(
                level=level.value, updated_at=datetime.now(UTC), created_by=who.subject))
        self.policies.invalidate(who.tenant_id)
        return await self.get_rule(who, rule_id)

    async def delete_rule(self, who: Principal, rule_id: str) -> None:
        row = await self.get_rule(who, rule_id)
        self._may_manage(who, row)
        async with self.engine.begin() as conn:
            await conn.execute(delete(RU).where(RU.c.id == row.id))
        self.policies.invalidate(who.tenant_id)

    async def delete_user_default(self, who: Principal, user_id: str) -> bool:
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(RU).where(and_(
                RU.c.tenant_id == who.tenant_id, RU.c.scope == "default", RU.c.user_id == user_id)))
        self.policies.invalidate(who.tenant_id)
        return bool(res.rowcount)

    @staticmethod
    def _may_manage(who: Principal, row: Any) -> None:
        if is_tenant_admin(who) or (row.user_id and row.user_id == who.subject):
            return
        raise ApiError(403, "insufficient_scope", "only tenant admins manage tenant-wide autonomy rules",
                       required_scope="admin")

    # ---- human decisions ------------------------------------------------------------------------
    async def decide(self, who: Principal, request_id: str, verb: str, text: str | None,
                     comment: str | None) -> Any:
        """approve | edit | reject a request awaiting a human; refuses double decisions and other tenants."""
        decision, status = DECISIONS[verb]
        row = await self._request(who, request_id)
        level = AutonomyLevel(row.autonomy_level) if row.autonomy_level else None
        if level is None or not level.needs_decision:
            raise ApiError(409, "decision_not_applicable",
                           f"requests at autonomy level {row.autonomy_level!r} do not await a decision",
                           level=row.autonomy_level)
        if row.decision is not None:
            raise ApiError(409, "request_already_decided", f"the request was already {row.decision}",
                           decision=row.decision, decided_by=row.decided_by)
        if row.status in (RequestStatus.QUEUED.value, RequestStatus.RUNNING.value):
            # A long-poll may already have shown `awaiting_approval` from the lifecycle event while the
            # result writer has not stored it yet: give the writer a moment (bounded; decisions are rare).
            row = await self._await_stored_outcome(who, request_id, row)
        if row.status != RequestStatus.AWAITING_APPROVAL.value:
            raise ApiError(409, "request_not_awaiting_approval",
                           f"the request is {row.status}, not awaiting approval", current_status=row.status)
        if row.submitted_by != who.subject and not is_tenant_admin(who):
            raise ApiError(403, "not_request_owner",
                           "only the user who submitted the request or a tenant admin may decide it")
        now = datetime.now(UTC)
        output = text if verb == "edit" else row.output
        action_runs = status is RequestStatus.SUCCEEDED and bool(row.action)
        async with self.engine.begin() as conn:
            res = await conn.execute(update(R).where(and_(
                R.c.id == row.id, R.c.tenant_id == who.tenant_id,
                R.c.status == RequestStatus.AWAITING_APPROVAL.value, R.c.decision.is_(None),
            )).values(status=status.value, status_rank=status.rank, output=output, finish_reason=decision,
                      finished_at=now, updated_at=now, decision=decision, decided_by=who.subject, decided_at=now))
            if res.rowcount == 0:  # another decision won the race
                raise ApiError(409, "request_already_decided", "the request was already decided")
            detail: dict[str, Any] = {"status": status.value, "action_authorized": action_runs}
            if verb == "edit":
                detail.update(draft=row.output, final=text)
            if comment:
                detail["comment"] = comment
            await conn.execute(A.insert().values(
                id=new_id("aud"), tenant_id=who.tenant_id, request_id=row.id, event=decision, actor=who.subject,
                actor_kind=who.kind, level=row.autonomy_level, at=now, detail=detail))
        event = RequestLifecycleEvent(
            event_id=f"{row.id}:{decision}", request_id=row.id, tenant_id=row.tenant_id, tier=row.tier,
            type=LifecycleType(status.value), at=now, output=output, finish_reason=decision,
            prompt_tokens=row.prompt_tokens, completion_tokens=row.completion_tokens, started_at=row.started_at,
            first_token_at=row.first_token_at, finished_at=now,
        )
        await self._produce_decision(event)
        return await self._request(who, request_id)

    async def _await_stored_outcome(self, who: Principal, request_id: str, row: Any, timeout_s: float = 10.0) -> Any:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while row.status in (RequestStatus.QUEUED.value, RequestStatus.RUNNING.value):
            if asyncio.get_running_loop().time() >= deadline:
                break
            await asyncio.sleep(0.1)
            row = await self._request(who, request_id)
        return row

    async def _produce_decision(self, event: RequestLifecycleEvent) -> None:
        # The row already holds the decision; the event carries it to webhooks (and the action). Retry a
        # broker hiccup for a while rather than answer an error for a decision that is recorded.
        delay = 0.2
        for attempt in range(8):
            try:
                await self.producer.send_and_wait(RESULTS, encode(event), key=event.request_id.encode())
                return
            except Exception:
                log.exception("producing the %s event of %s failed (attempt %d)", event.finish_reason,
                              event.request_id, attempt + 1)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        raise ApiError(503, "queue_unavailable", "the decision is recorded but its event could not be sent",
                       headers={"Retry-After": "1"})

    async def _request(self, who: Principal, request_id: str) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(R).where(
                and_(R.c.id == request_id, R.c.tenant_id == who.tenant_id)))).first()
        if row is None:  # another tenant's request is indistinguishable from an unknown one
            raise ApiError(404, "request_not_found", "no such request")
        return row

    # ---- audit ----------------------------------------------------------------------------------
    async def audit(self, who: Principal, request_id: str) -> list[dict[str, Any]]:
        """Who decided what and when for one request, in time order: the level's resolution (from the
        request row), human decisions (audit table) and action executions (the webhook delivery log)."""
        row = await self._request(who, request_id)
        async with self.engine.connect() as conn:
            decisions = (await conn.execute(select(A).where(and_(A.c.request_id == row.id,
                                                                 A.c.tenant_id == who.tenant_id))
                                            .order_by(A.c.at, A.c.id))).fetchall()
            actions = (await conn.execute(select(D).where(and_(
                D.c.request_id == row.id, D.c.tenant_id == who.tenant_id,
                D.c.event_type == ACTION_EVENT_TYPE)))).fetchall()
        entries: list[dict[str, Any]] = []
        if row.autonomy_level:
            entries.append(_entry("level_resolved", row.submitted_by, None, row.autonomy_level, row.created_at, {
                "rule": row.autonomy_rule, "task": row.task, "context": row.context, "action": row.action,
                "model_invoked": AutonomyLevel(row.autonomy_level).invokes_model}))
        for d in decisions:
            entries.append(_entry(d.event, d.actor, d.actor_kind, d.level, d.at, d.detail))
        for d in actions:
            entries.append(_entry(
                "action_executed" if d.status == "succeeded" else f"action_{d.status}", "platform", "system",
                row.autonomy_level, d.delivered_at or d.updated_at,
                {"type": "deliver_webhook", "endpoint_id": d.endpoint_id, "delivery_id": d.id,
                 "attempts": d.attempts, "last_status_code": d.last_status_code}))
        entries.sort(key=lambda e: e["at"] or "")
        return entries


def _entry(event: str, actor: str | None, actor_kind: str | None, level: str | None, at: datetime | None,
           detail: dict[str, Any]) -> dict[str, Any]:
    if at is not None and at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return {"event": event, "actor": actor, "actor_kind": actor_kind, "level": level,
            "at": at.isoformat() if at else None, "detail": detail}


def tenant_resource(row: Any) -> dict[str, Any]:
    if row is None:
        return {"default_level": None, "max_level": None, "configured": False}
    return {"default_level": row.default_level, "max_level": row.max_level, "configured": True,
            "updated_by": row.updated_by, "updated_at": row.updated_at.isoformat()}


def rule_resource(row: Any) -> dict[str, Any]:
    return {"id": row.id, "object": "autonomy_rule", "scope": scope_name(row.scope, row.user_id),
            "kind": row.scope, "owner": "user" if row.user_id else "tenant", "user_id": row.user_id or None,
            "task": row.task or None, "context": row.context or None, "level": row.level,
            "created_by": row.created_by, "created_at": row.created_at.isoformat(),
            "updated_at": row.updated_at.isoformat()}
