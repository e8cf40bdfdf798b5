"""The mailer's ledger: one row per `auth.events` event id that asks for a mail (docs/mailer.md).

SMTP has no idempotency key, so this row is what makes a redelivered event send nothing: it is claimed
(`sending`) before the SMTP transaction and marked `sent` right after the relay's 250. A `sending` row found
later means a mailer stopped inside that window; the mail is sent again with the same Message-ID (which
the receiving side can dedupe on). `failed` rows were dead-lettered and are never retried.
No link, token or mail body is stored here: only what identifies the mail.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from schemas.relational import Base

SENDING = "sending"
SENT = "sent"
FAILED = "failed"
MAIL_STATES = (SENDING, SENT, FAILED)


class MailSent(Base):
    __tablename__ = "mail_sent"
    __table_args__ = (Index("ix_mail_sent_status_updated", "status", "updated_at"),)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # SMTP transactions started (claims)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


mail_sent = MailSent.__table__
