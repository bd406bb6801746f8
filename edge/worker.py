"""One extra edge worker process (``--workers N``): same config, same ports (SO_REUSEPORT).

Started and, when it dies, restarted by worker 0's supervisor (``edge/supervisor.py``). Like
worker 0, it starts without Kafka (events are spooled in its own ``<spool_dir>/w<N>``) rather
than dying on ``BusError``."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys


async def _main(spec: dict) -> None:
    from dnsflow.bus import BusError, open_bus
    from dnsflow.edge.config import EdgeConfig
    from dnsflow.edge.service import EdgeService
    from dnsflow.settings import Settings

    settings = Settings.model_validate(spec["settings"])
    cfg = EdgeConfig.model_validate(spec["edge"])
    bus = open_bus(settings.kafka, settings.topic_prefix)
    try:
        await bus.start()
    except BusError as exc:
        logging.getLogger("dnsflow.edge").warning(
            "worker %s: Kafka unavailable at start (%s): events will be spooled",
            cfg.worker_index, exc)
    svc = EdgeService(settings, bus, cfg)
    await svc.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await svc.stop()
    await bus.stop()


def main() -> None:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(sys.argv[1])
    try:
        import uvloop

        uvloop.run(_main(spec))
    except ImportError:
        asyncio.run(_main(spec))


if __name__ == "__main__":
    main()
