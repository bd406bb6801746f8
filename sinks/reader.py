"""Rows of a read-only SELECT for other components' commands (``dnsflow policy explain
--connect``, ``egress-export``): the same route as ``dnsflow query`` — a ClickHouse server, or
for chDB the endpoint of the process that holds it, else the directory itself — so a command
works while ``dnsflow up`` runs. Values are bound by quoting with :func:`sql_str`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson


class ReadError(RuntimeError):
    """ClickHouse could not answer; the message says where and why, on one line."""


def sql_str(value: str) -> str:
    """A ClickHouse string literal for ``value`` (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def read_rows(clickhouse_dsn: str, home: str | Path, sql: str) -> list[dict[str, Any]]:
    """The rows of one read-only statement as dicts (column -> value)."""
    from dnsflow.sinks.dsn import DsnError, parse
    from dnsflow.sinks.query import QueryError
    from dnsflow.sinks.query_cli import Request, Unavailable, execute

    try:
        dsn = parse(clickhouse_dsn)
        out = execute(dsn, Path(home), Request(sql, "json"))
    except (DsnError, QueryError, Unavailable) as exc:
        raise ReadError(f"ClickHouse ({clickhouse_dsn.split('@')[-1]}): {exc}") from None
    return [orjson.loads(line) for line in out.splitlines() if line.strip()]
