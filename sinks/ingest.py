"""Events into ClickHouse as JSON: the JSONEachRow body for ``dnsflow.dns_events_ingest``.

Why: building ClickHouse columns in Python (tuples, transposes, Native serialisation) was
~3 µs of the sink's GIL-bound CPU per event; ClickHouse parses the same JSON in C++, outside
the GIL, while the sink validates the next batch. The sink still validates every record
(``rows.event_objects``); what it sends is each accepted value verbatim, wrapped with its
Kafka coordinates::

    {"kafka_source":"…","kafka_partition":2,"kafka_offset":1234,"event":<the value>}

The view ``dns_events_ingest_mv`` (``schema/009_events_ingest.sql``) converts and normalises
into ``dns_events``. A value goes verbatim only when ClickHouse must read it exactly as the
core model does: plain ASCII without escapes (so its ``lower``/``upper`` equal Python's);
anything else — and any batch ClickHouse refused — is sent as the canonical JSON of the
stored row (:func:`canonical_body`), which is normalised already.

A batch is one block for ClickHouse (``batch_rows`` ≤ 1 M rows, under
``max_insert_block_size``; no byte limit by default), so the verbatim and the canonical body
of a batch split into the same parts and one dedup token covers either.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from dnsflow.sinks.rows import CanonicalEvent, canonical_event, event_row

INGEST_FORMAT = "JSONEachRow"


def _prefix_format(source: str) -> bytes:
    """``}\\n{"kafka_source":…,"kafka_partition":%d,"kafka_offset":%d,"event":`` — the end of
    the previous object, and the start of the next up to its event."""
    return (b'}\n{"kafka_source":' + orjson.dumps(source).replace(b"%", b"%%")
            + b',"kafka_partition":%d,"kafka_offset":%d,"event":')


def _join(objects: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
          source: str) -> bytes:
    n = len(objects)
    if not n:
        return b""
    prefix = _prefix_format(source).__mod__
    pieces: list[bytes] = [b"}"] * (2 * n + 1)  # prefix, object, prefix, ..., object, "}"
    pieces[0 : 2 * n : 2] = map(prefix, zip(partitions, offsets, strict=True))
    pieces[1 : 2 * n : 2] = objects
    pieces[0] = pieces[0][2:]  # no object before the first
    return b"".join(pieces)  # slice assignment and join: no Python step per record


def _verbatim_ok(obj: bytes) -> bool:
    return obj.isascii() and obj.find(b"\\") < 0


def ingest_body(objects: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
                source: str, where: str) -> bytes:
    """The body for one batch; ``objects`` from ``rows.event_objects``/``event_object``.

    Checks the whole body once (C speed); only if it holds non-ASCII bytes or a backslash
    are the verbatim values among ``objects`` checked one by one and, where needed,
    replaced by their canonical JSON.
    """
    body = _join(objects, partitions, offsets, source)
    if _verbatim_ok(body):
        return body
    fixed = [o if type(o) is not bytes or _verbatim_ok(o) else canonical_event(event_row(o, where))
             for o in objects]
    return _join(fixed, partitions, offsets, source)


def canonical_body(objects: Sequence[bytes], partitions: Sequence[int], offsets: Sequence[int],
                   source: str, where: str) -> bytes:
    """The same batch with every event as the canonical JSON of its row: what a retry sends
    after ClickHouse refused the verbatim body (e.g. a duplicate key, which msgspec allows
    and ClickHouse does not). Same rows, same offsets, so the same dedup token applies."""
    fixed = [o if isinstance(o, CanonicalEvent) else canonical_event(event_row(o, where))
             for o in objects]
    return _join(fixed, partitions, offsets, source)
