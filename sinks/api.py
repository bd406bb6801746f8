"""What other components may use of the sinks: connecting to the configured ClickHouse (the
console reads the tables the sink writes). Everything else in sinks/ is internal."""

from __future__ import annotations

from dnsflow.sinks.dsn import ConnectError, Dsn, DsnError, connect, one_line, parse

__all__ = ["ConnectError", "Dsn", "DsnError", "connect", "one_line", "parse"]
