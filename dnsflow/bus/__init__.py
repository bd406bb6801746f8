"""The bus: one interface, two implementations (Apache Kafka and in-process).

Components only talk to :class:`Bus` and :class:`Consumer`; which one they get is decided by
settings (``--kafka BOOTSTRAP`` → Kafka, nothing → in-process) in :func:`open_bus`;
:func:`bus_for` takes them, and the topics' replication, from the settings.
"""

from dnsflow.bus.base import Bus, BusError, Consumer, Message
from dnsflow.bus.factory import bus_for, open_bus

__all__ = ["Bus", "BusError", "Consumer", "Message", "bus_for", "open_bus"]
