"""Publishing `auth.events` (the mailer's input) and building the links those mails carry.

Delivery is best effort and never changes the HTTP answer: the answer must not reveal whether an email is
registered, so a broker hiccup is logged (without the link) and counted, and the user can ask again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from aiokafka import AIOKafkaProducer

from gateway.auth.clock import Clock, utcnow
from gateway.auth.metrics import AUTH_EVENTS_FAILED
from gateway.auth.one_time_tokens import IssuedOneTimeToken, TokenPurpose
from lotabots.ids import new_id
from lotabots.kafka_io import encode
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent, AuthEventType, PasswordResetReason
from schemas.topics import AUTH_EVENTS

log = logging.getLogger("lotabots.auth.events")

_LINK_PATHS = {
    TokenPurpose.VERIFY_EMAIL: "verify-email",
    TokenPurpose.RESET_PASSWORD: "reset-password",
    TokenPurpose.INVITATION: "accept-invitation",
}


class AuthEventSink(Protocol):
    async def publish(self, event: AuthEvent) -> None: ...


class KafkaAuthEventSink:
    """Produces to `auth.events` (acks=all), keyed by user id."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer

    async def publish(self, event: AuthEvent) -> None:
        await self._producer.send_and_wait(AUTH_EVENTS, key=event.kafka_key.encode(), value=encode(event))


class AuthEventPublisher:
    """Builds events (and their links) and hands them to the sink without ever failing the caller."""

    def __init__(self, sink: AuthEventSink, settings: Settings, clock: Clock = utcnow) -> None:
        self._sink = sink
        self._settings = settings
        self._clock = clock
        self._base_url = (settings.public_base_url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")

    async def emit(self, type: AuthEventType, *, user_id: str | None = None, tenant_id: str | None = None,
                   email: str | None = None, session_id: str | None = None,
                   reason: PasswordResetReason | None = None) -> None:
        await self._send(AuthEvent(event_id=new_id("aev"), type=type, at=self._clock(), user_id=user_id,
                                   tenant_id=tenant_id, email=email, session_id=session_id, reason=reason))

    async def emit_link(self, type: AuthEventType, purpose: TokenPurpose, issued: IssuedOneTimeToken, *,
                        user_id: str, tenant_id: str, email: str,
                        reason: PasswordResetReason | None = None) -> None:
        link = self._settings.auth_link_template.format(
            base_url=self._base_url, purpose=_LINK_PATHS[purpose], token=issued.token
        )
        if self._settings.auth_log_email_links:
            # Development only (LOTABOTS_AUTH_LOG_EMAIL_LINKS): with no mailer running, this is the mail.
            log.warning("development mail for %s (%s): %s", user_id, type.value, link)
        await self._send(AuthEvent(
            event_id=new_id("aev"), type=type, at=self._clock(), user_id=user_id, tenant_id=tenant_id,
            email=email, link=link, link_expires_at=issued.expires_at, reason=reason,
        ))

    async def _send(self, event: AuthEvent) -> None:
        try:
            await self._sink.publish(event)
        except Exception as exc:  # noqa: BLE001 - best effort by design (see module docstring)
            AUTH_EVENTS_FAILED.labels(event.type.value).inc()
            log.error("auth event %s (%s) not delivered: %s", event.event_id, event.type.value, type(exc).__name__)
