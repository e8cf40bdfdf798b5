"""`/v1/usage`, `/v1/billing/invoices`, `/v1/analytics/sql`: the tenant's usage, invoices and finance SQL.

Thin: the gateway authenticates and scopes every call to the caller's tenant, then asks the usage
service (which owns ClickHouse; consumers/usage_service.py) over HTTP. Refusals from the usage service
keep their stable codes; an unreachable usage service is a 503.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Body, Depends, FastAPI, Query, Request
from pydantic import BaseModel, BeforeValidator, Field

from gateway.api_models import Invoice, SqlResult, UsageReport
from gateway.errors import ApiError
from gateway.openapi_docs import errors
from gateway.responses import JSONBytes
from gateway.security import Principal, require_scope

PLATFORM_FINANCE_SCOPE = "platform:admin"  # operators see every tenant; everyone else only their own

router = APIRouter(tags=["usage"])
_DIM = "(day|model|tier|autonomy_level)"
_GROUP_BY = f"^({_DIM}(,{_DIM})*)?$"  # the usage service checks it (422 invalid_group_by); documented here


class AnalyticsSqlBody(BaseModel):
    sql: str = Field(min_length=1, max_length=20_000, description="one SELECT over the lotabots_usage tables")


async def start(app: FastAPI) -> None:
    settings = app.state.settings
    headers = {}
    if settings.usage_service_token is not None:
        headers["Authorization"] = f"Bearer {settings.usage_service_token.get_secret_value()}"
    app.state.usage_client = httpx.AsyncClient(base_url=settings.usage_url, timeout=settings.usage_read_timeout_s,
                                               headers=headers)


async def stop(app: FastAPI) -> None:
    client = getattr(app.state, "usage_client", None)
    if client is not None:
        await client.aclose()


async def _ask(request: Request, method: str, path: str, **kw: Any) -> Any:
    client: httpx.AsyncClient = request.app.state.usage_client
    try:
        response = await client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        raise ApiError(503, "usage_service_unavailable", "usage data is unavailable right now; retry",
                       headers={"Retry-After": "2"}) from exc
    if response.status_code >= 500:
        raise ApiError(503, "usage_service_unavailable", "usage data is unavailable right now; retry",
                       headers={"Retry-After": "2"})
    body = response.json()
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ApiError(response.status_code, error.get("code", "usage_query_refused"),
                       error.get("message", "the usage query was refused"))
    return body


def _iso_day(value: object) -> object:
    """YYYY-MM-DD only (pydantic would also read a number as days or seconds since the epoch)."""
    if isinstance(value, str) and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("a date as YYYY-MM-DD is expected")
    return value


Day = Annotated[date, BeforeValidator(_iso_day)]


@router.get("/v1/usage", response_model=UsageReport, responses=errors(422))
async def get_usage(
    request: Request,
    who: Annotated[Principal, Depends(require_scope("usage:read"))],
    start: Annotated[Day | None, Query(description="first day (UTC), default 30 days ago")] = None,
    end: Annotated[Day | None, Query(description="last day (UTC), inclusive, default today")] = None,
    group_by: Annotated[str, Query(description="comma list of day, model, tier, autonomy_level",
                                   json_schema_extra={"pattern": _GROUP_BY})] = "day",
) -> JSONBytes:
    today = datetime.now(UTC).date()
    end = end or today
    start = start or end - timedelta(days=30)
    body = await _ask(request, "GET", "/internal/v1/usage", params={
        "tenant_id": who.tenant_id, "start": start.isoformat(), "end": end.isoformat(), "group_by": group_by,
    })
    return JSONBytes(body)


@router.get("/v1/billing/invoices", response_model=Invoice, responses=errors(422))
async def get_invoices(
    request: Request,
    who: Annotated[Principal, Depends(require_scope("billing:read"))],
    period: Annotated[str, Query(pattern=r"^\d{4}-(0[1-9]|1[0-2])$", description="YYYY-MM")],
) -> JSONBytes:
    body = await _ask(request, "GET", "/internal/v1/invoices", params={"period": period, "tenant_id": who.tenant_id})
    invoices = body.get("invoices", [])
    invoice = invoices[0] if invoices else {"tenant_id": who.tenant_id, "period": period, "currency": "USD",
                                            "lines": [], "total": "0"}
    return JSONBytes(invoice)


@router.post("/v1/analytics/sql", response_model=SqlResult,
             responses=errors(422, e422="not one SELECT over the usage tables, or a query ClickHouse refused"))
async def post_analytics_sql(
    request: Request,
    who: Annotated[Principal, Depends(require_scope("billing:read"))],
    body: Annotated[AnalyticsSqlBody, Body()],
) -> JSONBytes:
    # A tenant's finance users query their own rows only (ClickHouse applies the filter); operators see all.
    tenant = None if who.has_scope(PLATFORM_FINANCE_SCOPE) else who.tenant_id
    result = await _ask(request, "POST", "/internal/v1/sql", json={"sql": body.sql, "tenant_id": tenant})
    return JSONBytes(result)
