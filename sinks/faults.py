"""Crash testing: a named point where ``DNSFLOW_SINK_FAULT=<point>:<n>`` SIGKILLs the process
the n-th time it is reached. Used by the exactly-once tests; inert unless the variable is set."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger(__name__)

_COUNTS: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Crash testing: ``DNSFLOW_SINK_FAULT=after-insert:3`` SIGKILLs this process at the 3rd
    time it reaches ``after-insert`` (stored, not committed: the worst moment to die)."""
    spec = os.environ.get("DNSFLOW_SINK_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] >= int(spec.split(":", 1)[1]):
        log.warning("fault injection: SIGKILL at %s", name)
        os.kill(os.getpid(), signal.SIGKILL)


def fault_soon(name: str, within_s: float = 0.03) -> None:
    """Like :func:`fault_point`, but the SIGKILL lands a random moment (up to ``within_s``)
    later, while the caller is busy — e.g. in the middle of ClickHouse writing a batch."""
    import random
    import threading

    spec = os.environ.get("DNSFLOW_SINK_FAULT", "")
    if not spec.startswith(name + ":"):
        return
    _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if _COUNTS[name] == int(spec.split(":", 1)[1]):
        log.warning("fault injection: SIGKILL during %s", name)
        timer = threading.Timer(random.uniform(0, within_s), os.kill,
                                (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()
