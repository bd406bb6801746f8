"""From YAML to publishable documents in one step, all-or-nothing.

A set with any invalid document is rejected whole (:class:`PolicySetError` lists every
problem), so the last good version stays in force wherever this set would have gone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from dnsflow.policies.loader import Located, PolicySetError, Problem, load_paths, load_text
from dnsflow.policies.records import documents
from dnsflow.policies.validate import check_set


def build(docs: Sequence[Located], problems: Sequence[Problem] = ()) -> dict[str, dict[str, Any]]:
    """Publishable content per key, or :class:`PolicySetError` with every problem."""
    all_problems = list(problems) + check_set(docs)
    if all_problems:
        raise PolicySetError(all_problems)
    return documents(docs)


def from_paths(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    docs, problems = load_paths(paths)
    return build(docs, problems)


def from_text(text: str, file: str = "<text>") -> dict[str, dict[str, Any]]:
    docs, problems = load_text(text, file)
    return build(docs, problems)
