"""Streams unit tests: make tests/data and this folder importable (importlib mode)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
for p in (HERE, HERE.parents[1] / "data"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import labeled_traffic  # noqa: E402


@pytest.fixture
def ev():
    return labeled_traffic.event


@pytest.fixture
def lt():
    return labeled_traffic
