"""The image as the Dockerfile defines it, read the way a builder reads it (continuation lines
joined), for the tests that run the edge the way the image would."""

from __future__ import annotations

import shlex
from pathlib import Path

DOCKERFILE = (Path(__file__).resolve().parents[2] / "Dockerfile").read_text()


def instructions(name: str) -> list[str]:
    """Every ``name`` instruction (e.g. ``COPY``), continuation lines joined."""
    return [line for line in DOCKERFILE.replace("\\\n", " ").splitlines()
            if line.startswith(name + " ")]


def image_env() -> dict[str, str]:
    """The ENV instructions of the Dockerfile (the image's environment)."""
    env: dict[str, str] = {}
    for line in instructions("ENV"):
        for part in shlex.split(line[4:]):
            k, _, v = part.partition("=")
            env[k] = v
    return env
