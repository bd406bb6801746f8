"""Every third-party package the runtime code imports is declared in pyproject.toml with a
version range, so an install from the package alone has what the code needs (a transitive
dependency that happens to be present is not a declaration)."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
RUNTIME = ("dnsflow", "edge", "policies", "streams", "sinks", "console")
OURS = {*RUNTIME, "bench", "tests", "harness"}


def _declared() -> dict[str, str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(meta["dependencies"])
    for extra in meta.get("optional-dependencies", {}).values():
        specs += extra
    out = {}
    for spec in specs:
        name = re.match(r"[A-Za-z0-9_.-]+", spec).group(0)
        out[re.sub(r"[-_.]+", "-", name).lower()] = spec
    return out


def _imports(package: str) -> dict[str, str]:
    """Top-level module name -> first file importing it (module level or inside functions)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def test_every_imported_package_is_declared_with_a_range() -> None:
    declared = _declared()
    dists = packages_distributions()
    missing, unbounded = [], []
    for package in RUNTIME:
        for mod, where in _imports(package).items():
            if mod in OURS or mod in sys.stdlib_module_names or mod == "__future__":
                continue
            # not installed: only a tool's optional extra may need it (declared by its name)
            names = [re.sub(r"[-_.]+", "-", d).lower() for d in dists.get(mod, [])] or [
                re.sub(r"[-_.]+", "-", mod).lower()]
            spec = next((declared[n] for n in names if n in declared), None)
            if spec is None:
                missing.append(f"{mod} ({'/'.join(names)}) imported by {where}")
            elif not (re.search(r">=?\s*\d", spec) and re.search(r"<\s*\d", spec)):
                unbounded.append(spec)
    assert not missing, "imported but not declared in pyproject.toml: " + "; ".join(missing)
    assert not unbounded, f"declared without a lower and an upper bound: {unbounded}"
