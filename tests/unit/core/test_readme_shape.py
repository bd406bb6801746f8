"""Every component README has one shape (docs/readme-shape.md) and points only inside the
repository (issue #15): the title line, then ``## Owns``, ``## Syntax``, ``## Examples``,
``## Metrics`` in that order, optional sections after; no link to a missing file or outside
the checkout; every ``--flag`` the Syntax section shows for a ``dnsflow`` verb is one that verb
accepts."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dnsflow.cli import build_parser, common_options

ROOT = Path(__file__).resolve().parents[3]
READMES = (
    "dnsflow/README.md",
    "edge/README.md",
    "edge/tap/README.md",
    "edge/egress/README.md",
    "policies/README.md",
    "policies/sources/README.md",
    "streams/README.md",
    "streams/detectors/README.md",
    "sinks/README.md",
    "console/README.md",
)
REQUIRED = ("Owns", "Syntax", "Examples", "Metrics")

FENCE = re.compile(r"^(```|~~~)")
LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
# a backticked repo path: segments of word characters, dots and dashes, ending in a folder's
# slash or a file with one of these extensions (not a label such as dnsflow.io/tenant)
PATHLIKE = re.compile(r"^[\w.-]+(/[\w.-]+)*(/|\.(py|md|ya?ml|sql|json|gz|txt|toml|sh|html))$")
# absolute paths that are about the running system, not files of the project
SYSTEM = ("/etc/", "/proc/", "/sys/", "/dev/", "/run/", "/var/", "/usr/", "/tmp/")


def _text(readme: str) -> str:
    return (ROOT / readme).read_text(encoding="utf-8")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks."""
    out, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            out.append(line)
    return out


def _sections(text: str) -> list[str]:
    return [line[3:].strip() for line in _prose(text) if line.startswith("## ")]


def _section(text: str, name: str) -> str:
    """The lines of ``## name`` up to the next ``## `` heading (fenced blocks included)."""
    out, inside, fenced = [], False, False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
        elif not fenced and line.startswith("## "):
            inside = line[3:].strip() == name
            continue
        if inside:
            out.append(line)
    return "\n".join(out)


def shape_problems(readme: str, text: str) -> list[str]:
    problems = []
    folder = str(Path(readme).parent)
    first = text.splitlines()[0] if text else ""
    if not re.fullmatch(rf"# {re.escape(folder)}/ — \S.*", first):
        problems.append(f"{readme}: the first line is not '# {folder}/ — <what it is>': "
                        f"{first!r}")
    sections = _sections(text)
    head = sections[:len(REQUIRED)]
    if tuple(head) != REQUIRED:
        missing = [s for s in REQUIRED if s not in sections]
        problems.append(f"{readme}: the first sections are {head}, want {list(REQUIRED)}"
                        + (f" (missing: {missing})" if missing else " (out of order)"))
    for name in REQUIRED:
        if sections.count(name) > 1:
            problems.append(f"{readme}: '## {name}' appears {sections.count(name)} times")
    return problems


def _outside(target: str) -> bool:
    """An absolute filesystem path, or one leaving the checkout."""
    if target.startswith(("file:", "~")):
        return True
    if target.startswith("/"):
        return not target.startswith(SYSTEM) or target.startswith(str(ROOT.parent) + "/")
    return False


def _exists(span: str, base: Path) -> bool:
    """A path from the repository root or the README's folder; a bare file name (a module
    table's ``udp.py`` in the ``listeners/`` row) anywhere below the README's folder."""
    if (ROOT / span).exists() or (base / span).exists():
        return True
    return "/" not in span and any(base.rglob(span))


def link_problems(readme: str, text: str) -> list[str]:
    problems = []
    base = (ROOT / readme).parent
    for line in _prose(text):
        for target in LINK.findall(line):
            if re.match(r"[a-z][a-z0-9+.-]*://|mailto:|#", target):
                continue  # a URL or an anchor in this file
            path = target.split("#", 1)[0]
            if _outside(path):
                problems.append(f"{readme}: link to an absolute path: {target}")
                continue
            resolved = (base / path).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{readme}: link outside the repository: {target}")
            elif not resolved.exists():
                problems.append(f"{readme}: link to a missing file: {target}")
        for span in CODE_SPAN.findall(line):
            span = span.strip()
            outside = span.startswith(("../", str(ROOT.parent) + "/")) or (
                span.startswith("/") and _outside(span) and PATHLIKE.match(span[1:]))
            if outside:
                problems.append(f"{readme}: path outside the repository: `{span}`")
            elif PATHLIKE.match(span) and not _exists(span, base):
                problems.append(f"{readme}: no such file in the repository: `{span}`")
    return problems


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {s for a in parser._actions for s in a.option_strings}


