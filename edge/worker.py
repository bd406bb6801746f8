"""One extra edge worker process (``--workers N``): same config, same ports (SO_REUSEPORT).

Started and, when it dies, restarted by worker 0's supervisor (``edge/supervisor.py``). Like
worker 0, it starts without Kafka (events are spooled in its own ``<spool_dir>/w<N>``) rather
than dying on ``BusError``."""

from __future__ import annotations

import json
import logging
import sys


async def _main(spec: dict) -> None:
    from dnsflow.edge.config import EdgeConfig
    from dnsflow.edge.lifecycle import start_bus, until_signalled
    from dnsflow.edge.service import EdgeService
    from dnsflow.settings import Settings

    settings = Settings.model_validate(spec["settings"])
    cfg = EdgeConfig.model_validate(spec["edge"])
    bus = await start_bus(settings, logging.getLogger("dnsflow.edge"),
                          f"worker {cfg.worker_index}: ")
    svc = EdgeService(settings, bus, cfg)
    await svc.start()
    await until_signalled()
    await svc.stop()
    await bus.stop()


def main() -> None:
    from dnsflow.runner import run_async

    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = json.loads(sys.argv[1])
    run_async(_main(spec))


if __name__ == "__main__":
    main()
