"""Read policy documents from YAML text, files and directories, collecting every problem.

Problems carry the file, the 1-based document index within the file and the field path
(``spec.rules[2].match.names[0]``) so ``dnsflow policy validate`` can print one per line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from dnsflow.policies.model import KINDS, ClusterDNSPolicy, DNSPolicy

Policy = DNSPolicy | ClusterDNSPolicy
_INDEX_PREFIX = re.compile(r"^\[(\d+)\] ")


@dataclass(frozen=True, slots=True)
class Problem:
    """One validation problem: where (file, document, field path) and what."""

    file: str
    doc: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}: document {self.doc}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


@dataclass(frozen=True, slots=True)
class Located:
    """A valid document and where it came from."""

    policy: Policy
    file: str
    doc: int


class PolicySetError(ValueError):
    """A policy set was rejected; ``problems`` lists every reason."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def problems_from(exc: ValidationError, file: str, doc: int) -> list[Problem]:
    out = []
    for err in exc.errors():
        loc = list(err["loc"])
        msg = str(err["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix):]
        m = _INDEX_PREFIX.match(msg)
        if m:  # list validators report the failing item's index in the message
            loc.append(int(m.group(1)))
            msg = msg[m.end():]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "literal_error" and "input" in err:
            msg = f"{msg} (got {err['input']!r})"
        out.append(Problem(file, doc, _path(loc), msg))
    return out


def parse_document(obj: Any, file: str, doc: int) -> tuple[Policy | None, list[Problem]]:
    """Validate one decoded document; return it or the problems found."""
    if not isinstance(obj, dict):
        return None, [Problem(file, doc, "", f"expected a mapping, got {type(obj).__name__}")]
    kind = obj.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        return None, [Problem(file, doc, "kind", f"unknown kind {kind!r} (expected "
                              "DNSPolicy or ClusterDNSPolicy)")]
    try:
        return model.model_validate(obj), []
    except ValidationError as exc:
        return None, [_name_rule(p, obj) for p in problems_from(exc, file, doc)]


_RULE_PATH = re.compile(r"^spec\.rules\[(\d+)\]\.match\.regex\[")


def _name_rule(p: Problem, obj: dict[str, Any]) -> Problem:
    """A refused regex also names its policy and rule (the pattern is in the message)."""
    m = _RULE_PATH.match(p.path)
    if m is None:
        return p
    meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    ns, name = meta.get("namespace"), meta.get("name")
    policy = f"{ns}/{name}" if ns else str(name)
    rules = (obj.get("spec") or {}).get("rules") if isinstance(obj.get("spec"), dict) else None
    i = int(m.group(1))
    rid = None
    if isinstance(rules, list) and i < len(rules) and isinstance(rules[i], dict):
        rid = rules[i].get("id")
    rule = f"rule {rid!r}" if rid else f"rule #{i}"
    return Problem(p.file, p.doc, p.path, f"{p.message} [policy {policy}, {rule}]")


def load_text(text: str, file: str) -> tuple[list[Located], list[Problem]]:
    """Parse a multi-document YAML text; empty documents are skipped."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        return [], [Problem(file, 0, "", f"{line}invalid YAML: {problem}")]
    located: list[Located] = []
    problems: list[Problem] = []
    for i, obj in enumerate(docs, start=1):
        if obj is None:
            continue
        policy, errs = parse_document(obj, file, i)
        problems.extend(errs)
        if policy is not None:
            located.append(Located(policy, file, i))
    return located, problems


def policy_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[Problem]]:
    """Expand directories to their ``*.yaml``/``*.yml`` files (sorted, recursive)."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            # hidden entries are skipped at any depth: a ConfigMap volume keeps the real
            # files under ..data/ and ..<timestamp>/ and links them at the top
            files.extend(sorted(
                f for f in p.rglob("*")
                if f.suffix in (".yaml", ".yml") and f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(p).parts)))
        elif p.is_file():
            files.append(p)
        else:
            problems.append(Problem(str(p), 0, "", "no such file or directory"))
    return files, problems


def load_paths(paths: Iterable[str | Path]) -> tuple[list[Located], list[Problem]]:
    files, problems = policy_files(paths)
    located: list[Located] = []
    for f in files:
        try:
            text = f.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(f), 0, "", f"cannot read: {exc}"))
            continue
        got, errs = load_text(text, str(f))
        located.extend(got)
        problems.extend(errs)
    return located, problems
