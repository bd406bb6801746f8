"""Apply ``sinks/schema/NNN_*.sql`` in order, once each, recorded in ``dnsflow.schema_migrations``.

Every statement is written to be idempotent (``IF NOT EXISTS``), and applied files are recorded,
so running the migrator on every start is safe and cheap. Settings that an operator tunes
(each table's retention TTL, ``sink.retention_days``) are not baked into a migration:
:func:`apply_retention` re-applies them from the config each time, so changing them needs no
new schema file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATABASE = "dnsflow"
MIGRATIONS_TABLE = f"{DATABASE}.schema_migrations"
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")

# Every stored table and the time column its TTL counts from; ``RETENTION_DAYS`` the defaults
# (raw events a month; the rollups that outlive them, anomalies and alerts a year; the policy
# audit trail ten years).
TIME_COLUMNS: dict[str, str] = {
    "dns_events": "ts", "telemetry": "ts", "anomalies": "ts", "alerts": "ts",
    "policy_log": "ts", "dns_minute": "minute", "dns_names_hour": "hour",
}
RETENTION_DAYS: dict[str, int] = {
    "dns_events": 30, "telemetry": 90, "anomalies": 365, "alerts": 365, "policy_log": 3650,
    "dns_minute": 400, "dns_names_hour": 90,
}
_TTL_DAYS = re.compile(r"\bTTL\s.*?toIntervalDay\((\d+)\)")


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()[:16]

    def statements(self, params: dict[str, Any]) -> list[str]:
        """Split on ``;`` at line ends (our files never put one inside a literal)."""
        text = "\n".join(
            line for line in self.sql.splitlines() if not line.lstrip().startswith("--")
        )
        for key, value in params.items():
            text = text.replace("{" + key + "}", str(value))
        return [s.strip() for s in re.split(r";\s*(?:\n|$)", text) if s.strip()]


@dataclass
class MigrationResult:
    applied: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)  # applied earlier, file edited since
    retention: list[str] = field(default_factory=list)  # tables whose TTL was (re)set


def load_migrations() -> list[Migration]:
    folder = SCHEMA_DIR
    files = sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
    return [Migration(name, (folder / name).read_text()) for name in files]


def migrate(client: Any, retention: Mapping[str, int] | None = None) -> MigrationResult:
    """Bring the schema up to date and every table's TTL to ``retention`` (days per table,
    :data:`RETENTION_DAYS` for those it leaves out); return what was applied (idempotent)."""
    days = {**RETENTION_DAYS, **(retention or {})}
    params = {"events_ttl_days": int(days["dns_events"])}
    client.command(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY name"
    )
    done = dict(client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE} FINAL").result_rows)
    result = MigrationResult()
    for m in load_migrations():
        if m.name in done:
            result.already.append(m.name)
            if done[m.name] != m.checksum:
                result.changed.append(m.name)
                log.warning("schema %s changed since it was applied; not re-applied", m.name)
            continue
        for stmt in m.statements(params):
            client.command(stmt)
        client.insert(MIGRATIONS_TABLE, [[m.name, m.checksum]], column_names=["name", "checksum"])
        result.applied.append(m.name)
        log.info("schema %s applied", m.name)
    result.retention = apply_retention(client, days)
    return result


def apply_retention(client: Any, days: Mapping[str, int]) -> list[str]:
    """Make each table's TTL match ``days``; return the tables whose TTL had to change."""
    engines = dict(client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": DATABASE},
    ).result_rows)
    changed = []
    for table, n in days.items():
        if table not in engines:
            continue
        current = _TTL_DAYS.search(engines[table])
        if current and int(current.group(1)) == int(n):
            continue
        client.command(
            f"ALTER TABLE {DATABASE}.{table} MODIFY TTL toDateTime({TIME_COLUMNS[table]}) + "
            f"INTERVAL {int(n)} DAY"
        )
        log.info("%s retention set to %d days", table, n)
        changed.append(table)
    return changed
