"""The mailer: consumer group `mailer` over `auth.events`, one SMTP mail per event id (docs/mailer.md).

Pipeline per record:
  decode            -> unreadable: `auth.events.dlq` (link redacted)          -> offset done
  template          -> an audit-only type (password_changed, ...): skipped    -> offset done
  compose           -> no recipient / no link: dead-lettered                  -> offset done
  claim (DB, batch) -> `mail_sent` row already sent or failed: a duplicate    -> offset done
                    -> else the row is `sending` and a send task starts
  send task         -> SMTP 250: row `sent`                                   -> offset done
                    -> transient failure: back-off (doubling, jittered), try again, for mailer_give_up_after_s
                    -> permanent failure, expired link, or given up: DLQ first, then row `failed` -> offset done

An offset is committed only when every record before it is done, so a mailer killed at any point leaves
the rest to the next one; the ledger makes the redelivered events that were already sent send nothing.
The only window left is between the relay's 250 and the `sent` row (one database transaction): a mailer
killed exactly there sends that mail again, with the same Message-ID. A connection carries its next mail
only once the last one is recorded, so one crash resends at most `mailer_concurrency` mails.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncEngine

from consumers.dead_letter import DeadLetterStep
from consumers.mail_compose import compose, message_id_domain, redact_links
from consumers.mail_sender import Outcome, SmtpPool, SmtpTarget
from consumers.mail_store import Claim, MailKey, MailStore
from consumers.mail_templates import NotMailable, template_for
from consumers.offsets import OffsetTracker
from lotabots.kafka_io import decode, make_consumer, make_producer
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent
from schemas.topics import AUTH_EVENTS, AUTH_EVENTS_DLQ

log = logging.getLogger(__name__)
T = TypeVar("T")

MAILS = Counter("lotabots_mailer_events_total", "auth events by what the mailer did with them", ["type", "outcome"])
ATTEMPTS = Counter("lotabots_mailer_smtp_attempts_total", "SMTP transactions by outcome", ["outcome"])
IN_DOUBT = Counter("lotabots_mailer_in_doubt_total",
                   "mails found `sending` (a mailer stopped between SMTP and its record): sent again, same Message-ID")
DEAD_LETTERS = Counter("lotabots_mailer_dead_letters_total", "records and mails sent to auth.events.dlq", ["reason"])
IN_FLIGHT = Gauge("lotabots_mailer_in_flight", "mails being sent or waiting to be retried")
SMTP_SECONDS = Histogram("lotabots_mailer_smtp_seconds", "duration of accepted SMTP transactions",
                         buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


class _Abandoned(Exception):
    """Stopping before the mail's outcome was recorded: its offset stays uncommitted (the mail is redone)."""


@dataclass
class _Mail:
    event: AuthEvent
    message: Message
    record: ConsumerRecord
    waiters: list[tuple[TopicPartition, int]] = field(default_factory=list)  # offsets this mail completes


