"""Every SQL query of the ClickHouse dashboards (deploy/grafana, grafana-clickhouse-datasource)
runs on chDB against what `dnsflow demo` stored, with Grafana's macros expanded as the plugin
expands them, for one tenant and for "All"; the traffic and names panels find the demo's
rows."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import clickhouse_connect
import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
PLUGIN = "grafana-clickhouse-datasource"
TENANTS = ("shop", "payments", "analytics")  # the demo's tenants with traffic


def sql_queries() -> list[tuple[str, str]]:
    """(dashboard / panel title, raw SQL) of every ClickHouse query, variables included."""
    out: list[tuple[str, str]] = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        for var in board.get("templating", {}).get("list", []):
            if var.get("datasource", {}).get("type") == PLUGIN:
                out.append((f"{path.stem} / ${var['name']}", var["query"]))
        for panel in board["panels"]:
            for t in panel.get("targets", []):
                if t.get("datasource", {}).get("type") == PLUGIN:
                    out.append((f"{path.stem} / {panel['title']}", t["rawSql"]))
    return out


def expand(sql: str, start: int, end: int, tenants: tuple[str, ...] | None) -> str:
    """The plugin's macros and the tenant variable with concrete values (``tenants`` None:
    the "All" selection, under which $__conditionalAll drops its condition)."""
    def conditional_all(m: re.Match[str]) -> str:
        return "1 = 1" if tenants is None else m.group(1)

    sql = re.sub(r"\$__conditionalAll\((.*?),\s*\$tenant\)", conditional_all, sql)
    picked = TENANTS if tenants is None else tenants
    sql = sql.replace("${tenant:singlequote}", ", ".join(f"'{t}'" for t in picked))
    sql = re.sub(r"\$__timeFilter\((\w+)\)",
                 rf"\1 >= toDateTime({start}) AND \1 <= toDateTime({end})", sql)
    sql = re.sub(r"\$__timeInterval\((\w+)\)",
                 r"toStartOfInterval(toDateTime(\1), INTERVAL 60 second)", sql)
    sql = sql.replace("$__fromTime", f"toDateTime({start})").replace("$__toTime",
                                                                     f"toDateTime({end})")
    assert "$" not in sql, f"a macro or variable the test does not expand: {sql}"
    return sql


@pytest.fixture(scope="module")
def demo_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    home = tmp_path_factory.mktemp("demo-dashboards")
    out = subprocess.run([sys.executable, "-m", "dnsflow", "demo", "--seconds", "15",
                          "--home", str(home)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    client = clickhouse_connect.get_client(dsn=f"chdb://{home / 'chdb'}")
    try:
        yield client
    finally:
        client.close()


def test_the_dashboards_have_sql_for_every_view_the_issue_names() -> None:
    titles = " | ".join(t.lower() for t, _ in sql_queries())
    for needed in ("queries per tenant", "top names", "top denied names", "anomaly timeline",
                   "policy log"):
        assert needed in titles


@pytest.mark.parametrize(("title", "sql"), sql_queries(), ids=[t for t, _ in sql_queries()])
def test_every_sql_panel_runs_on_chdb_against_demo_data(demo_client: Any, title: str,
                                                        sql: str) -> None:
    now = int(time.time())
    start, end = now - 86_400, now + 3_600
    for tenants in (None, ("shop",)):
        result = demo_client.query(expand(sql, start, end, tenants))
        assert result.column_names, title
        if any(k in title.lower() for k in ("queries per tenant", "top names", "per tenant",
                                            "answers by", "$tenant", "policy log",
                                            "anomaly timeline", "detections by kind")):
            assert result.result_rows, f"{title}: no rows from the demo's data ({tenants})"
