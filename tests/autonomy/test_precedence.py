"""Precedence of autonomy rules, through the API on a real gateway and PostgreSQL (docs/autonomy.md):
(task, context) > task > context > user default > tenant default > platform default, capped at the
tenant maximum; a request may lower its level, never raise it."""

from __future__ import annotations

from typing import Any

from tests.autonomy.conftest import Team, set_tenant, submit


async def _resolve(team: Team, task: str | None = None, context: str | None = None) -> dict[str, Any]:
    params = {k: v for k, v in (("task", task), ("context", context)) if v}
    r = await team.member.get("/v1/autonomy/resolve", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _rule(team: Team, level: str, **key: str) -> str:
    r = await team.admin.post("/v1/autonomy/rules", json={"level": level, **key})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def test_precedence_matrix_most_specific_rule_wins(team: Team) -> None:
    fresh = await _resolve(team, "email", "legal")
    assert (fresh["level"], fresh["rule"]["scope"]) == ("agent", "platform_default")

    await set_tenant(team, "collaborator", "expert")
    r = await team.member.put("/v1/autonomy/users/me", json={"level": "assisted"})
    assert r.status_code == 200, r.text
    user_rule = r.json()["id"]
    task_rule = await _rule(team, "expert", task="email")
    context_rule = await _rule(team, "no_ai", context="legal")
    pair_rule = await _rule(team, "collaborator", task="email", context="legal")
    capped_rule = await _rule(team, "agent", task="code")

    matrix = [  # (task, context) -> (level, scope, rule id)
        ((None, None), ("assisted", "user", user_rule)),
        (("other", "elsewhere"), ("assisted", "user", user_rule)),
        (("email", None), ("expert", "task", task_rule)),
        ((None, "legal"), ("no_ai", "context", context_rule)),
        (("email", "legal"), ("collaborator", "task_context", pair_rule)),
        (("email", "elsewhere"), ("expert", "task", task_rule)),
        (("other", "legal"), ("no_ai", "context", context_rule)),
        (("code", None), ("expert", "task", capped_rule)),  # the rule says agent; the tenant max caps it
    ]
    for (task, context), (level, scope, rule_id) in matrix:
        got = await _resolve(team, task, context)
        assert (got["level"], got["rule"]["scope"], got["rule"].get("id")) == (level, scope, rule_id), (task, context, got)
    assert (await _resolve(team, "code"))["rule"]["capped_by"] == {"scope": "tenant_max", "level": "expert"}

    # another subject has no user default: the tenant default applies to it
    other = await team.other.get("/v1/autonomy/resolve")
    assert (other.json()["level"], other.json()["rule"]["scope"]) == ("collaborator", "tenant_default")

    # removing the user default falls back to the tenant default
    assert (await team.member.delete("/v1/autonomy/users/me")).status_code == 204
    got = await _resolve(team)
    assert (got["level"], got["rule"]["scope"]) == ("collaborator", "tenant_default")


async def test_request_may_lower_its_level_never_raise_it(team: Team) -> None:
    await set_tenant(team, "expert", "expert")
    lowered = await submit(team.member, autonomy_level="assisted", task="email")
    assert lowered["autonomy"]["level"] == "assisted"
    assert lowered["autonomy"]["rule"]["scope"] == "request"
    assert lowered["autonomy"]["rule"]["ceiling"]["scope"] == "tenant_default"

    r = await team.member.post("/v1/requests", json={"messages": [{"role": "user", "content": "hi"}],
                                                     "autonomy_level": "agent"})
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "autonomy_level_not_allowed"
    assert r.json()["error"]["details"]["maximum"] == "expert"

    await _rule(team, "assisted", task="triage")  # a task rule is a ceiling too, below the tenant max
    r = await team.member.post("/v1/requests", json={"messages": [{"role": "user", "content": "hi"}],
                                                     "task": "triage", "autonomy_level": "collaborator"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "autonomy_level_not_allowed"


async def test_only_admins_change_tenant_wide_policy(team: Team, rival: Team) -> None:
    r = await team.member.put("/v1/autonomy/tenant", json={"default_level": "agent"})
    assert r.status_code == 403
    r = await team.member.post("/v1/autonomy/rules", json={"task": "email", "level": "agent"})
    assert r.status_code == 403
    rule = await _rule(team, "assisted", task="email")
    assert (await team.member.delete(f"/v1/autonomy/rules/{rule}")).status_code == 403
    assert (await rival.admin.get(f"/v1/autonomy/rules/{rule}")).status_code == 404  # tenants never mix
    r = await team.admin.put("/v1/autonomy/tenant", json={"default_level": "agent", "max_level": "expert"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "default_above_maximum"
    policy = (await team.member.get("/v1/autonomy/policy")).json()
    assert [x["id"] for x in policy["rules"]] == [rule]
    assert (await rival.member.get("/v1/autonomy/policy")).json()["rules"] == []
