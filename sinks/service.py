"""``build(settings, bus) -> [SinkService]`` for the embedded runner (and ``dnsflow sink``).

On start: connect, apply the schema (idempotent), start consuming; on a chDB DSN also serve
the loopback query endpoint so ``dnsflow query`` works while this process owns chDB. On stop:
flush and commit the current batch (bounded by ``stop_timeout``), then release everything.
With ``metrics=True`` (``dnsflow sink``) it serves ``/metrics`` ``/healthz`` ``/readyz`` on
``metrics_listen`` (``sinks.metrics``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dnsflow.bus import Bus
from dnsflow.lag import LagProbe
from dnsflow.ops import OpsServer, component_registry, registry_render, serve_ops
from dnsflow.settings import Settings
from dnsflow.sinks.config import SinkConfig, sink_config
from dnsflow.sinks.dsn import Dsn, connect, one_line, parse
from dnsflow.sinks.endpoint import QueryEndpoint
from dnsflow.sinks.metrics import SinkCollector, liveness, readiness
from dnsflow.sinks.migrate import migrate
from dnsflow.sinks.sink import Sink, SinkAborted
from dnsflow.sinks.store import Store, StoreError

log = logging.getLogger(__name__)


class SinkService:
    name = "sink"

    def __init__(
        self, bus: Bus, dsn: Dsn, config: SinkConfig, home: Path | None = None,
        *, stop_timeout: float = 15.0, metrics: bool = False,
        metrics_listen: str | None = None, lag_interval_s: float = 10.0,
        ping_interval_s: float = 10.0,
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
        self.metrics = metrics
        self.metrics_listen = metrics_listen
        self.lag = LagProbe(bus.end_offsets, list(self.sink.specs), self._positions,
                            lag_interval_s)
        self.ops: OpsServer | None = None
        self.ping_interval_s = ping_interval_s
        self.reachable = dsn.embedded  # a server: once a ping or the migration answered
        self.ping_error = ""
        self._ping_task: asyncio.Task[None] | None = None
        self._ping_client: Any = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def _positions(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """Where the sink goes on in each partition (the offset it expects next)."""
        nxt = self.sink.next_offsets()
        return {p: nxt.get((topic, p), -1) for p in partitions}

    async def _serve_metrics(self) -> None:
        registry = component_registry("sink")
        registry.register(SinkCollector(self))  # type: ignore[arg-type]
        self.lag.start()
        if not self.dsn.embedded:
            self._ping_task = asyncio.create_task(self._pings(), name="sink-ping")
        self.ops = await serve_ops("sink", self.metrics_listen, registry_render(registry),
                                   lambda: readiness(self), lambda: liveness(self))

    async def _pings(self) -> None:
        """Is the ClickHouse server there? Asked every ``ping_interval_s`` on a client of
        its own (the sink's is busy in another thread), so readiness notices an outage while
        no records arrive."""
        while True:
            try:
                await asyncio.to_thread(self._ping)
                self.reachable, self.ping_error = True, ""
            except Exception as exc:
                self.reachable = False
                self.ping_error = one_line(exc, self.dsn.raw)
                with contextlib.suppress(Exception):
                    if self._ping_client is not None:
                        self._ping_client.close()
                self._ping_client = None
            await asyncio.sleep(self.ping_interval_s)

    def _ping(self) -> None:
        if self._ping_client is None:
            self._ping_client = connect(self.dsn)
        self._ping_client.query("SELECT 1")

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
        if self.metrics:
            await self._serve_metrics()

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
        self.reachable = True

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
        if self.ops is not None:
            await self.ops.stop()
            self.ops = None
        await self.lag.stop()
        if self._ping_task is not None:
            self._ping_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ping_task
            self._ping_task = None
        if self._ping_client is not None:
            with contextlib.suppress(Exception):
                self._ping_client.close()
            self._ping_client = None
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
