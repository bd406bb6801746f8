"""A published DGA classifier as the peer of ``bench.detect_eval``: dgaintel, in its own venv.

dgaintel (PyPI, MIT) ships a CNN-LSTM Keras model (``domain_classifier_model.h5``) that
scores a domain name; its documented cut is probability ≥ 0.5 = DGA. It needs TensorFlow,
which the project's venv must not carry, so the bench makes a separate venv under
``$DNSFLOW_CACHE/peers/dga-venv`` (default ``~/.cache/dnsflow``) from the pins of the
``dga-peer`` extra in ``pyproject.toml`` and talks to it over pipes.

The model is a Keras 2 HDF5 file: Keras 3 (TensorFlow ≥ 2.16's default) refuses it
(``Unrecognized keyword arguments passed to LSTM: {'time_major': False}``), so the peer
runs with ``tf-keras`` and ``TF_USE_LEGACY_KERAS=1``.

Two sides, stdlib only at import time:

* in the bench: :func:`ensure_venv` makes (once) and checks the venv, :func:`score` runs
  the peer on names and :func:`parse` reads its answer;
* in the peer venv, as a script (``<venv>/bin/python bench/dga_peer.py``): :func:`main`
  reads names on stdin, one a line, and writes JSON lines: first
  ``{"peer", "version", "tensorflow", "threshold"}``, then ``{"name", "p", "dga"}`` per name.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

PEER = "dgaintel"
EXTRA = "dga-peer"
THRESHOLD = 0.5  # dgaintel's documented cut (predict.py: prob >= 0.5 is "DGA")
WIDTH = 82  # the model's input width; dgaintel raises on longer names, so they are cut
BATCH = 2048
ROOT = Path(__file__).resolve().parent.parent
MARKER = "dnsflow-peer.json"
# dgaintel's README: microsoft.com 0.00050 (genuine), vlurgpeddygdy.com 0.97601 (DGA)
SMOKE = {"microsoft.com": False, "vlurgpeddygdy.com": True}
PEER_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}


class PeerError(RuntimeError):
    """The peer could not be made or did not answer as expected."""


@dataclass
class PeerResult:
    """What the peer said: its own description and, per name, the probability and label."""

    meta: dict[str, object] = field(default_factory=dict)
    p: dict[str, float] = field(default_factory=dict)
    dga: dict[str, bool] = field(default_factory=dict)

    @property
    def flagged(self) -> set[str]:
        return {n for n, d in self.dga.items() if d}


def pins(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The ``dga-peer`` extra: one list of pins for the extra and the bench's venv."""
    data = tomllib.loads(pyproject.read_text())
    return list(data["project"]["optional-dependencies"][EXTRA])


def venv_dir() -> Path:
    cache = os.environ.get("DNSFLOW_CACHE") or str(Path.home() / ".cache" / "dnsflow")
    return Path(cache) / "peers" / "dga-venv"


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _want(reqs: list[str]) -> dict[str, object]:
    return {"pins": reqs, "python": ".".join(map(str, sys.version_info[:2]))}


def ensure_venv(venv: Path | None = None, log: Path | None = None) -> Path:
    """The peer venv's python, made on first use from :func:`pins` (pip, from PyPI).

    A venv whose marker names other pins or another Python is made anew. The marker is
    written only after the peer scored :data:`SMOKE` as its README says, so a broken or
    half-made venv is never taken as ready. Raises :class:`PeerError` with the reason.
    """
    venv = venv or venv_dir()
    want = _want(pins())
    marker = venv / MARKER
    try:
        if json.loads(marker.read_text()) == want:
            return _python(venv)
    except (OSError, ValueError):
        pass
    if venv.exists():
        shutil.rmtree(venv)
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = log or venv.with_suffix(".log")
    print(f"making the {PEER} peer venv {venv} ({' '.join(want['pins'])}; "  # type: ignore[arg-type]
          f"a few minutes, once; pip's output in {log})", file=sys.stderr, flush=True)
    with log.open("w") as out:
        for cmd in ([sys.executable, "-m", "venv", str(venv)],
                    [str(_python(venv)), "-m", "pip", "install", "--disable-pip-version-check",
                     *want["pins"]]):  # type: ignore[misc]
            try:
                rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                                    check=False).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                raise PeerError(f"{cmd[2]} failed: {e}") from e
            if rc:
                tail = log.read_text().strip().splitlines()[-3:]
                raise PeerError(f"python {' '.join(cmd[1:4])} exited {rc}: {' | '.join(tail)}")
    res = score(_python(venv), list(SMOKE))
    if {n: res.dga.get(n) for n in SMOKE} != SMOKE:
        raise PeerError(f"{PEER} smoke test: {res.p} (want {SMOKE})")
    marker.write_text(json.dumps(want))
    return _python(venv)


def parse(lines: Iterable[str], names: Iterable[str]) -> PeerResult:
    """The peer's JSON lines; every name asked must be answered once, and nothing else."""
    res = PeerResult()
    for line in lines:
        if not line.strip():
            continue
        rec = json.loads(line)
        if "name" not in rec:
            res.meta.update(rec)
            continue
        name = rec["name"]
        if name in res.p:
            raise PeerError(f"peer answered {name!r} twice")
        res.p[name] = float(rec["p"])
        res.dga[name] = bool(rec["dga"])
    asked = set(names)
    if missing := asked - res.p.keys():
        raise PeerError(f"peer left {len(missing)} names unanswered, e.g. {min(missing)!r}")
    if extra := res.p.keys() - asked:
        raise PeerError(f"peer answered {len(extra)} names not asked, e.g. {min(extra)!r}")
    return res


def score(python: Path | str, names: list[str], script: Path | None = None,
          timeout: float = 900) -> PeerResult:
    """Run the peer (``script``, default this file, under ``python``) on ``names``."""
    env = {**os.environ, **PEER_ENV}
    try:
        # -I: bench/ is not put on the peer's sys.path (its modules would shadow others)
        proc = subprocess.run([str(python), "-I", str(script or Path(__file__))],
                              input="".join(f"{n}\n" for n in names), capture_output=True,
                              text=True, timeout=timeout, env=env, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PeerError(f"peer did not run: {e}") from e
    if proc.returncode:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        raise PeerError(f"peer exited {proc.returncode}: {tail}")
    return parse(proc.stdout.splitlines(), names)


def main() -> int:
    """Peer side (inside the peer venv): names on stdin, JSON lines on stdout."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before TensorFlow is imported
    from importlib.metadata import version

    from dgaintel.predict import get_prob  # loads the model

    names = list(dict.fromkeys(x.strip() for x in sys.stdin if x.strip()))
    out = sys.stdout
    out.write(json.dumps({"peer": PEER, "version": version(PEER),
                          "tensorflow": version("tensorflow"), "threshold": THRESHOLD}) + "\n")
    for i in range(0, len(names), BATCH):
        batch = names[i:i + BATCH]
        # internal=True: always (name, p) pairs (a batch of one is otherwise a bare float)
        probs = get_prob([n.lower()[:WIDTH] for n in batch], internal=True)
        for name, (_, p) in zip(batch, probs, strict=True):
            out.write(json.dumps({"name": name, "p": round(float(p), 6),
                                  "dga": float(p) >= THRESHOLD}) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
