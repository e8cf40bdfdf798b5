"""`lotabots usage ...` and `lotabots billing ...`: ClickHouse migrations and the billing export."""

from __future__ import annotations

import argparse
import csv
import io
import sys
from typing import Any

import orjson

from lotabots.settings import Settings, get_settings

EXPORT_COLUMNS = ("tenant_id", "period", "tier", "item", "quantity", "amount")


def register(sub: argparse._SubParsersAction) -> None:
    usage = sub.add_parser("usage", help="the usage database (ClickHouse)")
    usage_sub = usage.add_subparsers(dest="usage_command", required=True)
    migrate = usage_sub.add_parser(
        "migrate", help="apply the ClickHouse DDL in schemas/clickhouse (with chDB: while the usage service is stopped)")
    migrate.set_defaults(func=cmd_usage_migrate)

    billing = sub.add_parser("billing", help="billing data for a billing system")
    billing_sub = billing.add_subparsers(dest="billing_command", required=True)
    export = billing_sub.add_parser("export", help="invoice lines of one month, every tenant, as CSV or JSON lines")
    export.add_argument("--period", required=True, help="YYYY-MM")
    export.add_argument("--format", choices=("csv", "jsonl"), default="csv")
    export.add_argument("--output", "-o", help="file to write (default: stdout)")
    export.add_argument("--direct", action="store_true",
                        help="read ClickHouse directly instead of through the usage service "
                             "(a ClickHouse server, or chDB while the usage service is stopped)")
    export.set_defaults(func=cmd_billing_export)


def cmd_usage_migrate(args: argparse.Namespace) -> int:
    """Apply pending ClickHouse migrations; on a server also the finance role (and user, if configured)."""
    from lotabots.clickhouse import is_chdb, normalise_dsn, open_clickhouse
    from lotabots.tiers import get_tier_config
    from schemas.clickhouse.migrate import migrate_clickhouse

    settings = get_settings()
    server = not is_chdb(normalise_dsn(settings.clickhouse_url))
    client = open_clickhouse(settings)
    try:
        password = settings.usage_finance_password.get_secret_value() if settings.usage_finance_password else None
        report = migrate_clickhouse(client, get_tier_config(), server=server,
                                    finance_user=settings.usage_finance_user, finance_password=password)
    finally:
        client.close()
    for line in report.lines():
        print(line)
    if not server:
        print("chDB has no access control: finance reads go through the usage service's read-only sessions")
    return 0


def invoice_lines_for(settings: Settings, period: str, direct: bool) -> list[dict[str, Any]]:
    from consumers.usage_reads import invoice_lines, parse_period

    parse_period(period)
    if direct:
        from lotabots.clickhouse import open_clickhouse

        client = open_clickhouse(settings)
        try:
            return invoice_lines(client, period, None)
        finally:
            client.close()
    import httpx

    headers = {}
    if settings.usage_service_token is not None:
        headers["Authorization"] = f"Bearer {settings.usage_service_token.get_secret_value()}"
    response = httpx.get(f"{settings.usage_url}/internal/v1/invoices", params={"period": period},
                         headers=headers, timeout=settings.usage_read_timeout_s)
    response.raise_for_status()
    return [
        {"tenant_id": inv["tenant_id"], "period": inv["period"], **line}
        for inv in response.json()["invoices"] for line in inv["lines"]
    ]


def render_export(lines: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(orjson.dumps({k: line[k] for k in EXPORT_COLUMNS}).decode() + "\n" for line in lines)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=EXPORT_COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(lines)
    return out.getvalue()


def cmd_billing_export(args: argparse.Namespace) -> int:
    """Write one month's invoice lines (tenant, tier, item, quantity, amount in USD) for a billing system."""
    from consumers.usage_reads import UsageQueryError

    try:
        lines = invoice_lines_for(get_settings(), args.period, args.direct)
    except UsageQueryError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"error: cannot read invoice lines: {exc}", file=sys.stderr)
        return 1
    text = render_export(lines, args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"{len(lines)} invoice lines for {args.period} written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