def _command_lines(section: str) -> list[str]:
    """``dnsflow ...`` command lines of a section: in code blocks (indented or ``\\``
    continuation lines joined, ``#`` comments dropped) and in backticks."""
    lines: list[str] = []
    fenced = in_command = False
    for line in section.splitlines():
        if FENCE.match(line.strip()):
            fenced, in_command = not fenced, False
            continue
        if fenced:
            code = line.split(" #", 1)[0].rstrip()
            if code.strip().startswith("dnsflow "):
                lines.append(code.strip())
                in_command = True
            elif in_command and code.strip() and (
                    lines[-1].endswith("\\") or line[:1].isspace()):
                lines[-1] = lines[-1].rstrip("\\").rstrip() + " " + code.strip()
            else:
                in_command = False
        else:
            lines += [s for s in CODE_SPAN.findall(line) if s.startswith("dnsflow ")]
    return lines


def flag_problems(readme: str, text: str) -> list[str]:
    problems = []
    verbs = _subparsers(build_parser())
    for cmd in _command_lines(_section(text, "Syntax")):
        words = cmd.split()
        if len(words) > 1 and words[1] == "<verb>":  # the options every verb takes
            parser = common_options()
        else:
            parser = verbs.get(words[1]) if len(words) > 1 else None
        if parser is None:
            problems.append(f"{readme}: Syntax shows an unknown verb: {cmd}")
            continue
        actions = _subparsers(parser)
        if len(words) > 2 and words[2] in actions:
            parser = actions[words[2]]
        known = _options(parser)
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", cmd):
            if flag not in known:
                problems.append(f"{readme}: '{' '.join(words[:3])}' has no option {flag}")
    return problems


@pytest.mark.parametrize("readme", READMES)
def test_readme_has_the_shape(readme: str) -> None:
    assert shape_problems(readme, _text(readme)) == []


@pytest.mark.parametrize("readme", READMES)
def test_readme_points_only_inside_the_repository(readme: str) -> None:
    assert link_problems(readme, _text(readme)) == []


@pytest.mark.parametrize("readme", READMES)
def test_readme_syntax_shows_only_real_flags(readme: str) -> None:
    assert flag_problems(readme, _text(readme)) == []


def test_the_checks_catch_what_they_are_for() -> None:
    good = ("# edge/ — x\n\n## Owns\n\n## Syntax\n\n```\ndnsflow edge --listen A \\\n"
            "    --workers 2\n```\n\n## Examples\n\n## Metrics\n\n## Files\n")
    assert shape_problems("edge/README.md", good) == []
    assert flag_problems("edge/README.md", good) == []
    swapped = good.replace("## Examples", "## X").replace("## Metrics", "## Examples")
    assert shape_problems("edge/README.md", swapped.replace("## X", "## Metrics"))
    assert shape_problems("edge/README.md", good.replace("## Metrics\n", ""))
    assert shape_problems("edge/README.md", good.replace("# edge/ — x", "# edge"))
    assert flag_problems("edge/README.md", good.replace("--workers", "--wrokers"))
    assert flag_problems("edge/README.md", "## Syntax\n\n`dnsflow policy show --tenat T`\n")
    for bad in ("[api](/work/notes/policy_api.md)", "[x](../shared/api.md)",
                "[x](missing.md)", "contract in `/work/notes/policy_api.md`",
                "see `../shared/api.md`", "see `edge/nothing_here.py`"):
        assert link_problems("edge/README.md", bad), bad
    for fine in ("[x](https://example.com/a.md)", "[x](#owns)", "[x](../README.md)",
                 "[x](metrics.py)", "`/etc/resolv.conf`", "`dnsflow.io/tenant`",
                 "`listeners/mmsg.py`", "`tests/unit/core/test_readme_shape.py`", "`/metrics`"):
        assert link_problems("edge/README.md", fine) == [], fine
