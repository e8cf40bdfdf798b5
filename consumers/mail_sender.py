"""SMTP submission for the mailer: a few kept-open aiosmtplib connections, and what each failure means.

`SmtpPool.send` never raises for SMTP trouble: it answers an outcome the mailer acts on. Permanent means
retrying the same mail cannot help (a 5xx for the recipient or the content); transient covers everything
that may pass later (the relay is down or slow, a 4xx, and configuration errors such as a refused login,
a 5xx for our own From: or a missing STARTTLS: an operator fixes those, and the mails wait).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.message import Message
from enum import StrEnum

import aiosmtplib

from lotabots.settings import Settings

_IDLE_S = 30.0  # a connection unused this long is closed rather than reused (relays drop idle ones)


class Outcome(StrEnum):
    SENT = "sent"
    TRANSIENT = "transient"
    PERMANENT = "permanent"


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    detail: str = ""  # the relay's answer or the error; never the message (it holds the link)
    code: int | None = None


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    tls: str  # none | starttls | tls
    username: str
    password: str | None
    validate_certs: bool
    timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpTarget:
        if settings.smtp_is_dev:  # the development server: plain SMTP on loopback, no AUTH
            return cls(settings.dev_smtp_host, settings.dev_smtp_port, "none", "", None, False, settings.smtp_timeout_s)
        port = settings.smtp_port or {"none": 25, "starttls": 587, "tls": 465}[settings.smtp_tls]
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        return cls(settings.smtp_host, port, settings.smtp_tls, settings.smtp_username, password,
                   settings.smtp_validate_certs, settings.smtp_timeout_s)

    def client(self) -> aiosmtplib.SMTP:
        return aiosmtplib.SMTP(
            hostname=self.host, port=self.port, use_tls=self.tls == "tls",
            start_tls=True if self.tls == "starttls" else False,
            username=self.username or None, password=self.password if self.username else None,
            validate_certs=self.validate_certs, timeout=self.timeout_s,
        )

    def describe(self) -> str:
        auth = f", AUTH as {self.username}" if self.username else ""
        return f"{self.host}:{self.port} ({self.tls}{auth})"


def classify(exc: BaseException) -> SendResult:
    """What a failed SMTP transaction means for the mail."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        detail = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)[:500]
        permanent = any(500 <= c < 600 for c in codes)
        return SendResult(Outcome.PERMANENT if permanent else Outcome.TRANSIENT, f"recipient refused: {detail}",
                          codes[0] if codes else None)
    if isinstance(exc, aiosmtplib.SMTPDataError):  # the content: 5xx = refused for good (policy, size)
        outcome = Outcome.PERMANENT if 500 <= exc.code < 600 else Outcome.TRANSIENT
        return SendResult(outcome, f"message refused: {exc.code} {exc.message}"[:500], exc.code)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SendResult(Outcome.TRANSIENT, f"login refused (check smtp_username/smtp_password): {exc.code}", exc.code)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return SendResult(Outcome.TRANSIENT, f"sender refused (check mail_from): {exc.code} {exc.message}"[:500],
                          exc.code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SendResult(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc.code} {exc.message}"[:500], exc.code)
    if isinstance(exc, ValueError):  # the message itself cannot be submitted (no sender/recipient)
        return SendResult(Outcome.PERMANENT, f"unsendable message: {exc}"[:500])
    return SendResult(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}"[:500])


_CONNECTION_LOST = (aiosmtplib.SMTPServerDisconnected, ConnectionError)


class SmtpPool:
    """At most `size` SMTP connections, each reused for the next mail while it stays healthy."""

    def __init__(self, target: SmtpTarget, size: int) -> None:
        self.target = target
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._slots = asyncio.Semaphore(size)

    async def send(self, message: Message,
                   on_sent: Callable[[], Awaitable[None]] | None = None) -> SendResult:
        """One SMTP transaction. `on_sent` (recording the mail as sent) runs before the connection is used
        again, so at any instant at most `size` accepted mails are not yet recorded: what a crash can resend."""
        async with self._slots:
            smtp = self._take_idle()
            try:
                if smtp is not None:
                    try:
                        await smtp.send_message(message)
                    except _CONNECTION_LOST:  # the relay dropped a kept connection: once more on a fresh one
                        _close(smtp)
                        smtp = None
                if smtp is None:
                    smtp = self.target.client()
                    await smtp.connect()
                    await smtp.send_message(message)
            except (Exception, asyncio.CancelledError) as exc:
                if smtp is not None:
                    _close(smtp)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                return classify(exc)
            try:
                if on_sent is not None:
                    await on_sent()
            finally:
                self._idle.append((smtp, time.monotonic()))
            return SendResult(Outcome.SENT)

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        while self._idle:
            smtp, since = self._idle.pop()
            if now - since < _IDLE_S and smtp.is_connected:
                return smtp
            _close(smtp)
        return None

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for smtp, _ in idle:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(smtp.quit(), 2)
            _close(smtp)


def _close(smtp: aiosmtplib.SMTP) -> None:
    with contextlib.suppress(Exception):
        smtp.close()
