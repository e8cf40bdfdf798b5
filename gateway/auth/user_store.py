"""The `users` table: look-ups and writes, nothing else (rules live in the services)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.auth.token_issuer import TokenSubject
from lotabots.ids import new_id
from schemas.auth_tables import users as U
from schemas.relational import tenants


@dataclass(frozen=True)
class UserRecord:
    """One row of `users`."""

    id: str
    tenant_id: str
    email: str
    password_hash: str | None
    role: str
    platform_operator: bool
    email_verified_at: datetime | None
    created_at: datetime
    disabled_at: datetime | None

    @property
    def subject(self) -> TokenSubject:
        return TokenSubject(self.id, self.tenant_id, self.role, self.platform_operator)

    @property
    def active(self) -> bool:
        return self.disabled_at is None

    @classmethod
    def from_row(cls, row: Any) -> UserRecord:
        return cls(row.id, row.tenant_id, row.email, row.password_hash, row.role, bool(row.platform_operator),
                   row.email_verified_at, row.created_at, row.disabled_at)


class UserStore:
    """Reads and writes users (and, at registration, their new tenant)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def by_email(self, email: str) -> UserRecord | None:
        return await self._one(U.c.email == email)

    async def by_id(self, user_id: str, tenant_id: str | None = None) -> UserRecord | None:
        if tenant_id is None:
            return await self._one(U.c.id == user_id)
        return await self._one(U.c.id == user_id, U.c.tenant_id == tenant_id)

    async def list_in_tenant(self, tenant_id: str) -> list[UserRecord]:
        async with self._engine.connect() as conn:
            rows = await conn.execute(select(U).where(U.c.tenant_id == tenant_id).order_by(U.c.id))
            return [UserRecord.from_row(r) for r in rows]

    async def create_with_tenant(
        self, *, email: str, password_hash: str, tenant_name: str, tier: str, role: str, now: datetime,
        verified: bool,
    ) -> UserRecord | None:
        """A new tenant with this user in it; None (and nothing written) if the email is taken."""
        tenant_id = new_id("ten")
        values = dict(id=new_id("usr"), tenant_id=tenant_id, email=email, password_hash=password_hash, role=role,
                      platform_operator=False, email_verified_at=now if verified else None, created_at=now,
                      password_changed_at=now, disabled_at=None)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(tenants.insert().values(id=tenant_id, name=tenant_name, tier=tier, created_at=now))
                await conn.execute(U.insert().values(**values))
        except IntegrityError:
            return None
        return _record(values)

    async def create_in_tenant(self, *, tenant_id: str, email: str, role: str, now: datetime) -> UserRecord | None:
        """An invited user with no password yet; None if the email is taken."""
        values = dict(id=new_id("usr"), tenant_id=tenant_id, email=email, password_hash=None, role=role,
                      platform_operator=False, email_verified_at=None, created_at=now, password_changed_at=None,
                      disabled_at=None)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(U.insert().values(**values))
        except IntegrityError:
            return None
        return _record(values)

    async def set_password(self, user_id: str, password_hash: str | None, now: datetime, *,
                           verify_email: bool = False) -> None:
        values: dict[str, Any] = {"password_hash": password_hash, "password_changed_at": now}
        if verify_email:
            values["email_verified_at"] = func.coalesce(U.c.email_verified_at, now)
        await self._update(user_id, **values)

    async def mark_email_verified(self, user_id: str, now: datetime) -> None:
        await self._update(user_id, email_verified_at=func.coalesce(U.c.email_verified_at, now))

    async def set_role(self, user_id: str, role: str) -> None:
        await self._update(user_id, role=role)

    async def disable(self, user_id: str, now: datetime) -> None:
        await self._update(user_id, disabled_at=now, password_hash=None)

    async def set_platform_operator(self, email: str, flag: bool) -> bool:
        async with self._engine.begin() as conn:
            res = await conn.execute(update(U).where(U.c.email == email).values(platform_operator=flag))
        return res.rowcount == 1

    async def count_active_owners(self, tenant_id: str) -> int:
        async with self._engine.connect() as conn:
            return int((await conn.execute(
                select(func.count()).select_from(U)
                .where(U.c.tenant_id == tenant_id, U.c.role == "owner", U.c.disabled_at.is_(None))
            )).scalar_one())

    async def _one(self, *where: Any) -> UserRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(select(U).where(*where))).first()
        return UserRecord.from_row(row) if row is not None else None

    async def _update(self, user_id: str, **values: Any) -> None:
        async with self._engine.begin() as conn:
            await conn.execute(update(U).where(U.c.id == user_id).values(**values))


def _record(values: dict[str, Any]) -> UserRecord:
    return UserRecord(**{name: values[name] for name in UserRecord.__dataclass_fields__})
