"""Apply ``sinks/schema/NNN_*.sql`` in order, once each, recorded in ``dnsflow.schema_migrations``.

Every statement is written to be idempotent (``IF NOT EXISTS``), and applied files are recorded,
so running the migrator on every start is safe and cheap. Settings that an operator tunes
(the events retention TTL) are not baked into a migration: :func:`apply_retention` re-applies
them from the config each time, so changing them needs no new schema file.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DATABASE = "dnsflow"
MIGRATIONS_TABLE = f"{DATABASE}.schema_migrations"
SCHEMA_DIR = Path(__file__).resolve().parent / "schema"
_NAME = re.compile(r"^\d{3}_[a-z0-9_]+\.sql$")


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


def load_migrations() -> list[Migration]:
    folder = SCHEMA_DIR
    files = sorted(p.name for p in folder.iterdir() if _NAME.match(p.name))
    return [Migration(name, (folder / name).read_text()) for name in files]


def migrate(client: Any, events_ttl_days: int = 30) -> MigrationResult:
    """Bring the schema up to date; return what was applied (idempotent)."""
    params = {"events_ttl_days": int(events_ttl_days)}
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
    apply_retention(client, events_ttl_days)
    return result


def apply_retention(client: Any, events_ttl_days: int) -> bool:
    """Make ``dns_events``' TTL match the config; return True when it had to change."""
    engine = client.query(
        "SELECT engine_full FROM system.tables "
        "WHERE database = {db:String} AND name = 'dns_events'",
        parameters={"db": DATABASE},
    ).result_rows
    if not engine:
        return False
    current = re.search(r"toIntervalDay\((\d+)\)", engine[0][0])
    if current and int(current.group(1)) == int(events_ttl_days):
        return False
    client.command(
        f"ALTER TABLE {DATABASE}.dns_events MODIFY TTL toDateTime(ts) + "
        f"INTERVAL {int(events_ttl_days)} DAY"
    )
    log.info("dns_events retention set to %d days", events_ttl_days)
    return True
