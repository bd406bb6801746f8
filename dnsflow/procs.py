"""Whether a process named in a file still runs: an endpoint file (the console's, the sink's
query endpoint) outlives the process that wrote it when that process is killed, so a reader
checks the PID before trusting the address in it."""

from __future__ import annotations

import os


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists, also when it belongs to another user (signal 0 is refused
    with EPERM then, which still says it is there)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
