"""The dead-letter record: one shape for every component that rejects a record.

A record on ``dnsflow.dlq`` (key: the source topic) says where the rejected record came
from, who rejected it and why, and carries its bytes: as text when they are UTF-8, else
base64 (``value_encoding``), so nothing is lost and it can be fixed and replayed.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson

from dnsflow.schema import now_us


def dlq_record(source_topic: str, partition: int, offset: int, reason: str,
               value: bytes | None, key: bytes | None = None, *, component: str) -> bytes:
    """The DLQ value for a record of ``source_topic`` rejected by ``component``."""
    body: dict[str, Any] = {
        "ts": now_us(), "source_topic": source_topic, "partition": partition,
        "offset": offset, "reason": reason, "component": component,
        "key": key.decode("utf-8", "replace") if key is not None else None,
    }
    if value is None:
        body["value"], body["value_encoding"] = None, "none"
    else:
        try:
            body["value"], body["value_encoding"] = value.decode("utf-8"), "text"
        except UnicodeDecodeError:
            body["value"], body["value_encoding"] = base64.b64encode(value).decode(), "base64"
    return orjson.dumps(body)

