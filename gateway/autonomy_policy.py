"""Resolving a request's level of autonomy from the tenant's policy (pure logic) and caching each
tenant's policy in memory, so the submit hot path pays a dict lookup, not a DB round trip.

Precedence (docs/autonomy.md): the most specific rule wins — (task, context) > task > context >
the user's default > the tenant's default > the platform default — and the result is capped at the
tenant's maximum. The resolved level is the request's ceiling: a submit may ask for a lower level,
never a higher one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ApiError
from schemas.autonomy_levels import PLATFORM_DEFAULT_LEVEL, AutonomyLevel
from schemas.autonomy_tables import autonomy_rules, autonomy_tenant_settings

SCOPES = ("task_context", "task", "context", "user")


@dataclass(frozen=True)
class TenantPolicy:
    """Everything a tenant configured, indexed for resolution."""

    default_level: AutonomyLevel = PLATFORM_DEFAULT_LEVEL
    max_level: AutonomyLevel = AutonomyLevel.AGENT
    configured: bool = False  # the tenant has its own default/maximum (else the platform's)
    # (scope, user_id, task, context) -> (rule id, level)
    rules: dict[tuple[str, str, str, str], tuple[str, AutonomyLevel]] = field(default_factory=dict)

    @property
    def trivial(self) -> bool:
        return not self.rules


@dataclass(frozen=True)
class Resolution:
    level: AutonomyLevel
    rule: dict[str, Any]


def resolve(policy: TenantPolicy, subject: str, task: str | None, context: str | None) -> Resolution:
    """The effective level for `subject` doing `task` in `context`, and the rule that produced it."""
    found: dict[str, Any] | None = None
    level = policy.default_level
    if policy.rules:
        t, c = task or "", context or ""
        candidates = []
        if t and c:
            candidates.append(("task_context", "", t, c))
        if t:
            candidates.append(("task", "", t, ""))
        if c:
            candidates.append(("context", "", "", c))
        candidates.append(("user", subject, "", ""))
        for key in candidates:
            hit = policy.rules.get(key)
            if hit is not None:
                rule_id, level = hit
                found = {"scope": key[0], "id": rule_id, "level": level.value}
                if key[0] == "user":
                    found["user_id"] = subject
                if key[2]:
                    found["task"] = key[2]
                if key[3]:
                    found["context"] = key[3]
                break
    if found is None:
        scope = "tenant_default" if policy.configured else "platform_default"
        found = {"scope": scope, "level": level.value}
    if level.rank > policy.max_level.rank:
        level = policy.max_level
        found["capped_by"] = {"scope": "tenant_max", "level": policy.max_level.value}
    return Resolution(level, found)


def apply_requested(resolution: Resolution, requested: AutonomyLevel | None) -> Resolution:
    """A submit's own `autonomy_level`: lower (or equal) is honoured, higher is refused."""
    if requested is None or requested is resolution.level:
        return resolution
    if requested.rank > resolution.level.rank:
        raise ApiError(
            403, "autonomy_level_not_allowed",
            f"autonomy level {requested.value!r} is above the effective maximum {resolution.level.value!r}",
            requested=requested.value, maximum=resolution.level.value, rule=resolution.rule,
        )
    return Resolution(requested, {"scope": "request", "level": requested.value, "ceiling": resolution.rule})


class PolicyCache:
    """Each tenant's policy, loaded once per TTL. Changes made through this gateway invalidate it at
    once; other gateway replicas see them within the TTL."""

    def __init__(self, engine: AsyncEngine, ttl_s: float) -> None:
        self.engine = engine
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[float, TenantPolicy]] = {}

    async def get(self, tenant_id: str) -> TenantPolicy:
        entry = self._entries.get(tenant_id)
        now = time.monotonic()
        if entry is not None and entry[0] > now:
            return entry[1]
        policy = await load_policy(self.engine, tenant_id)
        self._entries[tenant_id] = (now + self.ttl_s, policy)
        return policy

    def invalidate(self, tenant_id: str) -> None:
        self._entries.pop(tenant_id, None)


async def load_policy(engine: AsyncEngine, tenant_id: str) -> TenantPolicy:
    S, RU = autonomy_tenant_settings, autonomy_rules
    async with engine.connect() as conn:
        settings = (await conn.execute(select(S).where(S.c.tenant_id == tenant_id))).first()
        rules = (await conn.execute(select(RU).where(RU.c.tenant_id == tenant_id))).fetchall()
    indexed = {(r.scope, r.user_id, r.task, r.context): (r.id, AutonomyLevel(r.level)) for r in rules}
    if settings is None:
        return TenantPolicy(rules=indexed)
    return TenantPolicy(AutonomyLevel(settings.default_level), AutonomyLevel(settings.max_level), True, indexed)
