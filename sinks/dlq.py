"""What a rejected record becomes on the ``dlq`` topic: enough to find, fix and replay it."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from dnsflow.bus import Message
from dnsflow.schema import now_us


def dlq_record(msg: Message, reason: str) -> bytes:
    """What a rejected record becomes on the DLQ: enough to find, fix and replay it."""
    body: dict[str, Any] = {
        "topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
        "reason": reason, "ts": now_us(), "stage": "sink",
        "key": msg.key.decode("utf-8", "replace") if msg.key is not None else None,
    }
    if msg.value is None:
        body["value"] = None
    else:
        try:
            body["value"] = msg.value.decode("utf-8")
        except UnicodeDecodeError:
            body["value_base64"] = base64.b64encode(msg.value).decode()
    return orjson.dumps(body)
