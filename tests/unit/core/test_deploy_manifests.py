"""The shipped manifests (deploy/dnsflow.yaml, rendered from the Helm chart) and compose stack
still parse with the current CLI and configs. tests/integration/test_helm_chart.py checks that
the rendered file is what the chart renders."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dnsflow.cli import build_parser
from dnsflow.edge.config import EdgeConfig
from dnsflow.settings import Settings, section

ROOT = Path(__file__).resolve().parents[3]


def _containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    return spec.get("initContainers", []) + spec.get("containers", [])


def _command_lines() -> list[tuple[str, list[str]]]:
    out = []
    for path in sorted((ROOT / "deploy").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            for c in _containers(doc or {}):
                cmd = c.get("command")
                if cmd and cmd[-2:] != ["-m", "dnsflow"]:
                    continue  # not the dnsflow entry point (e.g. the data-dir chown)
                out.append((f"{path.name}:{c['name']}", [str(a) for a in c.get("args", [])]))
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        if "command" in svc and svc.get("build", compose.get("x-dnsflow", {}).get("build")):
            out.append((f"compose.yaml:{name}", [str(a) for a in svc["command"]]))
    return out


@pytest.mark.parametrize(("where", "argv"), _command_lines(), ids=lambda v: str(v)[:40])
def test_every_shipped_command_line_parses(where: str, argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert args.verb == argv[0], where


def test_edge_configmap_is_a_valid_edge_section() -> None:
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "dnsflow.yaml").read_text()) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] ==
              "dnsflow-edge")
    data = yaml.safe_load(cm["data"]["edge.yaml"])
    cfg = section(Settings(edge=data["edge"]), "edge", EdgeConfig)
    assert cfg.kubernetes and cfg.listen.endswith(":53")


def test_example_policies_validate() -> None:
    out = subprocess.run([sys.executable, "-m", "dnsflow", "policy", "validate",
                          str(ROOT / "deploy" / "examples" / "policies")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_dnsflow_container_is_covered() -> None:
    names = [w for w, _ in _command_lines()]
    for want in ("node-local-setup", "edge", "streams", "sink", "migrate", "policies"):
        assert any(n.endswith(":" + want) for n in names), want
