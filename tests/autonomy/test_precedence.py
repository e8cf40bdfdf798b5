"""Precedence of autonomy rules, through the API on a real gateway and PostgreSQL (docs/autonomy.md):
user (task, context) > tenant (task, context) > user task > tenant task > user context > tenant context >
user default > tenant default > platform default, capped at the tenant maximum; a request may lower its
level, never raise it. A user's own rules apply to that user only and are invisible to other users."""

from __future__ import annotations

from typing import Any

import httpx

from tests.autonomy.conftest import Team, set_tenant, submit


async def _resolve(team: Team, task: str | None = None, context: str | None = None,
                   client: httpx.AsyncClient | None = None) -> dict[str, Any]:
    params = {k: v for k, v in (("task", task), ("context", context)) if v}
    r = await (client or team.member).get("/v1/autonomy/resolve", params=params)
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
        ((None, None), ("assisted", "user:default", user_rule)),
        (("other", "elsewhere"), ("assisted", "user:default", user_rule)),
        (("email", None), ("expert", "tenant:task", task_rule)),
        ((None, "legal"), ("no_ai", "tenant:context", context_rule)),
        (("email", "legal"), ("collaborator", "tenant:task+context", pair_rule)),
        (("email", "elsewhere"), ("expert", "tenant:task", task_rule)),
        (("other", "legal"), ("no_ai", "tenant:context", context_rule)),
        (("code", None), ("expert", "tenant:task", capped_rule)),  # the rule says agent; the tenant max caps it
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


async def _my_rule(client: httpx.AsyncClient, level: str, **key: str) -> str:
    r = await client.post("/v1/autonomy/users/me/rules", json={"level": level, **key})
    assert r.status_code == 201, r.text
    assert r.json()["owner"] == "user"
    return str(r.json()["id"])


