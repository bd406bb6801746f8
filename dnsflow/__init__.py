"""dnsflow core: the event schema, settings, bus and CLI shared by every component."""

__version__ = "0.1.0"