class Mailer:
    """Sends the account mails of `auth.events`; see the module docstring for the guarantees."""

    def __init__(self, settings: Settings, engine: AsyncEngine, *, target: SmtpTarget | None = None) -> None:
        self.settings = settings
        self.store = MailStore(engine)
        self.target = target or SmtpTarget.from_settings(settings)
        self.offsets = OffsetTracker()
        self._domain = message_id_domain(settings)
        self._mails: dict[str, _Mail] = {}  # event id -> the mail being sent (or waiting to retry)
        self._tasks: set[asyncio.Task[None]] = set()
        self._paused = False
        self._stop = asyncio.Event()
        self._last_commit = 0.0
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.pool: SmtpPool | None = None
        self.dlq: DeadLetterStep | None = None

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        s = self.settings
        self.producer = make_producer(s, client_id="mailer")
        await self.producer.start()
        self.dlq = DeadLetterStep(self.producer, AUTH_EVENTS_DLQ, "mailer")
        self.pool = SmtpPool(self.target, s.mailer_concurrency)
        self.consumer = consumer = make_consumer(s, group_id=s.mailer_group, client_id="mailer", max_poll_records=500)
        await consumer.start()
        consumer.subscribe([AUTH_EVENTS], listener=_Rebalance(self))
        log.info("mailer started: group %s, SMTP %s%s, %d connections, back-off %.1f..%.0fs, give up after %.0fs",
                 s.mailer_group, self.target.describe(), " (development server)" if s.smtp_is_dev else "",
                 s.mailer_concurrency, s.mailer_retry_initial_s, s.mailer_retry_max_s, s.mailer_give_up_after_s)
        try:
            while not self._stop.is_set():
                room = s.mailer_max_in_flight - len(self._mails)
                self._back_pressure(full=room <= 0)
                # keep polling while full (every partition paused): the group must see this member alive
                batch = await consumer.getmany(timeout_ms=50 if room <= 0 else 200, max_records=max(1, room))
                try:
                    await self._take(batch)
                except _Abandoned:  # stopping while the database or broker was away: redone by the next run
                    break
                await self._commit()
            if self._tasks:  # SIGTERM: transactions under way finish and are recorded; waiting retries give up
                await asyncio.wait(set(self._tasks), timeout=s.smtp_timeout_s * 4 + 5)
            await self._commit(force=True)
        finally:
            for task in self._tasks:
                task.cancel()
            await consumer.stop()
            await self.pool.aclose()
            await self.producer.stop()

    # ---- consume --------------------------------------------------------------------------------
    def _back_pressure(self, full: bool) -> None:
        assert self.consumer is not None
        if full and not self._paused:
            self.consumer.pause(*self.consumer.assignment())
        elif not full and self._paused:
            self.consumer.resume(*self.consumer.assignment())
        self._paused = full

    async def _take(self, batch: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        todo: dict[str, _Mail] = {}
        for tp, records in batch.items():
            for record in records:
                self.offsets.begin(tp, record.offset)
                mail = await self._read(record)
                if mail is None:
                    self.offsets.done(tp, record.offset)
                    continue
                same = self._mails.get(mail.event.event_id) or todo.get(mail.event.event_id)
                if same is not None:  # a duplicate of a mail already under way: done when that one is
                    same.waiters.append((tp, record.offset))
                    MAILS.labels(mail.event.type.value, "duplicate").inc()
                    continue
                mail.waiters.append((tp, record.offset))
                todo[mail.event.event_id] = mail
        if not todo:
            return
        keys = [MailKey(m.event.event_id, m.event.type.value, str(m.message["Message-ID"])) for m in todo.values()]
        claims = await self._durably(lambda: self.store.claim(keys))
        for event_id, mail in todo.items():
            claim = claims[event_id]
            if claim is Claim.DONE:
                MAILS.labels(mail.event.type.value, "duplicate").inc()
                self._finish(mail)
                continue
            if claim is Claim.IN_DOUBT:
                IN_DOUBT.inc()
                log.warning("mail for event %s was being sent when a mailer stopped; sending it again with "
                            "the same Message-ID", event_id)
            self._spawn(mail)

    async def _read(self, record: ConsumerRecord) -> _Mail | None:
        """The mail this record asks for; None when it asks for none (or was dead-lettered)."""
        try:
            event = decode(AuthEvent, record.value)
        except Exception as exc:
            await self._dead_letter(record, "invalid_auth_event", f"{type(exc).__name__}: {str(exc)[:500]}")
            MAILS.labels("unknown", "dead_lettered").inc()
            return None
        if template_for(event) is None:
            MAILS.labels(event.type.value, "skipped").inc()
            return None
        try:
            message = compose(event, self.settings, domain=self._domain)
        except NotMailable as exc:
            await self._dead_letter(record, "unmailable_event", str(exc))
            MAILS.labels(event.type.value, "dead_lettered").inc()
            return None
        return _Mail(event, message, record)

    def _spawn(self, mail: _Mail) -> None:
        event_id = mail.event.event_id
        self._mails[event_id] = mail

        async def run() -> None:
            try:
                await self._deliver(mail)
            except _Abandoned:
                return
            except Exception:
                log.exception("mail for event %s failed unexpectedly; its offset stays uncommitted", event_id)
                return
            finally:
                self._mails.pop(event_id, None)
                IN_FLIGHT.set(len(self._mails))
            self._finish(mail)

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        IN_FLIGHT.set(len(self._mails))

    def _finish(self, mail: _Mail) -> None:
        for tp, offset in mail.waiters:
            self.offsets.done(tp, offset)

    # ---- one mail -------------------------------------------------------------------------------
    async def _deliver(self, mail: _Mail) -> None:
        assert self.pool is not None
        s, event = self.settings, mail.event
        first = time.monotonic()
        delay = s.mailer_retry_initial_s
        while True:
            expires = event.link_expires_at
            if expires is not None and (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) <= datetime.now(UTC):
                await self._fail(mail, "link_expired", "the link expired before the mail could be sent")
                return
            started = time.perf_counter()

            async def record(started: float = started) -> None:  # in the connection's slot: see SmtpPool.send
                SMTP_SECONDS.observe(time.perf_counter() - started)
                await self._durably(lambda: self.store.mark_sent(event.event_id), keep_going=True)

            result = await self.pool.send(mail.message, on_sent=record)
            ATTEMPTS.labels(result.outcome.value).inc()
            if result.outcome is Outcome.SENT:
                MAILS.labels(event.type.value, "sent").inc()
                return
            if result.outcome is Outcome.PERMANENT:
                await self._fail(mail, "smtp_rejected", result.detail)
                return
            if time.monotonic() - first >= s.mailer_give_up_after_s:
                await self._fail(mail, "retries_exhausted", result.detail)
                return
            if self._stop.is_set():
                raise _Abandoned()
            wait = delay * (1 + random.uniform(-s.mailer_retry_jitter, s.mailer_retry_jitter))
            log.warning("mail for event %s not sent (%s); retrying in %.1fs", event.event_id, result.detail, wait)
            try:
                await self.store.note_error(event.event_id, result.detail)
            except Exception:  # noqa: BLE001 - informational only
                pass
            try:
                await asyncio.wait_for(self._stop.wait(), wait)
                raise _Abandoned()  # stopping: the next mailer retries it
            except TimeoutError:
                pass
            delay = min(delay * 2, s.mailer_retry_max_s)

    async def _fail(self, mail: _Mail, reason: str, detail: str) -> None:
        """A mail that will not be sent goes to the DLQ (produced first), then its row is `failed`."""
        event = mail.event
        log.error("mail for event %s (%s) dead-lettered: %s: %s", event.event_id, event.type.value, reason, detail)
        await self._dead_letter(mail.record, reason, detail)
        await self._durably(lambda: self.store.mark_failed(event.event_id, f"{reason}: {detail}"))
        MAILS.labels(event.type.value, "dead_lettered").inc()

    async def _dead_letter(self, record: ConsumerRecord, reason: str, detail: str) -> None:
        assert self.dlq is not None
        dlq = self.dlq
        await self._durably(lambda: dlq.send(record, reason, detail, payload=redact_links(record.value)))
        DEAD_LETTERS.labels(reason).inc()

    # ---- durable effects ------------------------------------------------------------------------
    async def _durably(self, effect: Callable[[], Awaitable[T]], *, keep_going: bool = False) -> T:
        """Retry an effect until it succeeds. When stopping, give up (the offset stays uncommitted), unless
        `keep_going`: recording a mail the relay accepted is worth a few more tries."""
        delay, tries = 0.1, 0
        while True:
            try:
                return await effect()
            except Exception:
                tries += 1
                if self._stop.is_set() and (not keep_going or tries >= 20):
                    raise _Abandoned() from None
                log.exception("mailer effect failed; retrying in %.1fs", delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _commit(self, force: bool = False, only: set[TopicPartition] | None = None) -> None:
        assert self.consumer is not None
        now = time.monotonic()
        if not force and now - self._last_commit < 0.2:
            return
        self._last_commit = now
        await self.offsets.commit(self.consumer, only)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._commit(force=True, only=revoked)
        self.offsets.forget(revoked)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, mailer: Mailer) -> None:
        self.mailer = mailer

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.mailer.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        return None
