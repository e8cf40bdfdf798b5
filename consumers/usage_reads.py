"""The usage and billing reads the usage service answers (always for one tenant unless told otherwise).

Every query reads the per-day rollup (``usage_daily``) or the invoice view built on it, never scans raw
rows, and binds its values as parameters. Results are JSON-ready (decimals as strings, dates ISO).
"""

from __future__ import annotations

import re
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from lotabots.clickhouse import USAGE_DATABASE

USAGE_DIMENSIONS = ("day", "model", "tier", "autonomy_level")
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class UsageQueryError(ValueError):
    """A read the service refuses: a stable ``code`` and an HTTP status (4xx)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value.normalize(), "f") if value else "0"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return value


def usage_summary(client: Any, tenant_id: str, start: date, end: date, group_by: list[str]) -> dict[str, Any]:
    """Usage of one tenant between two days (inclusive), grouped by any of ``USAGE_DIMENSIONS``."""
    unknown = [g for g in group_by if g not in USAGE_DIMENSIONS]
    if unknown:
        raise UsageQueryError(422, "invalid_group_by", f"cannot group by {unknown}; choose from {list(USAGE_DIMENSIONS)}")
    if end < start:
        raise UsageQueryError(422, "invalid_range", "end is before start")
    if (end - start).days > 366:
        raise UsageQueryError(422, "invalid_range", "at most 366 days per request")
    dims = list(dict.fromkeys(group_by))  # keeps the order asked for, drops repeats
    select = ", ".join([*dims, "sum(requests) AS requests", "sum(rejections) AS rejections",
                        "sum(prompt_tokens) AS prompt_tokens", "sum(completion_tokens) AS completion_tokens",
                        "sum(cost) AS cost"])
    group = f"GROUP BY {', '.join(dims)} ORDER BY {', '.join(dims)}" if dims else ""
    result = client.query(
        f"SELECT {select} FROM {USAGE_DATABASE}.usage_daily "
        f"WHERE tenant_id = %(tenant)s AND day >= %(start)s AND day <= %(end)s {group}",
        parameters={"tenant": tenant_id, "start": start, "end": end},
    )
    rows = [dict(zip(result.column_names, map(jsonable, row), strict=True)) for row in result.result_rows]
    totals = {k: sum(int(r[k]) for r in rows) for k in ("requests", "rejections", "prompt_tokens", "completion_tokens")}
    totals["cost"] = jsonable(sum((Decimal(r["cost"]) for r in rows), Decimal(0)))
    return {"tenant_id": tenant_id, "start": start.isoformat(), "end": end.isoformat(), "group_by": dims,
            "data": rows, "totals": totals}


def parse_period(period: str) -> str:
    if not _PERIOD.match(period or ""):
        raise UsageQueryError(422, "invalid_period", "period must be YYYY-MM")
    return period


def invoice_lines(client: Any, period: str, tenant_id: str | None) -> list[dict[str, Any]]:
    """Invoice lines of one month: per tenant, tier and item (requests, input_tokens, output_tokens)."""
    parse_period(period)
    where = "period = %(period)s" + (" AND tenant_id = %(tenant)s" if tenant_id is not None else "")
    result = client.query(
        f"SELECT tenant_id, period, tier, item, quantity, amount FROM {USAGE_DATABASE}.invoice_lines "
        f"WHERE {where} ORDER BY tenant_id, tier, item",
        parameters={"period": period, "tenant": tenant_id},
    )
    return [dict(zip(result.column_names, map(jsonable, row), strict=True)) for row in result.result_rows]


def invoices(client: Any, period: str, tenant_id: str | None) -> dict[str, Any]:
    """One invoice per tenant for the month: its lines and the total amount."""
    by_tenant: dict[str, dict[str, Any]] = {}
    for line in invoice_lines(client, period, tenant_id):
        invoice = by_tenant.setdefault(line["tenant_id"], {
            "tenant_id": line["tenant_id"], "period": period, "currency": "USD", "lines": [], "total": Decimal(0),
        })
        invoice["lines"].append({k: line[k] for k in ("tier", "item", "quantity", "amount")})
        invoice["total"] += Decimal(line["amount"])
    out = [{**inv, "total": jsonable(inv["total"])} for inv in by_tenant.values()]
    return {"period": period, "invoices": out}
