"""Fail closed: an edge that cannot enforce policy must not start (issue #11).

There used to be a permissive stand-in (``edge/policy/compat.py``) that allowed every query
when ``policies`` could not be imported; the edge now imports ``policies.api`` directly.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=60)


def test_edge_does_not_start_without_policies() -> None:
    # ``None`` in sys.modules makes every import of the package fail, as if not installed.
    res = _run("""
        import sys
        sys.modules["dnsflow.policies"] = None
        sys.modules["dnsflow.policies.api"] = None
        try:
            import dnsflow.edge.service  # noqa: F401
        except ImportError as exc:
            print("refused:", exc)
            raise SystemExit(0)
        print("edge started without policy enforcement")
        raise SystemExit(3)
    """)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "refused" in res.stdout


def test_no_permissive_stand_in() -> None:
    res = _run("""
        import importlib.util
        print(importlib.util.find_spec("dnsflow.edge.policy.compat") is None)
    """)
    assert res.stdout.strip() == "True", res.stdout + res.stderr
