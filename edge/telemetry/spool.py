"""A size-bounded, ordered on-disk spool of (key, value) records for when Kafka is away.

Records are appended to numbered segment files; the drainer reads the oldest segment from a
persisted position, so a restart neither loses nor re-sends what was already delivered.
Why segments: deleting a fully drained file is O(1) and the size bound is a sum of file sizes.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

REC = struct.Struct("!II")
FIRST_SEQ = 1_000_000_000
Record = tuple[bytes | None, bytes | None]


class SpoolBusy(RuntimeError):
    """Another process holds this spool directory."""


class Spool:
    def __init__(self, directory: str | Path, limit_bytes: int = 1 << 30,
                 segment_bytes: int = 8 << 20) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        # one writer per directory: two edges appending to the same segments would corrupt
        self._lock = (self.dir / ".lock").open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolBusy(f"event spool {self.dir} is in use by another process "
                            "(give each edge its own --name or --spool-dir)") from None
        self.limit_bytes = limit_bytes
        self.segment_bytes = segment_bytes
        self._active: int | None = None
        self._fh = None
        self._active_size = 0
        self.pending_records = 0
        self.size_bytes = 0
        self.max_pending = 0
        for seg in self._segments():
            size = seg.stat().st_size
            pos = self._pos(seg)
            self.size_bytes += size - pos
            self.pending_records += self._count(seg, pos)
        self.max_pending = self.pending_records

    # -- layout -------------------------------------------------------------------------
    def _segments(self) -> list[Path]:
        segs = []
        for p in self.dir.glob("*.seg"):
            with contextlib.suppress(ValueError):
                segs.append((int(p.stem), p))
        return [p for _, p in sorted(segs)]

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:012d}.seg"

    def _pos(self, seg: Path) -> int:
        try:
            return int((seg.with_suffix(".pos")).read_text() or 0)
        except (OSError, ValueError):
            return 0

    @staticmethod
    def _count(seg: Path, pos: int) -> int:
        n = 0
        with contextlib.suppress(OSError), seg.open("rb") as fh:
            fh.seek(pos)
            while True:
                head = fh.read(REC.size)
                if len(head) < REC.size:
                    break
                kl, vl = REC.unpack(head)
                fh.seek(kl + vl, os.SEEK_CUR)
                n += 1
        return n

    def __len__(self) -> int:
        return self.pending_records

    @property
    def empty(self) -> bool:
        return self.pending_records == 0

    # -- writing ------------------------------------------------------------------------
    @staticmethod
    def _encode(records: Sequence[Record]) -> bytes:
        out = bytearray()
        for k, v in records:
            k = k or b""
            v = v or b""
            out += REC.pack(len(k), len(v))
            out += k
            out += v
        return bytes(out)

    def append(self, records: Sequence[Record]) -> int:
        """Append in order; returns how many did NOT fit under the size limit (dropped)."""
        if not records:
            return 0
        data = self._encode(records)
        if self.size_bytes + len(data) > self.limit_bytes:
            # keep what fits, record by record, so the drop count is exact
            kept: list[Record] = []
            room = self.limit_bytes - self.size_bytes
            for r in records:
                need = REC.size + len(r[0] or b"") + len(r[1] or b"")
                if need > room:
                    break
                room -= need
                kept.append(r)
            dropped = len(records) - len(kept)
            if kept:
                self.append(kept)
            return dropped
        if self._fh is None or self._active_size >= self.segment_bytes:
            self._rotate()
        assert self._fh is not None
        self._fh.write(data)
        self._fh.flush()  # in the OS page cache: survives a crash of this process
        self._active_size += len(data)
        self.size_bytes += len(data)
        self.pending_records += len(records)
        self.max_pending = max(self.max_pending, self.pending_records)
        return 0

    def prepend(self, records: Sequence[Record]) -> int:
        """Put records before everything spooled (a direct send that failed after newer
        events were already spooled), keeping overall order."""
        if not records:
            return 0
        segs = self._segments()
        if not segs:
            return self.append(records)
        data = self._encode(records)
        if self.size_bytes + len(data) > self.limit_bytes:
            return len(records)
        seq = int(segs[0].stem) - 1
        self._path(seq).write_bytes(data)
        self.size_bytes += len(data)
        self.pending_records += len(records)
        self.max_pending = max(self.max_pending, self.pending_records)
        return 0

    def _rotate(self) -> None:
        if self._fh is not None:
            self._fh.close()
        segs = self._segments()
        seq = int(segs[-1].stem) + 1 if segs else FIRST_SEQ
        self._active = seq
        self._fh = self._path(seq).open("ab")
        self._active_size = 0

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    # -- draining -----------------------------------------------------------------------
    def peek(self, max_records: int) -> tuple[list[Record], tuple[Path, int, int] | None]:
        """Oldest records (up to ``max_records``) and a cursor to :meth:`commit` after sending."""
        segs = self._segments()
        if not segs:
            return [], None
        seg = segs[0]
        if self._active is not None and seg == self._path(self._active):
            # Close the active segment so it can be read whole; new writes go to a new one.
            assert self._fh is not None
            self._fh.close()
            self._fh = None
            self._active = None
        pos = self._pos(seg)
        out: list[Record] = []
        with seg.open("rb") as fh:
            fh.seek(pos)
            end = pos
            while len(out) < max_records:
                head = fh.read(REC.size)
                if len(head) < REC.size:
                    break
                kl, vl = REC.unpack(head)
                body = fh.read(kl + vl)
                if len(body) < kl + vl:
                    log.error("spool segment %s is truncated at %d; skipping the rest", seg, end)
                    break
                out.append((body[:kl] or None, body[kl:] or None))
                end += REC.size + kl + vl
        return out, (seg, pos, end)

    def commit(self, cursor: tuple[Path, int, int], count: int) -> None:
        seg, pos, end = cursor
        self.size_bytes -= end - pos
        self.pending_records -= count
        if end >= seg.stat().st_size:
            seg.unlink(missing_ok=True)
            seg.with_suffix(".pos").unlink(missing_ok=True)
        else:
            tmp = seg.with_suffix(".pos.tmp")
            tmp.write_text(str(end))
            tmp.replace(seg.with_suffix(".pos"))
        if self.pending_records <= 0:
            self.pending_records = 0
            self.size_bytes = max(self.size_bytes, 0)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
            self._active = None
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
