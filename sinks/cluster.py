"""The schema on a ClickHouse cluster (``dnsflow sink --migrate --cluster NAME``).

The same migration files, rewritten statement by statement: every DDL runs ``ON CLUSTER``;
each stored table becomes a ``Replicated*MergeTree`` named ``<table>_local`` on every shard
and replica, plus a ``Distributed`` table under the original name, so the sink writes and
every query reads exactly the names they use on one node. Rows are spread by a hash of their
Kafka coordinates, so a replayed batch lands on the shard that holds the first copy and its
insert deduplication still applies. The rollup views run on each shard, from
``dns_events_local`` into ``<rollup>_local``; the ingest view (from the ``Null`` table the sink
inserts into) writes to the ``Distributed`` ``dns_events``.

Tested here by parsing every statement with ClickHouse's own parser (``EXPLAIN AST`` in
chDB): no ClickHouse server or keeper runs on the test machine, so replication itself is not
exercised by the suite.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

DATABASE = "dnsflow"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_CREATE_TABLE = re.compile(rf"^CREATE TABLE IF NOT EXISTS {DATABASE}\.(\w+)\s*\(", re.S)
_ENGINE = re.compile(r"\bENGINE\s*=\s*(\w*)MergeTree\b(\(\))?")
_CREATE_MV = re.compile(
    rf"^CREATE MATERIALIZED VIEW IF NOT EXISTS {DATABASE}\.(\w+) TO {DATABASE}\.(\w+) AS\b")
_FROM = re.compile(rf"\bFROM {DATABASE}\.(\w+)")
_ALTER = re.compile(rf"^ALTER TABLE {DATABASE}\.(\w+)\s+(.*)$", re.S)
_CODEC = re.compile(r"\s+CODEC\([^()]*(\([^()]*\)[^()]*)*\)")


class ClusterError(ValueError):
    """A cluster name ClickHouse would not accept as an identifier."""


def check_name(cluster: str) -> str:
    if not _NAME.match(cluster):
        raise ClusterError(f"--cluster {cluster!r}: a ClickHouse cluster name is letters, "
                           "digits and _ (not starting with a digit)")
    return cluster


class ClusterSchema:
    """Rewrites single-node statements for ``cluster``; :attr:`replicated` remembers which
    tables became ``<name>_local`` + ``Distributed`` (later statements refer to them)."""

    def __init__(self, cluster: str) -> None:
        self.cluster = check_name(cluster)
        self.replicated: set[str] = set()

    def rewrite(self, stmt: str) -> list[str]:
        s = stmt.strip()
        on = f" ON CLUSTER {self.cluster}"
        if s.startswith(f"CREATE DATABASE IF NOT EXISTS {DATABASE}"):
            return [s + on]
        if m := _CREATE_TABLE.match(s):
            return self._table(m.group(1), s)
        if m := _CREATE_MV.match(s):
            return [self._view(m.group(1), m.group(2), s)]
        if m := _ALTER.match(s):
            return self._alter(m.group(1), m.group(2))
        raise ClusterError(f"no cluster form for: {s.splitlines()[0][:80]}")

    def _table(self, name: str, s: str) -> list[str]:
        head = f"CREATE TABLE IF NOT EXISTS {DATABASE}.{name}"
        engine = _ENGINE.search(s)
        if engine is None:  # Null and other engines: the same table on every node
            return [s.replace(head, f"{head} ON CLUSTER {self.cluster}", 1)]
        self.replicated.add(name)
        local = f"{name}_local"
        path = f"'/clickhouse/tables/{{shard}}/{DATABASE}/{local}', '{{replica}}'"
        body = _ENGINE.sub(f"ENGINE = Replicated{engine.group(1)}MergeTree({path})", s, 1)
        body = body.replace("non_replicated_deduplication_window",
                            "replicated_deduplication_window")
        body = body.replace(head, f"CREATE TABLE IF NOT EXISTS {DATABASE}.{local} "
                                  f"ON CLUSTER {self.cluster}", 1)
        key = ("cityHash64(kafka_partition, kafka_offset)" if "kafka_offset" in s
               else "rand()")
        dist = (f"CREATE TABLE IF NOT EXISTS {DATABASE}.{name} ON CLUSTER {self.cluster} "
                f"AS {DATABASE}.{local} ENGINE = Distributed({self.cluster}, {DATABASE}, "
                f"{local}, {key})")
        return [body, dist]

    def _view(self, view: str, target: str, s: str) -> str:
        source = _FROM.findall(s)
        head = f"CREATE MATERIALIZED VIEW IF NOT EXISTS {DATABASE}.{view}"
        s = s.replace(head, f"{head} ON CLUSTER {self.cluster}", 1)
        if source and source[-1] in self.replicated:  # a rollup: shard-local, both ends
            s = s.replace(f"TO {DATABASE}.{target} AS", f"TO {DATABASE}.{target}_local AS", 1)
            s = s.replace(f"FROM {DATABASE}.{source[-1]}", f"FROM {DATABASE}.{source[-1]}_local")
        return s

    def _alter(self, name: str, commands: str) -> list[str]:
        if name not in self.replicated:
            return [f"ALTER TABLE {DATABASE}.{name} ON CLUSTER {self.cluster} {commands}"]
        out = [f"ALTER TABLE {DATABASE}.{name}_local ON CLUSTER {self.cluster} {commands}"]
        # the Distributed table carries the columns (no codecs, no order, no TTL of its own)
        columns = [_CODEC.sub("", c) for c in _split_commands(commands)
                   if c.upper().startswith(("ADD COLUMN", "DROP COLUMN", "MODIFY COLUMN"))]
        if columns:
            out.append(f"ALTER TABLE {DATABASE}.{name} ON CLUSTER {self.cluster} "
                       + ", ".join(columns))
        return out

    def statements(self, single_node: Iterable[str]) -> list[str]:
        return [out for s in single_node for out in self.rewrite(s)]


def _split_commands(commands: str) -> list[str]:
    """An ALTER's comma-separated commands (commas inside parentheses belong to them)."""
    parts, depth, cur = [], 0, []
    for ch in commands:
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
            continue
        depth += (ch == "(") - (ch == ")")
        cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]
