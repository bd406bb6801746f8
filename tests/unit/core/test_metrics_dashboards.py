"""The Grafana dashboards import as they are: unique ids, panels inside the 24-column grid,
every panel querying through the dashboard's datasource variable of the right plugin (so a
user picks their Prometheus or ClickHouse once, on import)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

BOARDS = sorted((Path(__file__).resolve().parents[3] / "deploy" / "grafana").glob("*.json"))
PLUGINS = {"dnsflow-health": "prometheus", "dnsflow-tenants": "grafana-clickhouse-datasource"}


def test_both_dashboards_are_there() -> None:
    assert {b.stem for b in BOARDS} == set(PLUGINS)


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_dashboard_layout_and_datasources(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["title"]
    plugin = PLUGINS[path.stem]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == plugin
    panels = board["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):  # no two panels on one grid cell
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps another panel"
                cells.add((x, y))
        if p["type"] == "row":
            continue
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": plugin, "uid": "${datasource}"}, p["title"]
            assert (t.get("expr") if plugin == "prometheus" else t.get("rawSql")), p["title"]
