"""Apply the ClickHouse migrations (schemas/clickhouse/NNNN_*.sql) once each, in order, idempotently.

Applied versions are recorded in ``lotabots_usage.schema_migrations``. Every statement is written
``IF NOT EXISTS`` so a run interrupted between a statement and its record is safe to repeat. On a
ClickHouse server the access-control files under ``server/`` are applied too, and the finance user is
created (or its password reset) when a finance password is configured.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from lotabots.clickhouse import USAGE_DATABASE
from lotabots.tiers import TierConfig

DDL_DIR = Path(__file__).resolve().parent
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path

    def statements(self) -> list[str]:
        text = "\n".join(line for line in self.path.read_text().splitlines() if not line.lstrip().startswith("--"))
        return [s.strip() for s in text.split(";") if s.strip()]


@dataclass
class MigrationReport:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    server_only: list[str] = field(default_factory=list)
    prices_recorded: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [f"applied {name}" for name in self.applied]
        out += [f"price book: {tier}" for tier in self.prices_recorded]
        out += [f"access control: {name}" for name in self.server_only]
        out.append(f"{len(self.applied)} applied, {len(self.already)} already applied ({USAGE_DATABASE})")
        return out


def discover(directory: Path = DDL_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), path))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"duplicate ClickHouse migration versions in {directory}")
    return found


def migrate_clickhouse(client: Any, tiers: TierConfig, *, server: bool, finance_user: str | None = None,
                       finance_password: str | None = None) -> MigrationReport:
    report = MigrationReport()
    client.command(f"CREATE DATABASE IF NOT EXISTS {USAGE_DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {USAGE_DATABASE}.schema_migrations "
        "(version UInt32, name String, checksum String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    done = {row[0] for row in client.query(f"SELECT version FROM {USAGE_DATABASE}.schema_migrations").result_rows}
    for migration in discover():
        label = f"{migration.version:04d}_{migration.name}"
        if migration.version in done:
            report.already.append(label)
            continue
        for statement in migration.statements():
            client.command(statement)
        checksum = hashlib.sha256(migration.path.read_bytes()).hexdigest()
        client.insert(f"{USAGE_DATABASE}.schema_migrations",
                      [[migration.version, migration.name, checksum, datetime.now(UTC)]],
                      column_names=["version", "name", "checksum", "applied_at"])
        report.applied.append(label)
    if server:
        for migration in discover(DDL_DIR / "server"):
            for statement in migration.statements():
                client.command(statement)
            report.server_only.append(f"{migration.version:04d}_{migration.name}")
        if finance_user and finance_password:
            _ensure_finance_user(client, finance_user, finance_password)
            report.server_only.append(f"user {finance_user}")
    report.prices_recorded = record_prices(client, tiers)
    return report


def _ensure_finance_user(client: Any, user: str, password: str) -> None:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", user):
        raise ValueError(f"invalid ClickHouse user name {user!r}")
    digest = hashlib.sha256(password.encode()).hexdigest()
    client.command(f"CREATE USER IF NOT EXISTS {user} IDENTIFIED WITH sha256_hash BY '{digest}' "
                   "DEFAULT ROLE lotabots_finance")
    client.command(f"ALTER USER {user} IDENTIFIED WITH sha256_hash BY '{digest}'")
    client.command(f"GRANT lotabots_finance TO {user}")
    client.command(f"ALTER USER {user} DEFAULT ROLE lotabots_finance")


def record_prices(client: Any, tiers: TierConfig) -> list[str]:
    """Add a price-book row for each tier whose current prices differ from its latest recorded ones."""
    latest = {
        row[0]: (Decimal(row[1]), Decimal(row[2]), Decimal(row[3]))
        for row in client.query(
            f"SELECT tier, toString(argMax(per_request, effective_from)), "
            f"toString(argMax(per_1k_input_tokens, effective_from)), "
            f"toString(argMax(per_1k_output_tokens, effective_from)) "
            f"FROM {USAGE_DATABASE}.price_book GROUP BY tier"
        ).result_rows
    }
    rows, changed = [], []
    now = datetime.now(UTC)
    for tier in tiers.tiers.values():
        p = tier.prices
        current = (p.per_request, p.per_1k_input_tokens, p.per_1k_output_tokens)
        if latest.get(tier.name) != current:
            rows.append([tier.name, now, *current])
            changed.append(tier.name)
    if rows:
        client.insert(f"{USAGE_DATABASE}.price_book", rows,
                      column_names=["tier", "effective_from", "per_request", "per_1k_input_tokens",
                                    "per_1k_output_tokens"])
    return changed
