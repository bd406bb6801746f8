"""Events for every query/response, published without ever blocking an answer."""

from dnsflow.edge.telemetry.publisher import EVENT_KEYS, EventPublisher
from dnsflow.edge.telemetry.spool import Spool

__all__ = ["EVENT_KEYS", "EventPublisher", "Spool"]
