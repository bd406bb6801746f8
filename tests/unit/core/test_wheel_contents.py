"""The installed package is ``dnsflow`` alone (issue #15): the component folders install as
``dnsflow.edge``, ``dnsflow.streams``, ... with their data files, and the test harness, the
benchmarks and the tests stay in the checkout."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def _copy_checkout(to: Path) -> Path:
    """The build writes build/ and *.egg-info next to its sources: build a copy."""
    to.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, to / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in ("dnsflow", "edge", "policies", "streams", "sinks", "harness", "bench", "tests"):
        shutil.copytree(ROOT / folder, to / folder, ignore=skip)
    return to


def test_the_wheel_holds_dnsflow_only(tmp_path: Path) -> None:
    src = _copy_checkout(tmp_path / "src")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                          "-q", "-w", str(tmp_path), str(src)],
                         capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    (wheel,) = tmp_path.glob("dnsflow-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"dnsflow"}, tops
    for wanted in ("dnsflow/edge/resolver.py", "dnsflow/streams/pipeline.py",
                   "dnsflow/sinks/cli.py", "dnsflow/policies/model.py",
                   "dnsflow/streams/detectors/README.md", "dnsflow/edge/examples/edge.yaml",
                   "dnsflow/sinks/schema/002_dns_events.sql"):
        assert wanted in names, wanted
    assert any(n.startswith("dnsflow/sinks/") and n.endswith(".sql") for n in names)
    assert any(n.startswith("dnsflow/streams/detectors/data/") for n in names)
    leaked = [n for n in names if any(p in n.split("/") for p in ("harness", "bench", "tests"))
              or n.endswith(("peers.py", "fake_upstream.py"))]
    assert not leaked, leaked


def test_the_image_copies_every_installed_folder() -> None:
    """The Dockerfile installs from the folders it copies: a component missing there is a
    verb missing from the image."""
    import re

    components = re.search(r"COMPONENTS = \(([^)]*)\)", (ROOT / "setup.py").read_text())
    assert components is not None
    folders = {"dnsflow", *re.findall(r'"(\w+)"', components.group(1))}
    copied = set(re.findall(r"^COPY (\w+) \./\1$", (ROOT / "Dockerfile").read_text(), re.M))
    assert folders <= copied, f"not copied into the image: {sorted(folders - copied)}"
