"""How a partition's checkpoint is laid out as records of the faust state table.

A checkpoint usually fits one Kafka record (key ``logic:<partition>``). A busy partition's
state can outgrow Kafka's default 1 MiB record limit (many tenants, long low-and-slow
windows, thousands of unique names), and a checkpoint that cannot be written holds the
partition's offset commits back. So a large checkpoint is split into pieces
(``logic:<partition>:<generation>:<i>``) and ``logic:<partition>`` then holds a manifest naming
them, written after the pieces; the previous generation's pieces are deleted (tombstones).
A manifest whose pieces are missing is ignored rather than half-restored.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable

import orjson

log = logging.getLogger("dnsflow.streams.checkpoint")

STATE_KEY = "logic"
MAX_RECORD = 900_000  # bytes; Kafka's default max.message.bytes is 1 MiB
MANIFEST = b"DNSFLOW-CHUNKS:"  # an lz4 frame starts with 04 22 4d 18, never with this


def checkpoint_key(partition: int) -> str:
    return f"{STATE_KEY}:{partition}"


def pieces_of(manifest: bytes | None) -> list[str]:
    """The piece keys a stored ``logic:<partition>`` value names (none for a plain one)."""
    if not manifest or not manifest.startswith(MANIFEST):
        return []
    return list(orjson.loads(manifest[len(MANIFEST):]))


def to_records(partition: int, value: bytes, generation: int, previous: bytes | None = None,
               limit: int = MAX_RECORD) -> list[tuple[str, bytes | None]]:
    """The table records that store ``value`` for ``partition``, in write order.

    ``previous`` is the value now under ``logic:<partition>``: its pieces are deleted.
    """
    key = checkpoint_key(partition)
    stale = pieces_of(previous)
    if len(value) <= limit:
        records: list[tuple[str, bytes | None]] = [(key, value)]
    else:
        keys = [f"{key}:{generation}:{i}" for i in range((len(value) + limit - 1) // limit)]
        records = [(k, value[i * limit:(i + 1) * limit]) for i, k in enumerate(keys)]
        records.append((key, MANIFEST + orjson.dumps(keys)))
        stale = [k for k in stale if k not in keys]
    return records + [(k, None) for k in stale]


def assemble(items: Iterable[tuple[str, bytes | None]],
             partitions: Collection[int] | None = None) -> dict[int, bytes]:
    """The whole checkpoints among the table's ``items``, by partition (only ``partitions``
    when given: a table also holds standby copies of partitions other workers own)."""
    table = {str(k): v for k, v in items if v}
    out: dict[int, bytes] = {}
    for key, value in table.items():
        name, sep, part = key.partition(":")
        if name != STATE_KEY or not sep or not part.isdigit():
            continue  # a piece, or not ours
        partition = int(part)
        if partitions is not None and partition not in partitions:
            continue
        if not value.startswith(MANIFEST):
            out[partition] = value
            continue
        keys = pieces_of(value)
        missing = [k for k in keys if k not in table]
        if missing:
            log.warning("streams: checkpoint %s is missing %d of its %d pieces: not restored",
                        key, len(missing), len(keys))
            continue
        out[partition] = b"".join(table[k] for k in keys)  # type: ignore[misc]
    return out
