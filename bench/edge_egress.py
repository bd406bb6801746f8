"""``python -m bench.edge_qps --egress``: a second edge with egress rules selecting the
load's clients (#17), beside the plain one, so the CPU an answered query costs with the
allow-sets programmed (before each answer is released) is measured against the same run.

Needs root and nftables: the agent installs its own table (a unique name, removed at the
end) in this network namespace. Its hook is forward, so the benchmark's loopback traffic is
not filtered; what is measured is the answer path's work (the allowance check on answers
the full path gives -- the fast path releases repeats while their allowance is not due --
and one libnftables transaction per new or refreshed allowance). The edge runs at log level
INFO so its agent's stop line gives the time spent in nft (``nft_cost``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

# every query name of the load (host<i>.bench.test) is an egress name for the load's clients
EGRESS_RULE = """  egress:
    - id: bench-egress
      toFQDNs: [{matchPattern: "*.bench.test"}]
      ports: [{port: 443}]
"""


def usable() -> str:
    """Why ``--egress`` cannot run here ("" when it can)."""
    if os.geteuid() != 0:
        return "--egress needs root (nftables)"
    if shutil.which("nft") is None:
        return "--egress needs nft (Debian nftables)"
    return ""


def policy(base: str) -> str:
    """The benchmark's policy with the egress rule added to its spec."""
    return base.rstrip("\n") + "\n" + EGRESS_RULE


def config(work: Path) -> tuple[Path, str]:
    """An edge config enabling egress in a table of its own; (path, table)."""
    table = f"dfbench{uuid.uuid4().hex[:8]}"
    path = work / "edge-egress.yaml"
    path.write_text(json.dumps({"edge": {"egress": {
        "enabled": True, "table": table, "nflog_group": 0, "min_ttl": 5, "grace": 5,
        "fail": "closed"}}}))
    return path, table


def allowances(table: str) -> int:
    """Elements in the table's allow-sets now (what the run programmed and kept)."""
    out = subprocess.run(["nft", "-j", "list", "set", "inet", table, "allow4"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        return 0
    return sum(len(i["set"].get("elem", [])) for i in json.loads(out.stdout)["nftables"]
               if "set" in i)


def drop_table(table: str) -> None:
    """``fail: closed`` keeps the table after the edge stops: the benchmark removes it."""
    subprocess.run(["nft", "delete", "table", "inet", table], capture_output=True,
                   timeout=30)


def nft_cost(log: Path) -> tuple[int, float]:
    """(allowances programmed or refreshed, µs spent in nft) from the agent's stop line in
    the edge's log; (0, 0.0) when it is missing."""
    text = log.read_text(errors="replace") if log.exists() else ""
    m = re.search(r"egress: stopped: programmed=(\d+) refreshed=(\d+) .*nft_us_total=(\d+)",
                  text)
    if m is None:
        return 0, 0.0
    return int(m.group(1)) + int(m.group(2)), float(m.group(3))
