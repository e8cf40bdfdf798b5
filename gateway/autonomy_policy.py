"""Resolving a request's level of autonomy from the tenant's policy (pure logic) and caching each
tenant's policy in memory, so the submit hot path pays a few dict lookups, not a DB round trip.

A rule has a kind — the user's `default`, a `task`, a `context` or a `task_context` pair — and an owner:
the tenant (user_id "") or one user (user_id set; a user's own rules apply to that user only).

Precedence (docs/autonomy.md), most specific first, a user's own rule before the tenant's at the same
specificity: user (task, context) > tenant (task, context) > user task > tenant task > user context >
tenant context > user default > tenant default > platform default. The result is capped at the
tenant's maximum, which bounds every rule. The resolved level is the request's ceiling: a submit may
ask for a lower level, never a higher one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.errors import ApiError
from schemas.autonomy_levels import PLATFORM_DEFAULT_LEVEL, AutonomyLevel
from schemas.autonomy_tables import RULE_KINDS, autonomy_rules, autonomy_tenant_settings

# How a rule kind reads in a scope name: "user:task+context", "tenant:task", "user:default".
KIND_NAMES = {"task_context": "task+context", "task": "task", "context": "context", "default": "default"}


def scope_name(kind: str, user_id: str) -> str:
    """The public name of a rule's scope: its owner and its kind."""
    return f"{'user' if user_id else 'tenant'}:{KIND_NAMES[kind]}"


@dataclass(frozen=True)
class TenantPolicy:
    """Everything a tenant configured — its own rules and every user's — indexed for resolution."""

    default_level: AutonomyLevel = PLATFORM_DEFAULT_LEVEL
    max_level: AutonomyLevel = AutonomyLevel.AGENT
    configured: bool = False  # the tenant has its own default/maximum (else the platform's)
    # (kind, user_id, task, context) -> (rule id, level); user_id "" for the tenant's own rules
    rules: dict[tuple[str, str, str, str], tuple[str, AutonomyLevel]] = field(default_factory=dict)

    @property
    def trivial(self) -> bool:
        return not self.rules


@dataclass(frozen=True)
class Resolution:
    level: AutonomyLevel
    rule: dict[str, Any]


def _candidates(subject: str, task: str, context: str) -> list[tuple[str, str, str, str]]:
    """The rule keys that could apply, most specific first (a user's own rule before the tenant's)."""
    keys: list[tuple[str, str, str, str]] = []
    if task and context:
        keys += [("task_context", subject, task, context), ("task_context", "", task, context)]
    if task:
        keys += [("task", subject, task, ""), ("task", "", task, "")]
    if context:
        keys += [("context", subject, "", context), ("context", "", "", context)]
    keys.append(("default", subject, "", ""))
    return keys


def resolve(policy: TenantPolicy, subject: str, task: str | None, context: str | None) -> Resolution:
    """The effective level for `subject` doing `task` in `context`, and the rule that produced it."""
    found: dict[str, Any] | None = None
    level = policy.default_level
    if policy.rules:
        for key in _candidates(subject, task or "", context or ""):
            hit = policy.rules.get(key)
            if hit is not None:
                kind, user_id, t, c = key
                rule_id, level = hit
                found = {"scope": scope_name(kind, user_id), "id": rule_id, "level": level.value}
                if user_id:
                    found["user_id"] = user_id
                if t:
                    found["task"] = t
                if c:
                    found["context"] = c
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
    # One query loads the tenant's rules and every user's own rules: a submit by any of its users then
    # resolves from memory. (A tenant with very many personal rules pays for them in this one load.)
    indexed = {(r.scope, r.user_id, r.task, r.context): (r.id, AutonomyLevel(r.level)) for r in rules
               if r.scope in RULE_KINDS}
    if settings is None:
        return TenantPolicy(rules=indexed)
    return TenantPolicy(AutonomyLevel(settings.default_level), AutonomyLevel(settings.max_level), True, indexed)
