"""A benchmark's scratch directory (configs, logs, captures): made fresh for the run and
deleted at its end, unless ``--keep`` asks to keep it for a look at what went wrong."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def add_keep_option(ap: argparse.ArgumentParser) -> None:
    """``--keep``: keep the work directory instead of deleting it."""
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, "
                    "configs, captures) instead of deleting it")


def make_work_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def finish_work_dir(work: Path, keep: bool, log: Callable[[str], None]) -> None:
    """Delete ``work``, or say where it is when it is kept."""
    if keep:
        log(f"work directory kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
