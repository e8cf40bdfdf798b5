"""Autonomy tables: the tenant's default and maximum level, its rules (per user, task, context,
(task, context)), and the audit trail of human decisions on requests. Same tables on SQLite and PostgreSQL.

Unused parts of a rule's key are stored as "" (not NULL) so the unique constraint holds on every
engine: PostgreSQL treats NULLs in a unique constraint as distinct. A rule's owner is its user_id: "" for
a tenant-wide rule, a user (or API key) id for that user's own rule.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from schemas.relational import Base

# A rule's kind (the `scope` column): what it matches. A `default` rule is always a user's own (the
# tenant's default lives in autonomy_tenant_settings); the others are tenant-wide or a user's own.
RULE_KINDS = ("default", "task", "context", "task_context")
RULE_KEY_SHAPE = (
    "(scope = 'default' AND user_id <> '' AND task = '' AND context = '')"
    " OR (scope = 'task' AND task <> '' AND context = '')"
    " OR (scope = 'context' AND task = '' AND context <> '')"
    " OR (scope = 'task_context' AND task <> '' AND context <> '')"
)


class AutonomyTenantSettings(Base):
    """A tenant's default level (when no rule matches) and the maximum any request may run at."""

    __tablename__ = "autonomy_tenant_settings"
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), primary_key=True)
    default_level: Mapped[str] = mapped_column(String(16))
    max_level: Mapped[str] = mapped_column(String(16))
    updated_by: Mapped[str] = mapped_column(String(40))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AutonomyRule(Base):
    """One rule: its kind (`scope`: default, task, context or task_context), its owner (`user_id`, ""
    for the tenant) and the level it sets."""

    __tablename__ = "autonomy_rules"
    __table_args__ = (
        UniqueConstraint("tenant_id", "scope", "user_id", "task", "context", name="uq_autonomy_rules_key"),
        CheckConstraint(RULE_KEY_SHAPE, name="key_shape"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    scope: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(40), default="")
    task: Mapped[str] = mapped_column(String(100), default="")
    context: Mapped[str] = mapped_column(String(100), default="")
    level: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class AutonomyAuditEntry(Base):
    """A human decision on a request (approve, edit, reject): who, when, what."""

    __tablename__ = "autonomy_audit"
    __table_args__ = (Index("ix_autonomy_audit_request_at", "request_id", "at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    request_id: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(40))
    actor_kind: Mapped[str] = mapped_column(String(16))
    level: Mapped[str] = mapped_column(String(16))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON)


autonomy_tenant_settings = AutonomyTenantSettings.__table__
autonomy_rules = AutonomyRule.__table__
autonomy_audit = AutonomyAuditEntry.__table__