async def test_per_user_precedence_matrix(team: Team) -> None:
    """Two users of one tenant with their own task/context rules resolve differently; at the same
    specificity a user's rule beats the tenant's; a more specific tenant rule beats a less specific user
    rule; the tenant maximum bounds a user's rule too."""
    await set_tenant(team, "assisted", "expert")
    t_task = await _rule(team, "collaborator", task="email")
    t_ctx = await _rule(team, "assisted", context="legal")
    t_pair = await _rule(team, "no_ai", task="code", context="prod")

    m_default = (await team.member.put("/v1/autonomy/users/me", json={"level": "no_ai"})).json()["id"]
    m_task = await _my_rule(team.member, "expert", task="email")
    m_pair = await _my_rule(team.member, "assisted", task="email", context="legal")
    m_ctx = await _my_rule(team.member, "collaborator", context="prod")
    m_capped = await _my_rule(team.member, "agent", task="deploy")  # above the tenant max (expert)
    o_ctx = await _my_rule(team.other, "no_ai", context="legal")
    o_pair = await _my_rule(team.other, "expert", task="code", context="prod")

    member, other = team.member, team.other
    matrix = [  # (who, task, context) -> (level, scope, rule id)
        # the member: its own rules, most specific first, before the tenant's at the same specificity
        ((member, None, None), ("no_ai", "user:default", m_default)),
        ((member, "email", None), ("expert", "user:task", m_task)),  # beats tenant:task (collaborator)
        ((member, "email", "legal"), ("assisted", "user:task+context", m_pair)),
        ((member, "email", "prod"), ("expert", "user:task", m_task)),  # a task rule beats a context rule
        ((member, None, "prod"), ("collaborator", "user:context", m_ctx)),
        ((member, None, "legal"), ("assisted", "tenant:context", t_ctx)),  # beats the user default
        ((member, "code", "prod"), ("no_ai", "tenant:task+context", t_pair)),  # beats user:context
        ((member, "deploy", None), ("expert", "user:task", m_capped)),  # capped at the tenant max
        # the other user: the member's rules never apply to it
        ((other, None, None), ("assisted", "tenant_default", None)),
        ((other, "email", None), ("collaborator", "tenant:task", t_task)),
        ((other, "email", "legal"), ("collaborator", "tenant:task", t_task)),  # a task rule beats user:context
        ((other, None, "legal"), ("no_ai", "user:context", o_ctx)),  # beats tenant:context
        ((other, "code", "prod"), ("expert", "user:task+context", o_pair)),  # beats tenant:task+context
        ((other, "deploy", None), ("assisted", "tenant_default", None)),
    ]
    for (client, task, context), (level, scope, rule_id) in matrix:
        got = await _resolve(team, task, context, client)
        rule = got["rule"]
        assert (got["level"], rule["scope"], rule.get("id")) == (level, scope, rule_id), (task, context, got)
        if scope.startswith("user:"):
            assert rule["user_id"] == got["subject"]
    capped = (await _resolve(team, "deploy"))["rule"]
    assert capped["level"] == "agent" and capped["capped_by"] == {"scope": "tenant_max", "level": "expert"}

    # the submit path resolves exactly as /resolve does, and a request still may not rise above the rule
    accepted = await submit(team.member, task="email", context="legal", autonomy_level="no_ai")
    assert accepted["autonomy"]["rule"]["ceiling"]["scope"] == "user:task+context"
    r = await team.member.post("/v1/requests", json={"messages": [{"role": "user", "content": "hi"}],
                                                     "task": "deploy", "autonomy_level": "agent"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "autonomy_level_not_allowed"
    assert r.json()["error"]["details"]["maximum"] == "expert"

    # lowering the tenant max after the fact bounds the user's rules at once (cache invalidated)
    await set_tenant(team, "assisted", "collaborator")
    got = await _resolve(team, "email")
    assert (got["level"], got["rule"]["id"], got["rule"]["capped_by"]["level"]) == ("collaborator", m_task,
                                                                                     "collaborator")

    # removing a user rule falls back to the next rule in order (here the tenant's task rule)
    assert (await team.member.delete(f"/v1/autonomy/rules/{m_task}")).status_code == 204
    got = await _resolve(team, "email")
    assert (got["level"], got["rule"]["scope"], got["rule"]["id"]) == ("collaborator", "tenant:task", t_task)


async def test_users_own_rules_are_private_to_them(team: Team, rival: Team) -> None:
    """A user manages only its own rules: another user's are invisible (404) and immutable; tenant-wide
    rules stay admin-only (403); admins see and manage everyone's; tenants never mix."""
    mine = await _my_rule(team.member, "assisted", task="email")
    again = await _my_rule(team.member, "expert", task="email")  # create or replace: same key, same rule
    assert again == mine
    theirs = await _my_rule(team.other, "no_ai", task="email")
    tenant_rule = await _rule(team, "collaborator", context="legal")

    # another user's rule: invisible and immutable
    for call in (team.member.get(f"/v1/autonomy/rules/{theirs}"),
                 team.member.patch(f"/v1/autonomy/rules/{theirs}", json={"level": "agent"}),
                 team.member.delete(f"/v1/autonomy/rules/{theirs}")):
        r = await call
        assert r.status_code == 404, r.text
        assert r.json()["error"]["code"] == "autonomy_rule_not_found"
    r = await team.member.post(f"/v1/autonomy/users/{team.admin_key_id}/rules", json={"task": "x", "level": "agent"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    assert (await team.member.get(f"/v1/autonomy/users/{team.admin_key_id}/rules")).status_code == 403
    # the other user's rule is untouched and still decides its level
    got = await _resolve(team, "email", client=team.other)
    assert (got["level"], got["rule"]["id"]) == ("no_ai", theirs)

    # a tenant-wide rule: visible, but only admins change it
    r = await team.member.patch(f"/v1/autonomy/rules/{tenant_rule}", json={"level": "agent"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"

    # listings: a member sees tenant-wide rules and its own; an admin sees every rule
    listed = {x["id"] for x in (await team.member.get("/v1/autonomy/rules")).json()["data"]}
    assert listed == {mine, tenant_rule}
    own = (await team.member.get("/v1/autonomy/users/me/rules")).json()["data"]
    assert [(x["id"], x["scope"], x["level"], x["user_id"]) for x in own] == [
        (mine, "user:task", "expert", team.member_key_id)]
    everything = {x["id"] for x in (await team.admin.get("/v1/autonomy/policy")).json()["rules"]}
    assert everything == {mine, theirs, tenant_rule}

    # the owner edits and deletes its own rule
    r = await team.member.patch(f"/v1/autonomy/rules/{mine}", json={"level": "no_ai"})
    assert r.status_code == 200 and r.json()["level"] == "no_ai"
    assert (await _resolve(team, "email"))["level"] == "no_ai"
    assert (await team.member.delete(f"/v1/autonomy/rules/{mine}")).status_code == 204
    # an admin manages a user's rules
    r = await team.admin.post(f"/v1/autonomy/users/{team.member_key_id}/rules",
                              json={"task": "email", "context": "legal", "level": "assisted"})
    assert r.status_code == 201 and r.json()["scope"] == "user:task+context"
    assert (await _resolve(team, "email", "legal"))["rule"]["id"] == r.json()["id"]
    assert (await team.admin.delete(f"/v1/autonomy/rules/{theirs}")).status_code == 204

    # a rule needs a task or a context; another tenant never sees these rules
    r = await team.member.post("/v1/autonomy/users/me/rules", json={"level": "agent"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "rule_needs_task_or_context"
    assert (await rival.admin.get(f"/v1/autonomy/rules/{tenant_rule}")).status_code == 404
    assert (await rival.admin.get(f"/v1/autonomy/users/{team.member_key_id}/rules")).json()["data"] == []
