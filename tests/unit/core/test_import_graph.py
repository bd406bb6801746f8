"""No import circle between the project's modules (issue #15).

The graph: one node per module of the project packages, one edge per import executed when the
module is loaded (module-level statements, including those inside module-level ``if``/``try``
blocks, but not inside ``if TYPE_CHECKING:``, functions or classes). ``from a import b``
points at module ``a.b`` when that is a module, else at ``a``. Importing a submodule also runs
its package's ``__init__``, but Python handles a package whose modules import each other
through it, so parent packages get no edge of their own.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Folder in the checkout -> the package it installs as (pyproject's package-dir).
PACKAGES = {"dnsflow": "dnsflow", "edge": "dnsflow.edge", "policies": "dnsflow.policies",
            "streams": "dnsflow.streams", "sinks": "dnsflow.sinks",
            "console": "dnsflow.console"}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join([package, *parts])] = path
    return mods


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _top_level_imports(body: list[ast.stmt], typing_too: bool = False
                       ) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
        elif isinstance(node, ast.If):
            if typing_too or not _type_checking(node.test):
                out += _top_level_imports(node.body, typing_too)
            out += _top_level_imports(node.orelse, typing_too)
        elif isinstance(node, ast.Try):
            for part in (node.body, node.orelse, node.finalbody,
                         *(h.body for h in node.handlers)):
                out += _top_level_imports(part, typing_too)
        elif isinstance(node, ast.With):
            out += _top_level_imports(node.body, typing_too)
    return out


def import_graph(typing_too: bool = False) -> dict[str, set[str]]:
    """Module -> the project modules it imports when loaded (``typing_too``: and under
    ``if TYPE_CHECKING:``)."""
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in mods.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(), str(path))
        for node in _top_level_imports(tree.body, typing_too):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    anchor = anchor[:len(anchor) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                           for a in node.names]
            for t in targets:
                while t and t not in mods and "." in t:  # import a.b.c where c is a name
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != mod:
                    graph[mod].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_the_imports() -> None:
    g = import_graph()
    assert "dnsflow.edge.fastpath" in g["dnsflow.edge.resolver"]  # imports FastPath
    assert "dnsflow.schema" in g["dnsflow.edge.request"]
    assert "dnsflow.edge.resolver" not in g["dnsflow.edge.fastpath"]  # TYPE_CHECKING only


def test_cycles_are_found() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle() -> None:
    found = cycles(import_graph())
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_type_only_circle_in_the_edge() -> None:
    """The edge's answer paths once imported each other (the resolver at run time, the fast
    path for its annotations): they now meet on ``edge.request``, annotations included."""
    found = [c for c in cycles(import_graph(typing_too=True))
             if any(m.startswith("dnsflow.edge.") for m in c)]
    assert not found, "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_components_are_imported_by_their_installed_names() -> None:
    """The checkout's folders install as ``dnsflow.edge`` ... (issue #15): an import of the bare
    folder name would work from the checkout only and load a second copy of the module."""
    bare = []
    for path in _modules().values():
        for node in _top_level_imports(ast.parse(path.read_text()).body, typing_too=True):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if not node.level else [])
            bare += [f"{path.relative_to(ROOT)}: {n}" for n in names
                     if n.split(".")[0] in PACKAGES and n.split(".")[0] != "dnsflow"]
    assert not bare, "imports by folder name: " + "; ".join(bare)


def test_components_meet_only_on_their_api() -> None:
    """ARCHITECTURE.md: components never import each other's internals. One component uses
    another only through its ``api`` module (``dnsflow.policies.api``, ``dnsflow.sinks.api``)."""
    components = {p for p in PACKAGES.values() if p != "dnsflow"}
    wrong = []
    for mod, path in _modules().items():
        own = next((c for c in components if mod == c or mod.startswith(c + ".")), None)
        if own is None:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                other = next((c for c in components
                              if name == c or name.startswith(c + ".")), None)
                if other is not None and other != own and name != f"{other}.api":
                    wrong.append(f"{mod} imports {name}")
    assert not wrong, "; ".join(wrong)
