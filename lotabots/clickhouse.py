"""ClickHouse clients through clickhouse-connect: a server over HTTP, or chDB in-process (``chdb:///path``).

chDB lets only one process open a data directory, so only the usage service calls these with a chDB DSN.
A finance session is a separate client whose session settings make ClickHouse itself refuse writes, DDL,
table functions and setting changes (``readonly = 1``) and bound rows and time.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from lotabots.settings import Settings

USAGE_DATABASE = "lotabots_usage"


def is_chdb(dsn: str) -> bool:
    return dsn.startswith("chdb:")


def normalise_dsn(dsn: str) -> str:
    """``chdb:////abs`` (an absolute path pasted after ``chdb:///``) and ``chdb:///abs`` name one directory."""
    if is_chdb(dsn):
        parsed = urlparse(dsn)
        if not parsed.netloc and parsed.path:
            return "chdb:///" + parsed.path.lstrip("/") + (f"?{parsed.query}" if parsed.query else "")
    return dsn


def open_clickhouse(settings: Settings, *, session_settings: dict[str, Any] | None = None) -> Any:
    """A client on ``settings.clickhouse_url`` (creates a chDB directory if missing).

    ``session_settings`` apply to every query of the client, in order (put ``readonly`` last).
    """
    import clickhouse_connect

    dsn = normalise_dsn(settings.clickhouse_url)
    if is_chdb(dsn):
        path = urlparse(dsn).path
        from pathlib import Path

        Path(path).mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(dsn=dsn, settings=dict(session_settings or {}))


def finance_session_settings(settings: Settings, *, limits: bool = True) -> dict[str, Any]:
    """Limits for finance SQL; ``readonly`` comes last because after it no setting can be changed."""
    if not limits:
        return {"readonly": 1}
    return {
        "max_result_rows": settings.usage_sql_max_rows,
        "result_overflow_mode": "throw",
        "max_execution_time": settings.usage_sql_max_seconds,
        "timeout_overflow_mode": "throw",
        "max_memory_usage": 2_000_000_000,
        "readonly": 1,
    }
