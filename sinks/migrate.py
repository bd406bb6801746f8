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

from dnsflow.progress import Progress
from dnsflow.sinks.cluster import ClusterSchema

log = logging.getLogger(__name__)

DATABASE = "dnsflow"
MIGRATIONS_TABLE = f"{DATABASE}.schema_migrations"
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")

# Every stored table and the time column its TTL counts from; ``RETENTION_DAYS`` the defaults
# (raw events a month; the rollups that outlive them, anomalies and alerts a year; the policy
# audit trail ten years; egress allowances and drops as long as the DNS events they follow).
TIME_COLUMNS: dict[str, str] = {
    "dns_events": "ts", "telemetry": "ts", "anomalies": "ts", "alerts": "ts",
    "policy_log": "ts", "dns_minute": "minute", "dns_names_hour": "hour",
    "egress_events": "ts",
}
RETENTION_DAYS: dict[str, int] = {
    "dns_events": 30, "telemetry": 90, "anomalies": 365, "alerts": 365, "policy_log": 3650,
    "dns_minute": 400, "dns_names_hour": 90, "egress_events": 30,
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


class Plan:
    """The statements of each migration for one node or, with ``cluster``, for a ClickHouse
    cluster (``sinks/cluster.py``), in the order they apply."""

    def __init__(self, retention: Mapping[str, int] | None = None,
                 cluster: str | None = None) -> None:
        self.days = {**RETENTION_DAYS, **(retention or {})}
        self.params = {"events_ttl_days": int(self.days["dns_events"])}
        self.cluster = ClusterSchema(cluster) if cluster else None
        on = f" ON CLUSTER {cluster}" if cluster else ""
        engine = (f"ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{DATABASE}/"
                  "schema_migrations', '{replica}')" if cluster else "ReplacingMergeTree")
        self.setup = [
            f"CREATE DATABASE IF NOT EXISTS {DATABASE}{on}",
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}{on} (name String, checksum String, "
            f"applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = {engine} ORDER BY name",
        ]
        # rewritten in order even when applied earlier: later files refer to earlier tables
        self.migrations = [(m, self._statements(m)) for m in load_migrations()]

    def _statements(self, m: Migration) -> list[str]:
        single = m.statements(self.params)
        return self.cluster.statements(single) if self.cluster else single

    def ttl_statement(self, table: str) -> str:
        if self.cluster and table in self.cluster.replicated:
            target = f"{DATABASE}.{table}_local ON CLUSTER {self.cluster.cluster}"
        else:
            target = f"{DATABASE}.{table}"
        return (f"ALTER TABLE {target} MODIFY TTL toDateTime({TIME_COLUMNS[table]}) + "
                f"INTERVAL {int(self.days[table])} DAY")

    def all_statements(self) -> list[str]:
        """What a migration of an empty server runs (``--dry-run`` prints it)."""
        out = list(self.setup)
        for _, stmts in self.migrations:
            out += stmts
        return out + [self.ttl_statement(t) for t in self.days]


def migrate(client: Any, retention: Mapping[str, int] | None = None,
            cluster: str | None = None, progress: Progress | None = None) -> MigrationResult:
    """Bring the schema up to date and every table's TTL to ``retention`` (days per table,
    :data:`RETENTION_DAYS` for those it leaves out); with ``cluster``, the cluster form of
    every statement. Returns what was applied (idempotent)."""
    plan = Plan(retention, cluster)
    for stmt in plan.setup:
        client.command(stmt)
    done = dict(client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE} FINAL").result_rows)
    result = MigrationResult()
    if progress is not None:
        progress.total = len(plan.migrations)
    for i, (m, stmts) in enumerate(plan.migrations):
        if progress is not None:
            progress.pos = i
            progress.show(m.name, force=True)
        if m.name in done:
            result.already.append(m.name)
            if done[m.name] != m.checksum:
                result.changed.append(m.name)
                log.warning("schema %s changed since it was applied; not re-applied", m.name)
            continue
        for stmt in stmts:
            client.command(stmt)
        client.insert(MIGRATIONS_TABLE, [[m.name, m.checksum]], column_names=["name", "checksum"])
        result.applied.append(m.name)
        log.info("schema %s applied", m.name)
    result.retention = apply_retention(client, plan)
    return result


def apply_retention(client: Any, plan: Plan) -> list[str]:
    """Make each table's TTL match the plan's; return the tables whose TTL had to change."""
    engines = dict(client.query(
        "SELECT name, engine_full FROM system.tables WHERE database = {db:String}",
        parameters={"db": DATABASE},
    ).result_rows)
    replicated = plan.cluster.replicated if plan.cluster else set()
    changed = []
    for table, n in plan.days.items():
        stored = f"{table}_local" if table in replicated else table
        if stored not in engines:
            continue
        current = _TTL_DAYS.search(engines[stored])
        if current and int(current.group(1)) == int(n):
            continue
        client.command(plan.ttl_statement(table))
        log.info("%s retention set to %d days", table, n)
        changed.append(table)
    return changed
