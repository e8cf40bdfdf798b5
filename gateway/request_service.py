"""Submit, poll, list and cancel chat requests. Route functions call these; they hold the rules.

Submit writes the request row first and only then publishes it to `requests.<tier>` (acks=all) and
answers 202: a 202 therefore always has both a row (poll never 404s) and a durable message (a worker
will run it). An idempotent replay of a request still `queued` publishes it again, which heals a
gateway that died between the row and the publish; duplicates are harmless because workers and the
result writer are idempotent per request id.

The wait for the publish's acknowledgement is bounded (`publish_timeout_s`, LOTABOTS_PUBLISH_TIMEOUT_S):
when the cluster cannot take the record (fewer than `min.insync.replicas` brokers in sync, no leader)
the submit answers 503 `queue_unavailable` with Retry-After instead of hanging. The row is already
there and `queued`, so a retry with the same Idempotency-Key publishes it again; the first record, which
the idempotent producer keeps retrying, may still land too: that duplicate is harmless as above (the
result writer only moves a row forward, usage facts and webhook ids are derived from the request id and
deduped), so the key yields exactly one request, billed once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ApiError
from gateway.request_models import SubmitRequestBody
from gateway.request_store import GroupCommitInserter
from gateway.security import Principal
from lotabots.ids import new_id
from lotabots.kafka_io import StickyPartitions, encode
from lotabots.settings import get_settings
from lotabots.tiers import TierConfig
from lotabots.usage_events import UsageEmitter
from schemas.autonomy_levels import NO_AI_FINISH_REASON
from schemas.events import ControlAction, ControlSignal, GenerationParams, InferenceRequest, RequestStatus
from schemas.relational import requests_table as R
from schemas.topics import REQUESTS_CONTROL, request_topic

DEFAULT_MAX_TOKENS = 128


@dataclass
class SubmitOutcome:
    row: Any
    replayed: bool


class RequestService:
    """The request lifecycle as the gateway sees it."""

    def __init__(self, engine: AsyncEngine, producer: AIOKafkaProducer, tiers: TierConfig,
                 publish_timeout_s: float | None = None) -> None:
        self.engine = engine
        self.producer = producer
        self.tiers = tiers
        # the bound on a submit's (or cancel's) wait for the broker's acknowledgement
        self.publish_timeout_s = get_settings().publish_timeout_s if publish_timeout_s is None else publish_timeout_s
        self.inserter = GroupCommitInserter(engine, R)
        self._sticky = StickyPartitions(producer)
        self.usage = UsageEmitter(producer)  # the `request accepted` fact rides with every publish
        # Checks a submit's webhook fields and returns the row's webhook columns (SSRF guard, endpoint
        # ownership); installed by gateway.routers.webhooks.start. Without it webhook fields are refused.
        self.webhook_check: Callable[[Principal, SubmitRequestBody], Awaitable[dict[str, Any]]] | None = None
        # Levels of autonomy (docs/autonomy.md), installed by gateway.routers.autonomy.start: resolves the
        # level and returns the row's autonomy columns; finishes a No AI request without the model.
        self.autonomy_check: Callable[[Principal, SubmitRequestBody], Awaitable[dict[str, Any]]] | None = None
        self.finish_without_model: Callable[[dict[str, Any], str | None], Awaitable[None]] | None = None

    async def submit(
        self, who: Principal, body: SubmitRequestBody, idempotency_key: str | None, request_id: str | None = None
    ) -> SubmitOutcome:
        """`request_id`: the id the limits admitted this submit under (gateway.limits); a fresh one if None."""
        tier = self.tiers.tiers.get(who.tier)
        if tier is None:
            raise ApiError(403, "tier_not_available", f"tier {who.tier!r} is not offered")
        max_tokens = body.max_tokens or min(DEFAULT_MAX_TOKENS, tier.max_tokens_cap)
        if max_tokens > tier.max_tokens_cap:
            raise ApiError(
                422, "max_tokens_exceeds_tier_cap",
                f"max_tokens {max_tokens} exceeds the {tier.name} tier's cap of {tier.max_tokens_cap}",
                cap=tier.max_tokens_cap,
            )
        if idempotency_key is not None and not (1 <= len(idempotency_key) <= 255):
            raise ApiError(422, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
        params = GenerationParams(
            max_tokens=max_tokens, temperature=body.temperature, top_p=body.top_p, stop=body.stop, seed=body.seed
        )
        messages = [m.model_dump() for m in body.messages]
        webhook = await self._webhook_columns(who, body)
        autonomy = await self._autonomy_columns(who, body)
        fingerprint: dict[str, Any] = {"m": messages, "p": params.model_dump(), "c": body.conversation_id}
        if any(v is not None for v in webhook.values()):
            fingerprint["w"] = webhook
        if body.task or body.context or body.autonomy_level or body.action:
            fingerprint["a"] = [body.task, body.context, body.autonomy_level,
                                body.action.model_dump() if body.action else None]
        request_hash = hashlib.sha256(orjson.dumps(fingerprint, option=orjson.OPT_SORT_KEYS)).hexdigest()
        if idempotency_key is not None:
            existing = await self._by_idempotency_key(who.tenant_id, idempotency_key)
            if existing is not None:
                return await self._replay(existing, request_hash)

        now = datetime.now(UTC)
        request_id = request_id or new_id("req")
        row = {
            "id": request_id, "tenant_id": who.tenant_id, "tier": tier.name, "status": RequestStatus.QUEUED.value,
            "status_rank": 0, "conversation_id": body.conversation_id, "input": {"messages": messages},
            "params": params.model_dump(), "idempotency_key": idempotency_key, "request_hash": request_hash,
            "created_at": now, "updated_at": now, **webhook, **autonomy,
        }
        try:
            await self.inserter.insert(row)
        except IntegrityError:
            existing = await self._by_idempotency_key(who.tenant_id, idempotency_key) if idempotency_key else None
            if existing is None:
                raise
            return await self._replay(existing, request_hash)
        await self._publish(row, who.subject)
        return SubmitOutcome(_RowView(row), replayed=False)

    async def _webhook_columns(self, who: Principal, body: SubmitRequestBody) -> dict[str, Any]:
        if self.webhook_check is not None:
            return await self.webhook_check(who, body)
        if body.webhook or body.webhook_endpoint_id or body.webhook_events_filter:
            raise ApiError(422, "webhooks_unavailable", "this deployment does not deliver webhooks")
        return {"webhook_url": None, "webhook_endpoint_id": None, "webhook_events": None}

    async def _autonomy_columns(self, who: Principal, body: SubmitRequestBody) -> dict[str, Any]:
        if self.autonomy_check is not None:
            return await self.autonomy_check(who, body)
        if body.task or body.context or body.autonomy_level or body.action:
            raise ApiError(422, "autonomy_unavailable", "this deployment does not support autonomy settings")
        return {}

    async def _replay(self, existing: Any, request_hash: str) -> SubmitOutcome:
        if existing.request_hash != request_hash:
            raise ApiError(
                409, "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body", request_id=existing.id,
            )
        # a No AI request was recorded finished at once: re-send its (idempotent) facts like a queued one
        if existing.status == RequestStatus.QUEUED.value or existing.finish_reason == NO_AI_FINISH_REASON:
            await self._publish(existing._asdict())
        return SubmitOutcome(existing, replayed=True)

    async def _publish(self, row: dict[str, Any], api_key_id: str | None = None) -> None:
        if row.get("finish_reason") == NO_AI_FINISH_REASON and self.finish_without_model is not None:
            await self.finish_without_model(row, api_key_id)  # No AI: never reaches a worker
            return
        # Built straight from the validated row (no second validation on the hot path); the consumer
        # decodes it with schemas.events.InferenceRequest, and tests pin that the two agree.
        message = orjson.dumps({
            "schema_version": InferenceRequest.SCHEMA_VERSION, "request_id": row["id"],
            "tenant_id": row["tenant_id"], "tier": row["tier"], "conversation_id": row["conversation_id"],
            "messages": row["input"]["messages"], "params": row["params"], "submitted_at": row["created_at"],
            "autonomy_level": row.get("autonomy_level"),
        })
        key = (row["conversation_id"] or row["id"]).encode()
        try:
            # Bounded: an idempotent acks=all producer retries a record it cannot place forever (no
            # leader, too few in-sync replicas), so the client gets a 503 after publish_timeout_s instead
            # of a hang. Timing out cancels only our wait: the record stays in the producer and may still
            # land; a retry with the same Idempotency-Key re-publishes, and consumers dedupe by request id.
            async with asyncio.timeout(self.publish_timeout_s):
                # The usage fact (id `<request id>:accepted`, so a replay re-sends the same fact) is acked
                # with the request itself: a 202 always has its billable record.
                # Both records are enqueued first and their acks awaited after (no gather/tasks per submit).
                topic = request_topic(row["tier"])
                # A conversation's requests keep their order (hash of the conversation id); lone requests
                # have no order to keep, so they ride sticky partitions and fill real batches.
                partition = None if row["conversation_id"] else self._sticky.partition(topic)
                request_ack = await self.producer.send(topic, message, key=key, partition=partition)
                usage_ack = await self.usage.send_request_accepted(
                    tenant_id=row["tenant_id"], tier=row["tier"], request_id=row["id"],
                    max_tokens_reserved=row["params"]["max_tokens"], api_key_id=api_key_id,
                    at=row["created_at"],
                )
                await request_ack
                await usage_ack
        except Exception as exc:  # not taken (or not in time): tell the client to retry (same Idempotency-Key)
            raise ApiError(
                503, "queue_unavailable", "the request could not be queued; retry with the same Idempotency-Key",
                headers={"Retry-After": "1"}, request_id=row["id"],
            ) from exc

    async def _by_idempotency_key(self, tenant_id: str, key: str) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(R).where(and_(R.c.tenant_id == tenant_id, R.c.idempotency_key == key)))
            ).first()

    async def get(self, who: Principal, request_id: str) -> Any:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(select(R).where(and_(R.c.id == request_id, R.c.tenant_id == who.tenant_id)))
            ).first()
        if row is None:  # another tenant's id is indistinguishable from an unknown one
            raise ApiError(404, "request_not_found", "no such request")
        return row

    async def list(
        self, who: Principal, limit: int, cursor: str | None, status: str | None
    ) -> tuple[list[Any], str | None]:
        query = select(R).where(R.c.tenant_id == who.tenant_id)
        if cursor:
            query = query.where(R.c.id < _decode_cursor(cursor))
        if status:
            query = query.where(R.c.status == status)
        query = query.order_by(R.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).fetchall()
        next_cursor = _encode_cursor(rows[limit - 1].id) if len(rows) > limit else None
        return rows[:limit], next_cursor

    async def cancel(self, who: Principal, request_id: str) -> Any:
        row = await self.get(who, request_id)
        status = RequestStatus(row.status)
        if status is RequestStatus.CANCELED:
            return row
        if status.terminal:
            raise ApiError(409, "request_already_finished", f"the request already ended {status.value}")
        if status is RequestStatus.AWAITING_APPROVAL:
            # the generation is over; what is left is a human's decision, recorded in the audit trail
            raise ApiError(409, "request_awaiting_approval", f"request {row.id} waits for a human decision; "
                           f"reject it with POST /v1/requests/{row.id}/reject")
        signal = ControlSignal(
            request_id=row.id, tenant_id=row.tenant_id, tier=row.tier, action=ControlAction.CANCEL,
            at=datetime.now(UTC),
        )
        try:
            async with asyncio.timeout(self.publish_timeout_s):
                await self.producer.send_and_wait(REQUESTS_CONTROL, encode(signal), key=row.id.encode())
        except Exception as exc:
            raise ApiError(503, "queue_unavailable", "cancel could not be recorded; retry",
                           headers={"Retry-After": "1"}) from exc
        if status is RequestStatus.QUEUED:
            # Not started yet: it ends now. A worker that later takes it sees the control signal and skips it.
            now = datetime.now(UTC)
            async with self.engine.begin() as conn:
                await conn.execute(
                    update(R)
                    .where(and_(R.c.id == row.id, R.c.status == RequestStatus.QUEUED.value))
                    .values(status=RequestStatus.CANCELED.value, status_rank=3, finish_reason="canceled",
                            finished_at=now, updated_at=now, prompt_tokens=0, completion_tokens=0)
                )
        return await self.get(who, request_id)


_EMPTY_ROW = {c.name: None for c in R.columns}


class _RowView:
    """A freshly inserted row, readable like a fetched one."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(_EMPTY_ROW)
        self.__dict__.update(values)


def _encode_cursor(request_id: str) -> str:
    return base64.urlsafe_b64encode(request_id.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except Exception as exc:
        raise ApiError(422, "invalid_cursor", "the pagination cursor is not valid") from exc
