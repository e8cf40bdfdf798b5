"""The `mail_sent` ledger (schemas/mail_tables.py): claim before the SMTP transaction, mark after it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.mail_tables import FAILED, SENDING, SENT
from schemas.mail_tables import mail_sent as M


class Claim(StrEnum):
    NEW = "new"  # never attempted: send
    IN_DOUBT = "in_doubt"  # a mailer stopped between claiming and recording: send again, same Message-ID
    DONE = "done"  # sent, or dead-lettered: send nothing


@dataclass(frozen=True)
class MailKey:
    event_id: str
    event_type: str
    message_id: str


class MailStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    async def claim(self, keys: list[MailKey]) -> dict[str, Claim]:
        """Mark each mail `sending` (one transaction for the batch) and say which ones still need sending."""
        now = datetime.now(UTC)
        ids = list({k.event_id for k in keys})
        async with self.engine.begin() as conn:
            rows = (await conn.execute(select(M.c.event_id, M.c.status).where(M.c.event_id.in_(ids)))).all()
            known = {r.event_id: r.status for r in rows}
            fresh = [k for k in {k.event_id: k for k in keys}.values() if k.event_id not in known]
            if fresh:
                await conn.execute(self._insert(M).on_conflict_do_nothing(index_elements=["event_id"]), [
                    {"event_id": k.event_id, "event_type": k.event_type, "message_id": k.message_id,
                     "status": SENDING, "attempts": 1, "created_at": now, "updated_at": now} for k in fresh])
            doubtful = [i for i, status in known.items() if status == SENDING]
            if doubtful:
                await conn.execute(update(M).where(M.c.event_id.in_(doubtful), M.c.status == SENDING)
                                   .values(attempts=M.c.attempts + 1, updated_at=now))
        out = {k.event_id: Claim.NEW for k in fresh}
        out.update({i: Claim.IN_DOUBT if s == SENDING else Claim.DONE for i, s in known.items()})
        return out

    async def mark_sent(self, event_id: str) -> None:
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(update(M).where(M.c.event_id == event_id, M.c.status == SENDING)
                               .values(status=SENT, sent_at=now, updated_at=now, last_error=None))

    async def mark_failed(self, event_id: str, error: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(M).where(M.c.event_id == event_id, M.c.status == SENDING)
                               .values(status=FAILED, last_error=error[:2000], updated_at=datetime.now(UTC)))

    async def note_error(self, event_id: str, error: str) -> None:
        """The last transient failure, for operators looking at a stuck mail."""
        async with self.engine.begin() as conn:
            await conn.execute(update(M).where(M.c.event_id == event_id, M.c.status == SENDING)
                               .values(last_error=error[:2000], updated_at=datetime.now(UTC)))

    async def status(self, event_id: str) -> str | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(M.c.status).where(M.c.event_id == event_id))).scalar_one_or_none()
