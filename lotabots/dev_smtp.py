"""The development SMTP server (`lotabots serve dev-smtp`, started by `lotabots up` when no relay is set).

An aiosmtpd server on loopback that stores every mail it accepts as `<data_dir>/mail/<digest>.eml`, the
digest being that of the mail's Message-ID: a second mail with a Message-ID already stored is answered
250 and not stored again, as receiving systems that dedupe on Message-ID do. So the mailbox holds one
mail per auth event even when the mailer resent one after a crash (docs/mailer.md). Files are 0600: the
mails carry live verification and reset links. Development only: it accepts mail for any address and
delivers none.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import uuid
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser, BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StoredMail:
    id: str  # the file's stem
    message_id: str
    sender: str
    to: str
    subject: str
    date: str
    size: int
    received_at: float  # epoch seconds (file mtime)


class Mailbox:
    """Mails as .eml files in one folder, one per Message-ID."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def store(self, raw: bytes) -> bool:
        """Store one mail; False when a mail with the same Message-ID is already stored (nothing written)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        mid = (BytesHeaderParser(policy=policy.default).parsebytes(raw).get("Message-ID") or "").strip()
        name = hashlib.sha256(mid.encode()).hexdigest()[:40] if mid else f"nomid-{uuid.uuid4().hex}"
        final = self.directory / f"{name}.eml"
        tmp = self.directory / f".{name}.{uuid.uuid4().hex}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, final)  # atomic, and fails if a mail with this Message-ID is already there
            except FileExistsError:
                return False
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def list(self) -> list[StoredMail]:
        """Every stored mail, newest first."""
        if not self.directory.is_dir():
            return []
        out = []
        for path in self.directory.glob("*.eml"):
            try:
                stat = path.stat()
                with path.open("rb") as f:
                    headers = BytesHeaderParser(policy=policy.default).parse(f)
            except OSError:
                continue
            out.append(StoredMail(path.stem, str(headers.get("Message-ID", "")), str(headers.get("From", "")),
                                  str(headers.get("To", "")), str(headers.get("Subject", "")),
                                  str(headers.get("Date", "")), stat.st_size, stat.st_mtime))
        out.sort(key=lambda m: m.received_at, reverse=True)
        return out

    def read(self, mail_id: str) -> EmailMessage | None:
        if not mail_id.replace("-", "").isalnum():
            return None
        path = self.directory / f"{mail_id}.eml"
        if not path.is_file():
            return None
        msg = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(msg, EmailMessage)
        return msg


class MailboxHandler:
    """aiosmtpd handler: every accepted DATA goes to the mailbox; counts what it received."""

    def __init__(self, mailbox: Mailbox) -> None:
        self.mailbox = mailbox
        self.received = 0  # DATA transactions answered 250 (duplicates included)
        self.duplicates = 0  # of which carried a Message-ID already stored

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        stored = await asyncio.to_thread(self.mailbox.store, data)
        self.received += 1
        if not stored:
            self.duplicates += 1
            return "250 OK: duplicate Message-ID, kept the first copy"
        return "250 OK: stored"


def smtp_factory(handler: Any) -> SMTP:
    return SMTP(handler, hostname="lotabots-dev-smtp", ident="LotaBots development SMTP",
                enable_SMTPUTF8=True, data_size_limit=10 * 1024 * 1024)


async def serve(host: str, port: int, directory: Path, stop: asyncio.Event) -> None:
    handler = MailboxHandler(Mailbox(directory))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: smtp_factory(handler), host, port)
    log.info("development SMTP server on %s:%d storing mail under %s", host, port, directory)
    try:
        await stop.wait()
    finally:
        server.close()
        await server.wait_closed()


def run_dev_smtp(settings: Any) -> int:
    """`lotabots serve dev-smtp`: until SIGTERM/SIGINT."""
    import signal

    # aiosmtpd logs every command at INFO (and message lines at DEBUG): the mailbox is the record here
    logging.getLogger("mail.log").setLevel(logging.WARNING)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings.dev_smtp_host, settings.dev_smtp_port, settings.dev_mail_dir, stop)

    asyncio.run(main())
    return 0
