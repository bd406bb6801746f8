"""A directory of YAML policy files, polled for changes (mtime, size and name of each file).

Polling keeps it dependency-free and works on every filesystem (including bind mounts and
ConfigMap volumes, whose symlink swaps inotify-style watchers often miss).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from dnsflow.policies import policyset
from dnsflow.policies.loader import PolicySetError, load_paths, policy_files
from dnsflow.tasks import cancel_and_wait

log = logging.getLogger(__name__)

Fingerprint = tuple[tuple[str, int, int], ...]
OnSet = Callable[[dict[str, dict[str, Any]]], Awaitable[None]]
OnError = Callable[[PolicySetError], Awaitable[None]]


def fingerprint(paths: list[Path]) -> Fingerprint:
    files, _ = policy_files([p for p in paths if p.exists()])
    out = []
    for f in files:
        try:
            st = f.stat()
        except OSError:
            continue
        out.append((str(f), st.st_mtime_ns, st.st_size))
    return tuple(out)


class YamlDirSource:
    """Calls ``on_set`` with the publishable documents whenever the directory changes and
    the new set is valid; calls ``on_error`` (and keeps the last good set) otherwise."""

    def __init__(self, directory: str | Path | list[str | Path], on_set: OnSet,
                 on_error: OnError, interval_s: float = 1.0) -> None:
        self.paths = [Path(p) for p in (directory if isinstance(directory, list)
                                        else [directory])]
        self.directory = self.paths[0]
        self.on_set = on_set
        self.on_error = on_error
        self.interval_s = interval_s
        self._seen: Fingerprint | None = None
        self._task: asyncio.Task[None] | None = None
        self.loads = 0
        self.rejections = 0

    @property
    def source(self) -> str:
        return "yaml:" + ",".join(str(p.resolve()) for p in self.paths)

    async def check(self) -> bool:
        """Reload if anything changed; True if a new valid set was handed over."""
        fp = fingerprint(self.paths)
        if fp == self._seen:
            return False
        self._seen = fp
        missing = [p for p in self.paths if not p.exists()]
        if missing:
            log.warning("policy path %s does not exist (yet)", missing[0])
            return False
        docs, problems = await asyncio.to_thread(load_paths, self.paths)
        try:
            built = policyset.build(docs, problems)
        except PolicySetError as exc:
            self.rejections += 1
            await self.on_error(exc)
            return False
        try:
            await self.on_set(built)
        except Exception:
            self._seen = None  # retry on the next poll (e.g. the bus was down)
            raise
        self.loads += 1
        return True

    async def start(self) -> None:
        await self.check()
        self._task = asyncio.create_task(self._loop(), name=f"policy-dir {self.directory}")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("policy directory %s", self.directory)
