"""One auth event -> one MIME message (text + HTML), with a Message-ID derived from the event id.

The Message-ID is the same every time the event is mailed (a redelivery, a resend after a crash), so a
receiving system that dedupes on Message-ID keeps one copy; the development SMTP server does.
"""

from __future__ import annotations

import re
from datetime import UTC
from email import charset
from email.message import EmailMessage, Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, parseaddr

from consumers.mail_templates import NotMailable, render
from lotabots.settings import Settings
from schemas.auth_events import AuthEvent

_UTF8_QP = charset.Charset("utf-8")
_UTF8_QP.body_encoding = charset.QP  # links stay readable and lines short in any relay
_ID_SAFE = re.compile(r"[^A-Za-z0-9._-]")
_LINK_FIELD = re.compile(rb'("link"\s*:\s*)"(?:[^"\\]|\\.)*"')


def message_id_domain(settings: Settings) -> str:
    if settings.mail_message_id_domain:
        return settings.mail_message_id_domain
    _, address = parseaddr(settings.mail_from)
    return address.rpartition("@")[2] or "lotabots.localhost"


def message_id(event_id: str, domain: str) -> str:
    """`<event id@domain>`: stable per event, so duplicates are recognisable by any receiver."""
    return f"<{_ID_SAFE.sub('_', event_id)}.auth@{domain}>"


def site_url(settings: Settings) -> str:
    return (settings.public_base_url or f"http://{settings.gateway_host}:{settings.gateway_port}").rstrip("/")


def compose(event: AuthEvent, settings: Settings, *, domain: str | None = None) -> Message:
    """The mail for `event`. Raises NotMailable (a poison event) when it cannot be built.

    ASCII headers (the usual case) take the `email.mime` classes: ten times cheaper than `EmailMessage`,
    which was most of the mailer's CPU. Non-ASCII ones take `EmailMessage` (RFC 2047 / SMTPUTF8 right)."""
    mail = render(event, product=settings.mail_product_name, site_url=site_url(settings))
    to = event.email or ""
    headers = {"From": settings.mail_from, "To": to, "Subject": mail.subject}
    if any("\r" in v or "\n" in v for v in headers.values()):
        raise NotMailable("unusable header: a line break in a header value")
    if "@" not in parseaddr(to)[1]:
        raise NotMailable("the recipient is not an email address")
    headers |= {
        "Date": format_datetime(event.at if event.at.tzinfo else event.at.replace(tzinfo=UTC)),
        "Message-ID": message_id(event.event_id, domain or message_id_domain(settings)),
        "Auto-Submitted": "auto-generated",  # RFC 3834: no vacation replies
        "X-LotaBots-Event": event.type.value,
    }
    if all(v.isascii() for v in headers.values()):
        msg: Message = MIMEMultipart("alternative")
        for name, value in headers.items():
            msg[name] = value
        msg.attach(MIMEText(mail.text, "plain", _UTF8_QP))
        msg.attach(MIMEText(mail.html, "html", _UTF8_QP))
        return msg
    modern = EmailMessage()
    try:
        for name, value in headers.items():
            modern[name] = value
    except (ValueError, TypeError) as exc:  # a header that cannot be written (bad address)
        raise NotMailable(f"unusable header: {type(exc).__name__}") from None
    modern.set_content(mail.text)
    modern.add_alternative(mail.html, subtype="html")
    return modern


def redact_links(raw: bytes | None) -> str:
    """A message's text with every JSON `link` value blanked: dead letters must not carry live tokens."""
    return _LINK_FIELD.sub(rb'\1"[redacted]"', raw or b"").decode(errors="replace")
