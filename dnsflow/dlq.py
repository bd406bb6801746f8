"""The dead-letter record: one shape for every component that rejects a record.

A record on ``dnsflow.dlq`` (key: the source topic) says where the rejected record came
from, who rejected it and why, and carries its bytes: as text when they are UTF-8, else
base64 (``value_encoding``), so nothing is lost and it can be fixed and replayed.
:func:`send_dead_letter` is how a consumer hands a message it refuses to the DLQ.
"""

from __future__ import annotations

import base64
import logging
from typing import TYPE_CHECKING, Any

import orjson

from dnsflow.bus.base import BusError, Message
from dnsflow.schema import now_us

if TYPE_CHECKING:
    from dnsflow.bus.base import Bus

log = logging.getLogger(__name__)


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



async def send_dead_letter(bus: Bus, m: Message, reason: str, *, component: str) -> bool:
    """Send the refused message ``m`` to the DLQ (keyed by its topic). A bus failure is
    logged, not raised: the record is refused either way, and a DLQ outage must not stop
    the consumer that refused it. True if it was sent."""
    value = dlq_record(m.topic, m.partition, m.offset, reason, m.value, m.key,
                       component=component)
    try:
        await bus.send(bus.topics.dlq, value, key=m.topic.encode())
    except BusError as exc:
        log.error("cannot send a rejected record of %s to the DLQ: %s", m.topic, exc)
        return False
    return True
