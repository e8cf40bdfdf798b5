"""The mailer against real Kafka, PostgreSQL and a real SMTP server (aiosmtpd on loopback).

Every wait is for an exact state (these mails stored, the group's offsets all committed), never a sleep;
the timeouts only bound how long a broken mailer can hang the test.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import select

from consumers.mail_compose import message_id
from gateway.auth.events import AuthEventPublisher, KafkaAuthEventSink
from gateway.auth.one_time_tokens import IssuedOneTimeToken, TokenPurpose
from lotabots.db import make_engine
from lotabots.ids import new_id
from lotabots.kafka_io import encode
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent, AuthEventType
from schemas.mail_tables import mail_sent
from schemas.topics import AUTH_EVENTS, AUTH_EVENTS_DLQ
from tests.mailer.conftest import REJECT_PREFIX, MailerProcesses, SmtpServer, group_caught_up, wait_until

pytestmark = pytest.mark.integration
DOMAIN = "lotabots.localhost"  # the default mail_from's domain: the right-hand side of every Message-ID


def _event(type_: AuthEventType = AuthEventType.PASSWORD_RESET_REQUESTED, **kw) -> AuthEvent:  # type: ignore[no-untyped-def]
    fields = {"event_id": new_id("aev"), "type": type_, "at": datetime.now(UTC), "user_id": new_id("usr"),
              "tenant_id": "ten_x", "email": f"{new_id('u')}@example.test",
              "link": f"https://console.test/account/reset-password#token={new_id('tok')}",
              "link_expires_at": datetime.now(UTC) + timedelta(hours=1), **kw}
    return AuthEvent(**fields)


async def _publish(producer: AIOKafkaProducer, events: list[AuthEvent]) -> None:
    for e in events:
        await producer.send(AUTH_EVENTS, encode(e), key=e.kafka_key.encode())
    await producer.flush()


def _mid(event: AuthEvent) -> str:
    return message_id(event.event_id, DOMAIN)


async def _rows(url: str, ids: list[str]) -> dict[str, tuple[str, int]]:
    engine = make_engine(url)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(select(mail_sent.c.event_id, mail_sent.c.status, mail_sent.c.attempts,
                                              mail_sent.c.last_error).where(mail_sent.c.event_id.in_(ids)))).all()
    finally:
        await engine.dispose()
    return {r.event_id: (r.status, r.attempts, r.last_error) for r in rows}


async def _caught_up(mailers: MailerProcesses) -> None:
    await wait_until(lambda: group_caught_up(mailers.env["LOTABOTS_KAFKA_BOOTSTRAP"], mailers.group), timeout=120,
                     interval=0.3, what=f"group {mailers.group} committed every offset\n{mailers.logs()}")


async def test_each_mail_type_arrives_once_with_the_right_link(
    mailers: MailerProcesses, smtp: SmtpServer, producer: AIOKafkaProducer
) -> None:
    publisher = AuthEventPublisher(KafkaAuthEventSink(producer), Settings(public_base_url="https://console.test"))
    expires = datetime.now(UTC) + timedelta(hours=2)
    tokens = {p: IssuedOneTimeToken(new_id("tok"), expires) for p in TokenPurpose}
    email = {p: f"{new_id('u')}@example.test" for p in TokenPurpose}
    for type_, purpose in ((AuthEventType.EMAIL_VERIFICATION_REQUESTED, TokenPurpose.VERIFY_EMAIL),
                           (AuthEventType.PASSWORD_RESET_REQUESTED, TokenPurpose.RESET_PASSWORD),
                           (AuthEventType.USER_INVITED, TokenPurpose.INVITATION)):
        await publisher.emit_link(type_, purpose, tokens[purpose], user_id=new_id("usr"), tenant_id="ten_x",
                                  email=email[purpose])
    existing = f"{new_id('u')}@example.test"
    await publisher.emit(AuthEventType.REGISTRATION_ATTEMPT_EXISTING_ACCOUNT, email=existing)
    await publisher.emit(AuthEventType.PASSWORD_CHANGED, user_id=new_id("usr"), tenant_id="ten_x")  # no mail
    mailers.spawn()

    recipients = {*email.values(), existing}
    await wait_until(lambda: len([m for m in smtp.mailbox.list() if m.to in recipients]) == 4,
                     what=f"4 mails\n{mailers.logs()}")
    await _caught_up(mailers)
    mine = [m for m in smtp.mailbox.list() if m.to in recipients]
    assert len(mine) == 4
    paths = {TokenPurpose.VERIFY_EMAIL: "verify-email", TokenPurpose.RESET_PASSWORD: "reset-password",
             TokenPurpose.INVITATION: "accept-invitation"}
    by_to = {m.to: smtp.mailbox.read(m.id) for m in mine}
    for purpose, address in email.items():
        msg = by_to[address]
        assert msg is not None
        link = f"https://console.test/account/{paths[purpose]}#token={tokens[purpose].token}"
        assert link in msg.get_body(("plain",)).get_content()
        assert f'href="{link}"' in msg.get_body(("html",)).get_content()
    assert "already has one" in by_to[existing].get_body(("plain",)).get_content()
    assert all(n == 1 for mid, n in smtp.handler.raw.items() if mid in {m.message_id for m in mine})


async def test_a_redelivered_event_sends_no_second_mail(
    mailers: MailerProcesses, smtp: SmtpServer, producer: AIOKafkaProducer, mail_env: dict[str, str]
) -> None:
    event = _event()
    await _publish(producer, [event, event])  # a duplicate in the same batch
    mailers.spawn()
    await wait_until(lambda: smtp.stored({_mid(event)}), what=f"the mail\n{mailers.logs()}")
    await _caught_up(mailers)
    await _publish(producer, [event])  # redelivered after it was sent (producer retry, replay, ...)
    later = _event()
    await _publish(producer, [later])
    await wait_until(lambda: smtp.stored({_mid(later)}), what="the later mail")
    await _caught_up(mailers)
    assert smtp.handler.raw[_mid(event)] == 1  # over the wire, not only in the mailbox
    assert (await _rows(mail_env["LOTABOTS_DATABASE_URL"], [event.event_id]))[event.event_id][:2] == ("sent", 1)


async def test_smtp_down_mails_are_retried_then_delivered_once_when_it_is_back(
    mailers: MailerProcesses, smtp: SmtpServer, producer: AIOKafkaProducer, mail_env: dict[str, str]
) -> None:
    smtp.stop()
    events = [_event() for _ in range(5)]
    await _publish(producer, events)
    mailers.spawn()
    ids = [e.event_id for e in events]

    async def all_failed_once() -> bool:  # each mail was tried and failed to connect (recorded in the ledger)
        rows = await _rows(mail_env["LOTABOTS_DATABASE_URL"], ids)
        return len(rows) == 5 and all(r[0] == "sending" and r[2] and "connect" in r[2].lower() for r in rows.values())

    await wait_until(all_failed_once, interval=0.2, what=f"5 failed attempts\n{mailers.logs()}")
    assert smtp.accepted == 0
    smtp.start()
    mids = {_mid(e) for e in events}
    await wait_until(lambda: len(smtp.stored(mids)) == 5, what=f"5 mails after the server is back\n{mailers.logs()}")
    await _caught_up(mailers)
    assert {m: smtp.handler.raw[m] for m in mids} == dict.fromkeys(mids, 1)  # never twice, not even on the wire
    rows = await _rows(mail_env["LOTABOTS_DATABASE_URL"], ids)
    assert {r[0] for r in rows.values()} == {"sent"}


async def test_sigkill_mid_batch_sends_every_mail_exactly_once_per_event_id(
    mailers: MailerProcesses, smtp: SmtpServer, producer: AIOKafkaProducer, mail_env: dict[str, str]
) -> None:
    n = 400
    events = [_event() for _ in range(n)]
    mids = {_mid(e) for e in events}
    await _publish(producer, events)
    kills = 0
    for _ in range(2):  # two mailers SIGKILLed at random points while they are sending
        before = smtp.accepted
        at = before + random.randint(10, 120)
        mailer = mailers.spawn("mailer-killed")
        await wait_until(lambda at=at: smtp.accepted >= at, interval=0.002, timeout=180,
                         what=f"{at} mails accepted\n{mailers.logs()}")
        mailer.kill()
        kills += 1
        assert len(smtp.stored(mids)) < n, "the kill must land mid-batch: raise n"
    mailers.spawn("mailer-last")
    await wait_until(lambda: len(smtp.stored(mids)) == n, interval=0.2, timeout=300,
                     what=f"all {n} mails\n{mailers.logs()}")
    await _caught_up(mailers)

    stored = smtp.stored(mids)
    assert set(stored) == mids and set(stored.values()) == {1}  # SMTP side: one mail per event id
    rows = await _rows(mail_env["LOTABOTS_DATABASE_URL"], [e.event_id for e in events])
    assert {r[0] for r in rows.values()} == {"sent"} and len(rows) == n
    # Over the wire, a mail may have gone twice only if a kill fell between the relay's 250 and the `sent`
    # row: such a mail was found `sending` and resent (same Message-ID, attempts >= 2), at most one per open
    # SMTP connection per kill (4 connections by default).
    wire = {m: smtp.handler.raw[m] for m in mids}
    twice = [e for e in events if wire[_mid(e)] > 1]
    assert all(wire[m] <= 1 + kills for m in mids)
    assert all(rows[e.event_id][1] >= 2 for e in twice)
    assert len(twice) <= kills * 4
    print(f"SIGKILL test: {n} mails, {kills} kills, {len(twice)} resent after a kill inside the 250 -> `sent` "
          f"window (deduped by Message-ID on the SMTP side)")


async def test_poison_refused_and_expired_mails_go_to_the_dead_letter_topic(
    mailers: MailerProcesses, smtp: SmtpServer, producer: AIOKafkaProducer, mail_env: dict[str, str]
) -> None:
    garbage = await producer.send_and_wait(AUTH_EVENTS, b'{"not": "an auth event", "link": "x#token=lbt_poison"}')
    no_link = _event(AuthEventType.EMAIL_VERIFICATION_REQUESTED, link=None)
    refused = _event(email=f"{REJECT_PREFIX}{new_id('u')}@example.test")
    expired = _event(link_expires_at=datetime.now(UTC) - timedelta(minutes=1))
    fine = _event()
    await _publish(producer, [no_link, refused, expired, fine])
    mailers.spawn()
    await wait_until(lambda: smtp.stored({_mid(fine)}), what=f"the good mail\n{mailers.logs()}")
    await _caught_up(mailers)

    letters = await _dead_letters(mail_env["LOTABOTS_KAFKA_BOOTSTRAP"], 4, lambda d: d["consumer"] == "mailer" and (
        (d["source_partition"], d["source_offset"]) == (garbage.partition, garbage.offset)
        or any(e.event_id in d["payload"] for e in (no_link, refused, expired))))
    codes = {}
    for d in letters:
        key = next((e.event_id for e in (no_link, refused, expired) if e.event_id in d["payload"]), "garbage")
        codes[key] = d["error_code"]
        assert "token=" not in d["payload"] and d["source_topic"] == AUTH_EVENTS
    assert codes == {"garbage": "invalid_auth_event", no_link.event_id: "unmailable_event",
                     refused.event_id: "smtp_rejected", expired.event_id: "link_expired"}
    rows = await _rows(mail_env["LOTABOTS_DATABASE_URL"], [refused.event_id, expired.event_id, no_link.event_id])
    assert rows[refused.event_id][0] == rows[expired.event_id][0] == "failed"
    assert "550" in rows[refused.event_id][2]
    assert no_link.event_id not in rows  # never claimed: nothing to send
    assert smtp.stored({_mid(refused), _mid(expired)}) == {}


async def _dead_letters(bootstrap: str, count: int, mine) -> list[dict]:  # type: ignore[no-untyped-def]
    consumer = AIOKafkaConsumer(AUTH_EVENTS_DLQ, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                group_id=None)
    await consumer.start()
    found: list[dict] = []
    try:
        async def enough() -> bool:
            batch = await consumer.getmany(timeout_ms=300)
            found.extend(d for records in batch.values() for r in records if mine(d := json.loads(r.value)))
            return len(found) >= count

        await wait_until(enough, timeout=60, interval=0, what=f"{count} dead letters")
    finally:
        await consumer.stop()
    return found

