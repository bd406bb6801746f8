"""The ClickHouse side of the sink: idempotent batch inserts and "what is already stored".

Two mechanisms make replays harmless (see README "Exactly once"):

* every insert carries an ``insert_deduplication_token`` derived from the exact Kafka
  coordinates it holds, so retrying an insert whose outcome was unknown (timeout, lost
  connection) cannot store it twice (``non_replicated_deduplication_window`` on each table);
* after a restart or rebalance the sink asks :meth:`Store.stored_offsets` which offsets of
  the not-yet-committed range are already in the table and skips those rows.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from dnsflow.gctune import gc_paused
from dnsflow.sinks.dsn import Dsn, connect, one_line
from dnsflow.sinks.faults import fault_soon
from dnsflow.sinks.lowcard import speed_up

log = logging.getLogger(__name__)

DATABASE = "dnsflow"
COORDINATES = ("kafka_partition", "kafka_offset", "kafka_source")

# Settings for every batch insert. ``optimize_on_insert = 0``: by default ClickHouse runs the
# Replacing/Aggregating merge over each inserted block before writing it; a batch never holds
# two rows with the same key (offsets are distinct) and the rollup views already GROUP BY per
# block, so that pass only cost CPU (~0.5-1 µs of ~4 per event in chDB, bench.sink). Replays
# still collapse on merge and with FINAL; dedup tokens are unaffected.
INSERT_SETTINGS: dict[str, Any] = {"optimize_on_insert": 0}
# JSON inserts go through a view into dns_events (and on into the rollups): the dedup token
# must apply there too (default on ClickHouse >= 24, spelled out for older servers).
# Parallel parsing off: the sink already keeps the cores busy with two batches in flight, and
# splitting a 25 MB body into parallel chunks cost ~0.5 µs more CPU per event (bench.sink).
JSON_INSERT_SETTINGS: dict[str, Any] = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "input_format_parallel_parsing": 0,
}


class StoreError(RuntimeError):
    """ClickHouse refused or could not be reached; the message is one redacted line."""


def batch_token(table: str, source: str, ranges: Iterable[tuple[int, int, int]]) -> str:
    """A token naming exactly the log and (partition, first, last) offset ranges of a batch."""
    text = f"{table};{source};" + ";".join(f"{p}:{a}-{b}" for p, a, b in sorted(ranges))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class Store:
    def __init__(self, dsn: Dsn, client: Any | None = None) -> None:
        self.dsn = dsn
        self._client = client
        self._contexts: dict[tuple[str, tuple[str, ...]], Any] = {}

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                self._client = connect(self.dsn)
            except Exception as exc:
                raise StoreError(f"clickhouse {self.dsn}: {one_line(exc, self.dsn.raw)}") from None
        return self._client

    def close(self) -> None:
        if self._client is not None:
            try:
                self._client.close()
            finally:
                self._client = None
                self._contexts.clear()

    def reset(self) -> None:
        """Drop the client after a failure so the next attempt reconnects."""
        if not self.dsn.embedded:
            try:
                self.close()
            except Exception:  # already failing; reconnect next time
                self._client = None
                self._contexts.clear()

    def insert(
        self, table: str, columns: Sequence[str], data: list[Sequence[Any]], token: str
    ) -> None:
        """Insert column-oriented ``data`` atomically per part; raise :class:`StoreError`."""
        key = (table, tuple(columns))
        try:
            ctx = self._contexts.get(key)
            if ctx is None:
                ctx = self.client.create_insert_context(
                    table=table, database=DATABASE, column_names=list(columns),
                    column_oriented=True, settings=dict(INSERT_SETTINGS),
                )
                speed_up(ctx.column_types)
                self._contexts[key] = ctx
            ctx.data = data
            ctx.column_oriented = True
            ctx.settings["insert_deduplication_token"] = token
            fault_soon("during-insert")
            with gc_paused():
                self.client.insert(context=ctx)
        except Exception as exc:
            self.reset()
            raise StoreError(
                f"insert into {DATABASE}.{table} at {self.dsn}: {one_line(exc, self.dsn.raw)}"
            ) from exc

    def insert_json(self, table: str, body: bytes, token: str) -> None:
        """Insert a JSONEachRow body (``sinks/ingest.py``) into ``table``; one request."""
        fault_soon("during-insert")
        try:
            self.client.raw_insert(
                f"{DATABASE}.{table}", None, insert_block=body, fmt="JSONEachRow",
                settings={**INSERT_SETTINGS, **JSON_INSERT_SETTINGS,
                          "insert_deduplication_token": token},
            )
        except Exception as exc:
            self.reset()
            raise StoreError(
                f"insert into {DATABASE}.{table} at {self.dsn}: {one_line(exc, self.dsn.raw)}"
            ) from exc

    def stored_offsets(
        self, table: str, source: str, starts: dict[int, int]
    ) -> dict[int, set[int]]:
        """Offsets of ``source`` at or after ``starts[partition]`` that ``table`` holds."""
        if not starts:
            return {}
        where = " OR ".join(
            f"(kafka_partition = {int(p)} AND kafka_offset >= {int(o)})" for p, o in starts.items()
        )
        sql = (f"SELECT kafka_partition, kafka_offset FROM {DATABASE}.{table} "
               f"WHERE kafka_source = {{source:String}} AND ({where})")
        try:
            rows = self.client.query(sql, parameters={"source": source}).result_rows
        except Exception as exc:
            self.reset()
            raise StoreError(
                f"reading {DATABASE}.{table} at {self.dsn}: {one_line(exc, self.dsn.raw)}"
            ) from exc
        out: dict[int, set[int]] = {p: set() for p in starts}
        for p, o in rows:
            out[int(p)].add(int(o))
        return out

    def ping(self) -> None:
        try:
            self.client.query("SELECT 1")
        except Exception as exc:
            self.reset()
            raise StoreError(f"clickhouse {self.dsn}: {one_line(exc, self.dsn.raw)}") from exc
