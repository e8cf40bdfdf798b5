"""Shared pieces of the limits tests: tier configs with small limits, tickets, header parsing."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from gateway.limits.backend import Ticket
from gateway.limits.policies import LimitPolicies
from lotabots.tiers import TierConfig, parse_tier_config
from tests.stack import REPO

BIG = 10**12


def tier_table(rpm: int, concurrency: int, tokens_day: int = BIG, tokens_month: int = BIG,
               partitions: int = 1) -> dict[str, Any]:
    return {
        "request_partitions": partitions, "workers_min": 0, "workers_max": 1, "max_tokens_cap": 256,
        "scaling": {"lag_threshold": 4},
        "rate_limits": {"requests_per_minute": rpm, "concurrent_requests": concurrency},
        "quotas": {"tokens_per_day": tokens_day, "tokens_per_month": tokens_month},
        "prices": {}, "k8s": {"cpu": "1", "memory": "1Gi"},
    }


def tier_config(**tiers: dict[str, Any]) -> TierConfig:
    return parse_tier_config({"tiers": tiers})


def write_tiers(path: Path, **changes: dict[str, Any]) -> TierConfig:
    """The repository's tier config with `changes` (new tiers, or sections of existing ones) written to `path`."""
    raw = tomllib.loads((REPO / "lotabots" / "tiers.toml").read_text())
    for name, table in changes.items():
        current = raw["tiers"].setdefault(name, {})
        for k, v in table.items():
            if isinstance(v, dict):
                current.setdefault(k, {}).update(v)
            else:
                current[k] = v
    lines = []
    for name, table in raw["tiers"].items():
        lines.append(f"[tiers.{name}]")
        lines += [f"{k} = {_toml(v)}" for k, v in table.items() if not isinstance(v, dict)]
        for section, values in table.items():
            if isinstance(values, dict):
                lines.append(f"[tiers.{name}.{section}]")
                lines += [f"{k} = {_toml(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return parse_tier_config(raw)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def ticket(policies: LimitPolicies, tier: str, tenant: str, request_id: str, *, reservation: int = 10,
           key_id: str | None = None, day: str = "2030-01-02", month: str = "2030-01",
           committed: tuple[int, int] = (0, 0)) -> Ticket:
    limits = policies.tier(tier)
    assert limits is not None
    key = policies.key(key_id)
    return Ticket(request_id, tenant, limits, key_id if key else None, key, reservation, day, month, *committed)


# RFC 8941 subset used by the RateLimit fields: a list of string items with integer or string parameters.
_ITEM = re.compile(r'"([a-z0-9-]+)"((?:;[a-z][a-z0-9-]*=(?:\d+|"[^"\\]*"))*)')
_PARAM = re.compile(r';([a-z][a-z0-9-]*)=(\d+|"[^"\\]*")')


def parse_sf_list(value: str) -> dict[str, dict[str, int | str]]:
    """Parse a structured-field List of String items with parameters; raise on anything malformed."""
    items: dict[str, dict[str, int | str]] = {}
    for member in re.split(r",[ \t]*", value.strip()):
        m = _ITEM.fullmatch(member)
        assert m, f"not a well-formed list member: {member!r} in {value!r}"
        params: dict[str, int | str] = {}
        for name, raw in _PARAM.findall(m.group(2)):
            params[name] = raw.strip('"') if raw.startswith('"') else int(raw)
        items[m.group(1)] = params
    return items
