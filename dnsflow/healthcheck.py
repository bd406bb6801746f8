"""``python -m dnsflow.healthcheck [URL|process]``: the image's HEALTHCHECK.

A URL (default ``$DNSFLOW_HEALTH_URL``, else the edge's ``http://127.0.0.1:9153/healthz``)
must answer 200 within 3 s. ``process`` is for components without an HTTP endpoint: healthy
while the container's main process (PID 1) is a running ``dnsflow`` (not stopped, not a
zombie). Exit 0 healthy, 1 not, with one line saying why.
"""

from __future__ import annotations

import os
import sys
import urllib.request

DEFAULT_URL = "http://127.0.0.1:9153/healthz"


def check(target: str) -> tuple[bool, str]:
    if target == "process":
        try:
            with open("/proc/1/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            with open("/proc/1/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError as exc:
            return False, f"cannot read PID 1: {exc}"
        if state in ("Z", "T", "X"):
            return False, f"PID 1 is in state {state}"
        return "dnsflow" in cmd, f"PID 1: {cmd.strip()[:80]} ({state})"
    try:
        with urllib.request.urlopen(target, timeout=3) as r:
            return r.status == 200, f"{target}: {r.status}"
    except Exception as exc:
        return False, f"{target}: {exc}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    target = argv[0] if argv else (os.environ.get("DNSFLOW_HEALTH_URL") or DEFAULT_URL)
    ok, why = check(target)
    print(("healthy: " if ok else "unhealthy: ") + why)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
