"""Finance SQL: ad-hoc read-only queries over the usage database, with ClickHouse as the enforcer.

Each query runs in a fresh ClickHouse session whose settings are fixed before the query is seen:
``readonly = 1`` (ClickHouse refuses writes, DDL, table functions and any setting change, including
changes to the limits or the tenant filter), ``max_result_rows`` / ``max_execution_time`` (row and time
limits) and, for a tenant's finance user, ``additional_table_filters`` restricting every read of the
usage tables to that tenant's rows (ClickHouse applies them inside views and subqueries too).

What readonly cannot express is checked with ClickHouse's own parser and analyzer before running:
only SELECT statements run; every table a query reads must be in the usage database (``EXPLAIN QUERY
TREE`` lists them); no table functions; no ``INTO OUTFILE`` (chDB would write a file on this host).
Write statements are handed to the read-only session so that ClickHouse itself refuses them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.usage_reads import UsageQueryError, jsonable
from lotabots.clickhouse import USAGE_DATABASE

MAX_SQL_CHARS = 20_000
TENANT_TABLES = ("usage_events", "usage_daily")  # the tables that hold tenant rows (views read these)
_WRITE_KEYWORDS = {
    "insert", "alter", "drop", "create", "truncate", "optimize", "rename", "delete", "update", "undrop",
    "attach", "detach", "set", "replace", "exchange", "move", "grant", "revoke",
}
_LEADING_NOISE = re.compile(r"^(\s+|--[^\n]*\n?|/\*.*?\*/|\()+", re.S)
_TABLE = re.compile(r"^\s*TABLE id: \d+,.*?table_name: ([^\s,]+)")
_TABLE_FUNCTION = re.compile(r"^\s*TABLE_FUNCTION id: \d+,.*?table_function_name: ([^\s,]+)")
_CH_CODE = re.compile(r"Code: (\d+)\.")
_OUTFILE = re.compile(r"outfile", re.I)

READONLY_VIOLATION = 164
TOO_MANY_ROWS = 396
TIMEOUT_EXCEEDED = 159


@dataclass(frozen=True)
class SqlResult:
    columns: list[str]
    types: list[str]
    rows: list[list[Any]]
    elapsed_ms: float

    def as_json(self) -> dict[str, Any]:
        return {"columns": self.columns, "types": self.types, "rows": self.rows, "row_count": len(self.rows),
                "elapsed_ms": round(self.elapsed_ms, 1)}


def tenant_filter(tenant_id: str) -> str:
    """The ``additional_table_filters`` value that scopes every usage table to one tenant."""
    literal = tenant_id.replace("\\", "\\\\").replace("'", "\\'")
    condition = f"tenant_id = '{literal}'".replace("'", "''")
    return "{" + ", ".join(f"'{USAGE_DATABASE}.{t}': '{condition}'" for t in TENANT_TABLES) + "}"


def statement_keyword(sql: str) -> str:
    return (_LEADING_NOISE.sub("", sql).split(None, 1) or [""])[0].lower()


def clickhouse_code(exc: Exception) -> int | None:
    m = _CH_CODE.search(str(exc))
    return int(m.group(1)) if m else None


def _clean_message(exc: Exception) -> str:
    text = str(exc).split("\n")[0]
    return re.sub(r"\s*\(version [^)]*\)", "", text)[:1000]


def run_finance_sql(sql: str, open_session: Callable[..., Any], tenant_id: str | None) -> SqlResult:
    """Check and run one statement. ``open_session(extra_settings, limits=True)`` opens a fresh read-only
    session (the limits, then ``readonly``, after ``extra_settings``); each step gets its own session, so
    nothing one statement does to a session can reach the next. ``tenant_id`` None: every tenant."""
    sql = (sql or "").strip().rstrip(";").strip()
    if not sql:
        raise UsageQueryError(422, "invalid_sql", "the SQL statement is empty")
    if len(sql) > MAX_SQL_CHARS:
        raise UsageQueryError(422, "invalid_sql", f"the SQL statement is longer than {MAX_SQL_CHARS} characters")
    if _OUTFILE.search(sql):
        # checked before ClickHouse sees the text: even `EXPLAIN ... INTO OUTFILE` writes the file (chDB
        # runs on this host), and no keyword is spelt with escapes, so the plain text search is sound
        raise UsageQueryError(403, "output_clause_not_allowed", "INTO OUTFILE is not allowed")
    extra = {"additional_table_filters": tenant_filter(tenant_id)} if tenant_id is not None else {}
    keyword = statement_keyword(sql)
    if keyword in _WRITE_KEYWORDS:
        _let_clickhouse_refuse(sql, open_session, extra)
    if keyword not in ("select", "with"):
        raise UsageQueryError(403, "statement_not_allowed", "only SELECT statements are allowed")
    _check_shape(sql, open_session)
    session = open_session(extra)
    started = time.perf_counter()
    try:
        result = session.query(sql)
    except Exception as exc:
        raise _refusal(exc) from exc
    finally:
        session.close()
    return SqlResult(list(result.column_names), [t.name for t in result.column_types],
                     [list(map(jsonable, row)) for row in result.result_rows], (time.perf_counter() - started) * 1000)


def _let_clickhouse_refuse(sql: str, open_session: Callable[..., Any], extra: dict[str, Any]) -> None:
    session = open_session(extra)
    try:
        session.command(sql)
    except Exception as exc:
        raise _refusal(exc) from exc
    finally:
        session.close()
    # a read-only session that accepted a write would be a configuration bug: never report success
    raise UsageQueryError(403, "statement_not_allowed", "only SELECT statements are allowed")


def _check_shape(sql: str, open_session: Callable[..., Any]) -> None:
    explain = open_session({}, limits=False)  # the plans themselves can be longer than the row limit
    try:
        ast = [r[0] for r in explain.query(f"EXPLAIN AST {sql}").result_rows]
        tree = [r[0] for r in explain.query(f"EXPLAIN QUERY TREE {sql}").result_rows]
    except Exception as exc:
        raise _refusal(exc) from exc
    finally:
        explain.close()
    top = [line for line in ast if line.startswith(" ") and not line.startswith("  ")]
    # the root holds the select list and the client's own FORMAT: anything more is a FORMAT or
    # SETTINGS clause of the caller's (SETTINGS would be refused by the read-only session anyway)
    if len(top) > 2:
        raise UsageQueryError(403, "output_clause_not_allowed", "FORMAT and SETTINGS clauses are not allowed")
    for line in tree:
        m = _TABLE_FUNCTION.match(line)
        if m:
            raise UsageQueryError(403, "table_function_not_allowed", f"table function {m.group(1)}() is not allowed")
        m = _TABLE.match(line)
        if m and m.group(1).split(".")[0].strip("`") != USAGE_DATABASE:
            raise UsageQueryError(403, "database_not_allowed",
                                  f"{m.group(1)}: only tables of the {USAGE_DATABASE} database can be read")


def _refusal(exc: Exception) -> UsageQueryError:
    code = clickhouse_code(exc)
    message = _clean_message(exc)
    if code == READONLY_VIOLATION:
        return UsageQueryError(403, "read_only", f"refused by ClickHouse (read-only session): {message}")
    if code == TOO_MANY_ROWS:
        return UsageQueryError(422, "sql_row_limit_exceeded", message)
    if code == TIMEOUT_EXCEEDED:
        return UsageQueryError(422, "sql_time_limit_exceeded", message)
    if code == 81:  # UNKNOWN_DATABASE
        return UsageQueryError(403, "database_not_allowed", message)
    if code == 60:  # UNKNOWN_TABLE
        return UsageQueryError(400, "unknown_table", message)
    return UsageQueryError(400, "invalid_sql", message)
