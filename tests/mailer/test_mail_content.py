"""Pure parts of the mailer: templates, composition, Message-ID, redaction, failure classification, mailbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import aiosmtplib
import pytest

from consumers.mail_compose import compose, message_id, redact_links
from consumers.mail_sender import Outcome, SmtpTarget, classify
from consumers.mail_templates import MAILED_TYPES, NotMailable, render, template_for
from lotabots.dev_smtp import Mailbox
from lotabots.kafka_io import encode
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent, AuthEventType, PasswordResetReason

LINK = "https://console.test/account/reset-password#token=lbt_S3cr3t&x=<y>"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _event(type_: AuthEventType, **kw) -> AuthEvent:  # type: ignore[no-untyped-def]
    fields = {"event_id": "aev_test1", "type": type_, "at": NOW, "email": "ann@example.com", "link": LINK,
              "link_expires_at": NOW + timedelta(hours=1), **kw}
    return AuthEvent(**fields)


def _parts(msg) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    parsed = BytesParser(policy=policy.default).parsebytes(msg.as_bytes())
    return (parsed.get_body(("plain",)).get_content(), parsed.get_body(("html",)).get_content())


@pytest.mark.parametrize("type_", [t for t, tpl in MAILED_TYPES.items() if tpl.needs_link])
def test_every_link_mail_carries_the_link_in_text_and_escaped_in_html(type_: AuthEventType) -> None:
    msg = compose(_event(type_), Settings(mail_from="Acme <mail@acme.test>"))
    text, html = _parts(msg)
    assert LINK in text and "2026-03-01 13:00 UTC" in text
    assert LINK.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in html
    assert LINK not in html  # raw '<' never reaches the HTML
    assert msg["To"] == "ann@example.com" and msg["From"] == "Acme <mail@acme.test>"
    assert msg["Message-ID"] == "<aev_test1.auth@acme.test>" and msg["Auto-Submitted"] == "auto-generated"


def test_subjects_differ_per_purpose_and_admin_forced_reset_says_so() -> None:
    subjects = {t: render(_event(t), product="P").subject for t in MAILED_TYPES}
    assert len(set(subjects.values())) == len(MAILED_TYPES)
    forced = render(_event(AuthEventType.PASSWORD_RESET_REQUESTED, reason=PasswordResetReason.ADMIN_FORCED), product="P")
    assert "administrator" in forced.subject and "administrator" in forced.text


def test_existing_account_mail_needs_no_link_and_points_at_the_site() -> None:
    mail = render(_event(AuthEventType.REGISTRATION_ATTEMPT_EXISTING_ACCOUNT, link=None, link_expires_at=None),
                  product="P", site_url="https://console.test")
    assert "already has one" in mail.text and "https://console.test" in mail.text


def test_audit_only_events_mail_nobody() -> None:
    for type_ in (AuthEventType.PASSWORD_CHANGED, AuthEventType.ACCOUNT_LOCKED, AuthEventType.USER_REGISTERED,
                  AuthEventType.REFRESH_TOKEN_REUSE_DETECTED, AuthEventType.PASSWORD_RESET_UNKNOWN_EMAIL):
        assert template_for(_event(type_)) is None


@pytest.mark.parametrize("fields", [{"link": None}, {"email": None}, {"email": "a@b.test\r\nBcc: x@evil.test"},
                                    {"email": "not-an-address"}])
def test_events_that_cannot_make_a_mail_are_refused(fields: dict) -> None:
    with pytest.raises(NotMailable):
        compose(_event(AuthEventType.EMAIL_VERIFICATION_REQUESTED, **fields), Settings())


def test_dollar_signs_in_values_are_not_expanded() -> None:
    mail = render(_event(AuthEventType.USER_INVITED, link="https://x.test/#token=$product$link"), product="P")
    assert "https://x.test/#token=$product$link" in mail.text


def test_message_id_is_stable_and_header_safe() -> None:
    assert message_id("aev_1", "d.test") == message_id("aev_1", "d.test") == "<aev_1.auth@d.test>"
    assert message_id("a b<c>", "d.test") == "<a_b_c_.auth@d.test>"


def test_dead_letter_payload_never_carries_the_link() -> None:
    raw = encode(_event(AuthEventType.PASSWORD_RESET_REQUESTED))
    assert b"lbt_S3cr3t" in raw
    redacted = redact_links(raw)
    assert "lbt_S3cr3t" not in redacted and '"link":"[redacted]"' in redacted and "aev_test1" in redacted
    assert "lbt_S3cr3t" not in redact_links(b'{"oops": 1, "link": "x#token=lbt_S3cr3t\\"more"')


@pytest.mark.parametrize(("exc", "outcome"), [
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b")]), Outcome.PERMANENT),
    (aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(450, "greylisted", "a@b")]), Outcome.TRANSIENT),
    (aiosmtplib.SMTPDataError(554, "spam"), Outcome.PERMANENT),
    (aiosmtplib.SMTPDataError(451, "try later"), Outcome.TRANSIENT),
    (aiosmtplib.SMTPSenderRefused(553, "not allowed", "from@x"), Outcome.TRANSIENT),  # our configuration
    (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), Outcome.TRANSIENT),
    (aiosmtplib.SMTPConnectError("refused"), Outcome.TRANSIENT),
    (aiosmtplib.SMTPServerDisconnected("gone"), Outcome.TRANSIENT),
    (aiosmtplib.SMTPReadTimeoutError("slow"), Outcome.TRANSIENT),
    (ValueError("no recipients"), Outcome.PERMANENT),
])
def test_failures_are_classified(exc: BaseException, outcome: Outcome) -> None:
    assert classify(exc).outcome is outcome


def test_smtp_target_from_settings_never_shows_the_password() -> None:
    dev = SmtpTarget.from_settings(Settings(dev_smtp_port=2525))
    assert (dev.host, dev.port, dev.tls) == ("127.0.0.1", 2525, "none")
    relay = Settings(smtp_host="smtp.example.com", smtp_tls="tls", smtp_username="u", smtp_password="hunter2hunter2")
    target = SmtpTarget.from_settings(relay)
    assert (target.port, target.tls, target.password) == (465, "tls", "hunter2hunter2")
    assert "hunter2" not in repr(relay) and "hunter2" not in target.describe()
    assert SmtpTarget.from_settings(Settings(smtp_host="r.test")).port == 587


def test_mailbox_keeps_one_file_per_message_id(tmp_path: Path) -> None:
    box = Mailbox(tmp_path / "mail")
    first = b"Message-ID: <m1@x>\r\nSubject: one\r\nTo: a@b.test\r\n\r\nbody\r\n"
    assert box.store(first) is True
    assert box.store(first.replace(b"one", b"again")) is False
    assert box.store(b"Message-ID: <m2@x>\r\nSubject: two\r\n\r\nbody\r\n") is True
    mails = box.list()
    assert sorted(m.message_id for m in mails) == ["<m1@x>", "<m2@x>"]
    assert {m.subject for m in mails} == {"one", "two"}
    assert (tmp_path / "mail" / f"{mails[0].id}.eml").stat().st_mode & 0o077 == 0
    assert box.read(mails[0].id) is not None and box.read("../etc/passwd") is None
    assert not list((tmp_path / "mail").glob(".*.tmp"))


def test_non_ascii_headers_take_the_full_email_api() -> None:
    msg = compose(_event(AuthEventType.USER_INVITED, email="jürgen@example.com"),
                  Settings(mail_product_name="Lötabots", mail_from="Lötabots <mail@acme.test>"))
    parsed = BytesParser(policy=policy.default).parsebytes(msg.as_bytes(policy=policy.SMTPUTF8))
    assert str(parsed["Subject"]) == "You are invited to Lötabots" and str(parsed["To"]) == "jürgen@example.com"
    assert LINK in parsed.get_body(("plain",)).get_content()
