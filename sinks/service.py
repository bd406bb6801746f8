"""``build(settings, bus) -> [SinkService]`` for the embedded runner (and ``dnsflow sink``).

On start: connect, apply the schema (idempotent), start consuming; on a chDB DSN also serve
the loopback query endpoint so ``dnsflow query`` works while this process owns chDB. On stop:
flush and commit the current batch (bounded by ``stop_timeout``), then release everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dnsflow.sinks.config import SinkConfig, sink_config
from dnsflow.sinks.dsn import Dsn, connect, one_line, parse
from dnsflow.sinks.endpoint import QueryEndpoint
from dnsflow.sinks.migrate import migrate
from dnsflow.sinks.sink import Sink, SinkAborted
from dnsflow.sinks.store import Store, StoreError

from dnsflow.bus import Bus
from dnsflow.settings import Settings

log = logging.getLogger(__name__)


class SinkService:
    name = "sink"

    def __init__(
        self, bus: Bus, dsn: Dsn, config: SinkConfig, home: Path | None = None,
        *, stop_timeout: float = 15.0,
    ) -> None:
        self.bus = bus
        self.dsn = dsn
        self.config = config
        self.home = home
        self.store = Store(dsn)
        self.sink = Sink(bus, self.store, config)
        self.endpoint: QueryEndpoint | None = None
        self.stop_timeout = stop_timeout
        self.migrations: list[str] = []
        self.migrated = False
        self._task: asyncio.Task[None] | None = None
        self._query_client: Any = None
        self.error: str = ""

    async def start(self) -> None:
        try:
            await self._migrate()
        except StoreError as exc:
            if self.dsn.embedded:  # a chDB directory we cannot open will not heal by waiting
                raise
            log.warning("%s; the sink retries before consuming anything", exc)
        if self.dsn.embedded and self.config.query_endpoint and self.home is not None:
            assert self.dsn.path is not None
            self.endpoint = QueryEndpoint(self._endpoint_client, self.home, self.dsn.path)
            await self.endpoint.start()
        await self.sink.start()
        self._task = asyncio.create_task(self._run(), name="dnsflow-sink")

    def _endpoint_client(self) -> Any:
        if self._query_client is None:
            self._query_client = connect(self.dsn)
        return self._query_client

    async def _migrate(self) -> None:
        try:
            result = await asyncio.to_thread(
                migrate, self.store.client, self.config.retention_days, self.config.cluster
            )
        except StoreError:
            raise
        except Exception as exc:
            self.store.reset()
            raise StoreError(
                f"schema migration at {self.dsn}: {one_line(exc, self.dsn.raw)}"
            ) from None
        self.migrations = result.applied
        self.migrated = True

    async def _run(self) -> None:
        try:
            if not self.migrated:  # ClickHouse was away at start: wait for it, never skip
                await self.sink._retry(self._migrate, "schema migration")
            await self.sink.run()
        except SinkAborted as exc:
            self.error = str(exc)
            log.warning("sink stopped with a batch unstored (it will be replayed): %s", exc)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("sink loop failed")
            raise

    async def wait(self) -> None:
        """Until the sink loop ends (used by ``dnsflow sink``)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def stop(self) -> None:
        await self.sink.stop()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.stop_timeout)
            except TimeoutError:
                self.sink.abandon()
                with contextlib.suppress(Exception):
                    await self._task
            except Exception:
                pass
            self._task = None
        await self.sink.close()
        if self.endpoint is not None:
            await self.endpoint.stop()
            self.endpoint = None
        if self._query_client is not None:
            with contextlib.suppress(Exception):
                self._query_client.close()
            self._query_client = None
        await asyncio.to_thread(self.store.close)

    def status(self) -> dict[str, Any]:
        s = asdict(self.sink.stats)
        s["clickhouse"] = str(self.dsn)
        if self.endpoint is not None:
            s["query_endpoint"] = self.endpoint.url
        if self.error:
            s["error"] = self.error
        return s


def build(settings: Settings, bus: Bus, **kw: Any) -> list[SinkService]:
    """The sink writing ``bus`` into ``settings.clickhouse_dsn`` (chDB under home by default)."""
    config = kw.pop("config", None) or sink_config(settings)
    return [SinkService(bus, parse(settings.clickhouse_dsn), config, Path(settings.home), **kw)]
