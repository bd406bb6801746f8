"""Read a YAML file a user wrote, with errors that name the file and the place.

One loader for every file-based configuration (settings, the tenant map, alert rules), so a
missing, non-UTF-8 or broken file is reported the same way everywhere: ``<what> <path>: cannot
read (...)``, ``... : not UTF-8 (byte N)``, ``<what> <path> line N: invalid YAML``. Each
caller passes its own error class, so its callers keep catching what they caught before.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ErrorType = Callable[[str], Exception]


def read_utf8(path: str | Path, label: str, error: ErrorType) -> str:
    """The text of ``path``; ``label`` (e.g. ``"tenant map /etc/map.yaml"``) starts the
    message of the ``error`` raised when it cannot be read or is not UTF-8."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{label}: cannot read ({exc.strerror})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{label}: not UTF-8 (byte {exc.start})") from None


def parse_yaml(text: str, label: str, error: ErrorType) -> Any:
    """One YAML document (``None`` when empty); a syntax error raises ``error`` naming the
    line (the parser's own wording would mean little to whoever edits the file)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise error(f"{label}{line}: invalid YAML") from None


def load_yaml(path: str | Path, label: str, error: ErrorType) -> Any:
    """:func:`read_utf8` then :func:`parse_yaml`."""
    return parse_yaml(read_utf8(path, label, error), label, error)
