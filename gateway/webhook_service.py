"""Webhook endpoints, secrets, the delivery log and replay, as the gateway serves them. Routes call these.

Every query is scoped to the caller's tenant: another tenant's endpoint or delivery is a 404.
Replays are produced to the first retry stage with the next attempt number and `replay: true`; the
dispatcher makes that one attempt now (no retry chain behind it) with the same webhook-id.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer
from sqlalchemy import and_, delete, false, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ApiError
from gateway.request_models import SubmitRequestBody
from gateway.security import Principal
from gateway.ssrf import DestinationRefused, Resolver, SsrfPolicy, check_destination
from gateway.webhook_models import CreateEndpointBody, ReplayFailedBody, UpdateEndpointBody
from gateway.webhook_secrets import SecretInfo, SigningSecretStore
from lotabots.ids import new_id
from lotabots.kafka_io import encode
from lotabots.settings import Settings
from schemas.topics import webhook_retry_topic
from schemas.webhook_events import WebhookRetry
from schemas.webhook_tables import webhook_attempts as A
from schemas.webhook_tables import webhook_deliveries as D
from schemas.webhook_tables import webhook_endpoints as E

MAX_REPLAY_BATCH = 10_000
DELIVERY_STATUSES = ("pending", "retrying", "succeeded", "failed")


class WebhookService:
    """Endpoint CRUD, secrets, delivery log and replay for one gateway process."""

    def __init__(self, settings: Settings, engine: AsyncEngine, producer: AIOKafkaProducer,
                 secrets: SigningSecretStore, resolver: Resolver | None = None) -> None:
        self.settings = settings
        self.engine = engine
        self.producer = producer
        self.secrets = secrets
        self.policy = SsrfPolicy.from_setting(settings.webhook_allow_hosts)
        self.resolver = resolver

    # ---- the SSRF guard at the edge -------------------------------------------------------------
    async def check_url(self, url: str) -> None:
        try:
            await check_destination(url, self.policy, self.resolver)
        except DestinationRefused as exc:
            raise ApiError(422, exc.code, exc.message, url=url) from exc

    async def submit_columns(self, who: Principal, body: SubmitRequestBody) -> dict[str, Any]:
        """Validate a submit's webhook fields; the requests row's webhook columns."""
        columns: dict[str, Any] = {"webhook_url": None, "webhook_endpoint_id": None, "webhook_events": None}
        if body.webhook and body.webhook_endpoint_id:
            raise ApiError(422, "webhook_conflict", "give either `webhook` or `webhook_endpoint_id`, not both")
        if body.webhook_events_filter and not (body.webhook or body.webhook_endpoint_id):
            raise ApiError(422, "webhook_filter_without_webhook",
                           "`webhook_events_filter` needs `webhook` or `webhook_endpoint_id`")
        if body.webhook:
            await self.check_url(body.webhook)
            await self.secrets.ensure_default(who.tenant_id)  # so the tenant can read the secret that signs
            columns["webhook_url"] = body.webhook
        elif body.webhook_endpoint_id:
            endpoint = await self._endpoint_row(who, body.webhook_endpoint_id, status=422)
            if not endpoint.enabled:
                raise ApiError(422, "webhook_endpoint_disabled", "the webhook endpoint is disabled",
                               reason=endpoint.disabled_reason)
            columns["webhook_endpoint_id"] = endpoint.id
        if body.webhook_events_filter:
            columns["webhook_events"] = sorted(set(body.webhook_events_filter))
        return columns

    # ---- endpoints ------------------------------------------------------------------------------
    async def create_endpoint(self, who: Principal, body: CreateEndpointBody) -> tuple[Any, list[SecretInfo], str]:
        await self.check_url(body.url)
        now = datetime.now(UTC)
        endpoint_id = new_id("whe")
        async with self.engine.begin() as conn:
            await conn.execute(E.insert().values(
                id=endpoint_id, tenant_id=who.tenant_id, url=body.url, description=body.description,
                event_types=sorted(set(body.event_types)), all_requests=body.all_requests, enabled=body.enabled,
                created_at=now, updated_at=now,
            ))
            secret = await self.secrets.create(conn, who.tenant_id, endpoint_id)
        return await self._endpoint_row(who, endpoint_id), await self.secrets.info(who.tenant_id, endpoint_id), secret

    async def list_endpoints(self, who: Principal) -> list[tuple[Any, list[SecretInfo]]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(E).where(E.c.tenant_id == who.tenant_id).order_by(E.c.id))).fetchall()
        return [(r, await self.secrets.info(who.tenant_id, r.id)) for r in rows]

    async def get_endpoint(self, who: Principal, endpoint_id: str) -> tuple[Any, list[SecretInfo]]:
        row = await self._endpoint_row(who, endpoint_id)
        return row, await self.secrets.info(who.tenant_id, endpoint_id)

    async def update_endpoint(self, who: Principal, endpoint_id: str, body: UpdateEndpointBody) -> tuple[Any, list[SecretInfo]]:
        await self._endpoint_row(who, endpoint_id)
        values: dict[str, Any] = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None}
        if "url" in values:
            await self.check_url(values["url"])
        if "event_types" in values:
            values["event_types"] = sorted(set(values["event_types"]))
        if values.get("enabled") is True:  # re-enabling starts a fresh health record
            values.update(disabled_reason=None, disabled_at=None, failing_since=None)
        elif values.get("enabled") is False:
            values.update(disabled_reason="disabled by the tenant", disabled_at=datetime.now(UTC))
        values["updated_at"] = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(update(E).where(and_(E.c.id == endpoint_id, E.c.tenant_id == who.tenant_id))
                               .values(**values))
        return await self.get_endpoint(who, endpoint_id)

    async def delete_endpoint(self, who: Principal, endpoint_id: str) -> None:
        async with self.engine.begin() as conn:
            res = await conn.execute(delete(E).where(and_(E.c.id == endpoint_id, E.c.tenant_id == who.tenant_id)))
        if res.rowcount == 0:
            raise ApiError(404, "webhook_endpoint_not_found", "no such webhook endpoint")

    async def rotate_secret(self, who: Principal, endpoint_id: str | None, overlap_s: int | None) -> dict[str, Any]:
        """A new secret (shown once); the old one keeps signing until the overlap ends."""
        if endpoint_id is not None:
            await self._endpoint_row(who, endpoint_id)
        overlap = self.settings.webhook_secret_overlap_s if overlap_s is None else overlap_s
        secret, ends = await self.secrets.rotate(who.tenant_id, endpoint_id, overlap)
        return {"secret": secret, "previous_secrets_expire_at": ends.isoformat(),
                "secrets": [{"id": s.id, "created_at": s.created_at.isoformat(),
                             "expires_at": s.expires_at.isoformat() if s.expires_at else None}
                            for s in await self.secrets.info(who.tenant_id, endpoint_id)]}

    async def default_secret(self, who: Principal) -> str:
        """The newest secret signing the tenant's direct-URL webhooks (created on first use)."""
        return (await self.secrets.ensure_default(who.tenant_id))[0]

    async def _endpoint_row(self, who: Principal, endpoint_id: str, status: int = 404) -> Any:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(E).where(and_(E.c.id == endpoint_id, E.c.tenant_id == who.tenant_id)))).first()
        if row is None:
            raise ApiError(status, "webhook_endpoint_not_found", "no such webhook endpoint")
        return row

    # ---- delivery log ---------------------------------------------------------------------------
    async def list_deliveries(
        self, who: Principal, *, endpoint_id: str | None, request_id: str | None, status: str | None,
        limit: int, cursor: str | None,
    ) -> tuple[list[Any], str | None]:
        if endpoint_id is not None:
            await self._endpoint_row(who, endpoint_id)
        query = select(D).where(D.c.tenant_id == who.tenant_id)
        if endpoint_id is not None:
            query = query.where(D.c.endpoint_id == endpoint_id)
        if request_id is not None:
            query = query.where(D.c.request_id == request_id)
        if status is not None:
            query = query.where(D.c.status == status)
        if cursor:
            created, last_id = _decode_cursor(cursor)
            query = query.where(tuple_(D.c.created_at, D.c.id) < tuple_(created, last_id))
        query = query.order_by(D.c.created_at.desc(), D.c.id.desc()).limit(limit + 1)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).fetchall()
        next_cursor = _encode_cursor(rows[limit - 1]) if len(rows) > limit else None
        return list(rows[:limit]), next_cursor

    async def get_delivery(self, who: Principal, delivery_id: str) -> tuple[Any, list[Any]]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(
                select(D).where(and_(D.c.id == delivery_id, D.c.tenant_id == who.tenant_id)))).first()
            if row is None:
                raise ApiError(404, "webhook_delivery_not_found", "no such webhook delivery")
            attempts = (await conn.execute(
                select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempted_at, A.c.attempt))).fetchall()
        return row, list(attempts)

    # ---- replay ---------------------------------------------------------------------------------
    async def replay(self, who: Principal, delivery_id: str) -> Any:
        row, _ = await self.get_delivery(who, delivery_id)
        if row.status not in ("succeeded", "failed"):
            raise ApiError(409, "webhook_delivery_in_progress",
                           f"the delivery is {row.status}; replay it once it has succeeded or failed")
        if row.endpoint_id is not None:
            endpoint = await self._endpoint_row(who, row.endpoint_id)
            if not endpoint.enabled:
                raise ApiError(409, "webhook_endpoint_disabled", "re-enable the endpoint before replaying",
                               reason=endpoint.disabled_reason)
        if not await self._replay_rows([row]):
            raise ApiError(409, "webhook_delivery_in_progress", "the delivery changed meanwhile; retry")
        return (await self.get_delivery(who, delivery_id))[0]

    async def replay_failed(self, who: Principal, body: ReplayFailedBody) -> int:
        """Replay failed deliveries created in the range (at most MAX_REPLAY_BATCH per call)."""
        query = select(D).where(and_(D.c.tenant_id == who.tenant_id, D.c.status == "failed",
                                     D.c.created_at >= body.since))
        if body.until is not None:
            query = query.where(D.c.created_at < body.until)
        if body.endpoint_id is not None:
            endpoint = await self._endpoint_row(who, body.endpoint_id)
            if not endpoint.enabled:
                raise ApiError(409, "webhook_endpoint_disabled", "re-enable the endpoint before replaying",
                               reason=endpoint.disabled_reason)
            query = query.where(D.c.endpoint_id == body.endpoint_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.order_by(D.c.created_at).limit(MAX_REPLAY_BATCH))).fetchall()
            disabled = {r.id for r in (await conn.execute(
                select(E.c.id).where(and_(E.c.tenant_id == who.tenant_id, E.c.enabled == false())))).fetchall()}
        return await self._replay_rows([r for r in rows if r.endpoint_id not in disabled])

    async def _replay_rows(self, rows: list[Any]) -> int:
        """Claim each delivery (state unchanged since read -> `retrying`), then produce its replay message."""
        now = datetime.now(UTC)
        claimed = []
        async with self.engine.begin() as conn:
            for row in rows:
                res = await conn.execute(update(D).where(and_(
                    D.c.id == row.id, D.c.attempts == row.attempts, D.c.status == row.status,
                )).values(status="retrying", next_attempt_at=now, updated_at=now))
                if res.rowcount:
                    claimed.append(row)
        try:
            futures = [
                await self.producer.send(webhook_retry_topic(1), encode(WebhookRetry(
                    delivery_id=row.id, request_id=row.request_id, tenant_id=row.tenant_id,
                    attempt=row.attempts + 1, due_at=now, replay=True,
                )), key=row.request_id.encode())
                for row in claimed
            ]
            for future in futures:
                await future
        except Exception as exc:
            async with self.engine.begin() as conn:  # give the claims back: nothing will attempt them
                for row in claimed:
                    await conn.execute(update(D).where(and_(D.c.id == row.id, D.c.status == "retrying",
                                                            D.c.attempts == row.attempts))
                                       .values(status=row.status, next_attempt_at=None))
            raise ApiError(503, "queue_unavailable", "the replay could not be queued; retry",
                           headers={"Retry-After": "1"}) from exc
        return len(claimed)


def _encode_cursor(row: Any) -> str:
    return base64.urlsafe_b64encode(f"{row.created_at.isoformat()}|{row.id}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, _, last_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return datetime.fromisoformat(created), last_id
    except Exception as exc:
        raise ApiError(422, "invalid_cursor", "the pagination cursor is not valid") from exc
