"""Events for every query/response, published without ever blocking an answer."""

from edge.telemetry.publisher import EVENT_KEYS, EventPublisher
from edge.telemetry.spool import Spool

__all__ = ["EVENT_KEYS", "EventPublisher", "Spool"]
