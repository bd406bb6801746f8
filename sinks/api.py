"""What other components may use of the sinks: connecting to the configured ClickHouse (the
console reads the tables the sink writes) and reading rows the way ``dnsflow query`` does
(``dnsflow policy explain --connect`` / ``egress-export``). Everything else in sinks/ is
internal."""

from __future__ import annotations

from dnsflow.sinks.dsn import ConnectError, Dsn, DsnError, connect, one_line, parse
from dnsflow.sinks.reader import ReadError, read_rows, sql_str

__all__ = ["ConnectError", "Dsn", "DsnError", "ReadError", "connect", "one_line", "parse",
           "read_rows", "sql_str"]
