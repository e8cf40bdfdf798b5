"""The dispatcher's database side: plan and store deliveries, load what an attempt needs, log attempts.

Storing a delivery is idempotent (its id is deterministic and inserted with ON CONFLICT DO NOTHING), so
a redelivered `results` message finds its deliveries already there and does not start them again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, true, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from consumers.webhook_sender import AttemptOutcome
from consumers.webhook_targets import PlannedDelivery, plan_deliveries
from gateway.webhook_secrets import SigningSecretStore
from lotabots.ids import new_id
from schemas.events import RequestLifecycleEvent
from schemas.relational import requests_table as R
from schemas.webhook_tables import webhook_attempts as A
from schemas.webhook_tables import webhook_deliveries as D
from schemas.webhook_tables import webhook_endpoints as E

PENDING, RETRYING, SUCCEEDED, FAILED = "pending", "retrying", "succeeded", "failed"
RECORD_BATCH = 500


@dataclass(frozen=True)
class DeliveryContext:
    """A delivery as stored, its endpoint (None for a direct URL) and the secrets that sign it now."""

    delivery: Any
    endpoint: Any | None
    secrets: list[str]


@dataclass(frozen=True)
class AttemptRecord:
    """What to write after one attempt."""

    attempt: int
    outcome: AttemptOutcome
    status: str
    next_attempt_at: datetime | None = None
    replay: bool = False
    disable_reason: str | None = None
    attempted: bool = True  # False: no HTTP was tried (the endpoint was already disabled)


async def insert_ignoring_duplicates(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]]) -> None:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(dialect.insert(table).on_conflict_do_nothing(index_elements=["id"]), rows)


class DispatchStore:
    def __init__(self, engine: AsyncEngine, secrets: SigningSecretStore) -> None:
        self.engine = engine
        self.secrets = secrets
        self._pending: list[tuple[DeliveryContext, AttemptRecord, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def plan(self, events: Sequence[RequestLifecycleEvent]) -> list[list[PlannedDelivery]]:
        """The deliveries each event causes (aligned with `events`); two queries for the whole batch."""
        ids = list({e.request_id for e in events})
        async with self.engine.connect() as conn:
            rows = {r.id: r for r in (await conn.execute(select(R).where(R.c.id.in_(ids)))).fetchall()}
            tenants = list({r.tenant_id for r in rows.values()})
            named = [r.webhook_endpoint_id for r in rows.values() if r.webhook_endpoint_id]
            # levels of autonomy: the endpoint a request's action delivers to (docs/autonomy.md)
            named += [r.action["endpoint_id"] for r in rows.values() if r.action and r.action.get("endpoint_id")]
            endpoints = (await conn.execute(select(E).where(and_(
                E.c.enabled == true(),
                or_(and_(E.c.tenant_id.in_(tenants), E.c.all_requests == true()), E.c.id.in_(named)),
            )))).fetchall() if tenants else []
        by_tenant: dict[str, list[Any]] = {}
        for ep in endpoints:
            by_tenant.setdefault(ep.tenant_id, []).append(ep)
        planned = []
        for event in events:
            row = rows.get(event.request_id)
            planned.append(plan_deliveries(row, event, by_tenant.get(row.tenant_id, ())) if row is not None else [])
        return planned

    async def create(self, planned: Sequence[PlannedDelivery]) -> set[str]:
        """Store new deliveries; return the ids still waiting for their first attempt."""
        if not planned:
            return set()
        now = datetime.now(UTC)
        rows = {p.id: {
            "id": p.id, "tenant_id": p.tenant_id, "endpoint_id": p.endpoint_id, "request_id": p.request_id,
            "event_type": p.event_type, "url": p.url, "payload": p.payload, "status": PENDING, "attempts": 0,
            "event_at": p.event_at, "created_at": now, "updated_at": now,
        } for p in planned}
        async with self.engine.begin() as conn:
            await insert_ignoring_duplicates(conn, D, list(rows.values()))
            waiting = await conn.execute(select(D.c.id).where(and_(
                D.c.id.in_(list(rows)), D.c.status == PENDING, D.c.attempts == 0)))
        return {r.id for r in waiting}

    async def contexts(self, delivery_ids: Sequence[str]) -> dict[str, DeliveryContext]:
        """What attempts of these deliveries need, in three queries whatever their number."""
        if not delivery_ids:
            return {}
        async with self.engine.connect() as conn:
            deliveries = (await conn.execute(select(D).where(D.c.id.in_(list(delivery_ids))))).fetchall()
            endpoint_ids = list({d.endpoint_id for d in deliveries if d.endpoint_id is not None})
            endpoints = {e.id: e for e in (await conn.execute(
                select(E).where(E.c.id.in_(endpoint_ids)))).fetchall()} if endpoint_ids else {}
            secrets = await self.secrets.live_for(conn, {(d.tenant_id, d.endpoint_id) for d in deliveries})
        out = {}
        for d in deliveries:
            signing = secrets.get((d.tenant_id, d.endpoint_id)) or []
            if not signing and d.endpoint_id is None:  # a direct URL before the tenant's secret existed
                signing = await self.secrets.ensure_default(d.tenant_id)
            out[d.id] = DeliveryContext(d, endpoints.get(d.endpoint_id) if d.endpoint_id else None, signing)
        return out

    async def context(self, delivery_id: str) -> DeliveryContext | None:
        return (await self.contexts([delivery_id])).get(delivery_id)

    async def record(self, ctx: DeliveryContext, rec: AttemptRecord) -> None:
        """Log the attempt, set the delivery's state and the endpoint's health; returns once committed.

        Concurrent records share one transaction (group commit), so the log keeps up with deliveries.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((ctx, rec, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:RECORD_BATCH], self._pending[RECORD_BATCH:]
            try:
                await self._write(batch)
            except Exception:
                await self._one_by_one(batch)  # one bad record must not fail the others
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _one_by_one(self, batch: list[tuple[DeliveryContext, AttemptRecord, asyncio.Future[None]]]) -> None:
        for item in batch:
            future = item[2]
            try:
                await self._write([item])
            except Exception as exc:  # its caller retries it
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)

    async def _write(self, batch: list[tuple[DeliveryContext, AttemptRecord, asyncio.Future[None]]]) -> None:
        now = datetime.now(UTC)
        attempts: list[dict[str, Any]] = []
        deliveries: list[dict[str, Any]] = []
        healthy: list[dict[str, Any]] = []
        failing: list[dict[str, Any]] = []
        disabled: list[dict[str, Any]] = []
        for ctx, rec, _ in batch:
            o = rec.outcome
            attempts.append({
                "id": new_id("wha"), "delivery_id": ctx.delivery.id, "attempt": rec.attempt, "attempted_at": now,
                "status_code": o.status_code, "latency_ms": o.latency_ms, "response_body": o.response_body,
                "error": o.error, "next_attempt_at": rec.next_attempt_at, "replay": rec.replay,
            })
            deliveries.append({
                "b_id": ctx.delivery.id, "b_attempts": rec.attempt, "b_status": rec.status,
                "b_next": rec.next_attempt_at, "b_code": o.status_code, "b_error": o.error,
                "b_delivered": now if rec.status == SUCCEEDED else None,
            })
            endpoint_id = ctx.delivery.endpoint_id
            if endpoint_id is None or not rec.attempted:
                continue
            (healthy if rec.status == SUCCEEDED else failing).append({"b_id": endpoint_id})
            if rec.disable_reason:
                disabled.append({"b_id": endpoint_id, "b_reason": rec.disable_reason})
        async with self.engine.begin() as conn:
            await conn.execute(A.insert(), attempts)
            # never behind a later attempt's record (a slow commit of attempt n-1 must not undo attempt n)
            await conn.execute(update(D).where(and_(D.c.id == bindparam("b_id"),
                                                    D.c.attempts <= bindparam("b_attempts"))).values(
                attempts=bindparam("b_attempts"), status=bindparam("b_status"), next_attempt_at=bindparam("b_next"),
                last_status_code=bindparam("b_code"), last_error=bindparam("b_error"), updated_at=now,
                delivered_at=func.coalesce(bindparam("b_delivered", type_=D.c.delivered_at.type), D.c.delivered_at),
            ), deliveries)
            if healthy:
                await conn.execute(update(E).where(and_(E.c.id == bindparam("b_id"), E.c.failing_since.is_not(None)))
                                   .values(failing_since=None, updated_at=now), healthy)
            if failing:
                await conn.execute(update(E).where(and_(E.c.id == bindparam("b_id"), E.c.failing_since.is_(None)))
                                   .values(failing_since=now, updated_at=now), failing)
            if disabled:
                await conn.execute(update(E).where(and_(E.c.id == bindparam("b_id"), E.c.enabled == true())).values(
                    enabled=False, disabled_reason=bindparam("b_reason"), disabled_at=now, updated_at=now), disabled)
