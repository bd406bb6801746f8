"""Checkpoints of the stream logic's state, per partition, for restarts and rebalances.

Events are keyed by tenant, so everything the logic keeps is keyed by tenant too. A
checkpoint holds the state of the tenants of one partition (plus the clock), so whichever
worker is assigned that partition after a restart or rebalance resumes exactly its tenants'
open windows, detector state, incidents and auto-denies. :func:`restore` merges the
checkpoints of all partitions a worker owns.

Checkpoints are pickled: they live in the worker's own changelog topic, never in input.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Collection, Iterable
from typing import Any

import lz4.frame

from streams.logic import StreamLogic

# Clock and counters: merged by max (the newest checkpoint's clock wins).
SCALARS = ("max_ts", "watermark", "next_close", "cur_ps", "events", "late_dropped")


def _by(first: Callable[[Any], str], d: dict[Any, Any], keep: Collection[str]) -> dict[Any, Any]:
    return {k: v for k, v in d.items() if first(k) in keep}


def _tenant(k: Any) -> str:
    return k[0]


def _self(k: Any) -> str:
    return k


def _second(k: Any) -> str:
    return k[1]


# Each detector's per-tenant state: attribute -> how its keys name the tenant. One table for
# split (checkpoints) and forget (rebalances), so a new attribute cannot reach one and not
# the other.
DETECTOR_STATE: dict[str, dict[str, Callable[[Any], str]]] = {
    "dga": {"clients": _tenant, "slow": _tenant},
    "tunnel": {"pairs": _tenant},
    "nxburst": {"hist": _tenant},
    "rate": {"base": _tenant, "started": _self},
    "cross": {"state": _tenant},
    "newdom": {"known": _self, "first": _self, "budget": _self},
}


def split(logic: StreamLogic, tenants: Collection[str]) -> dict[str, Any]:
    """The part of ``logic``'s state that belongs to ``tenants``."""
    t = logic.telemetry
    st: dict[str, Any] = {a: getattr(logic, a) for a in SCALARS}
    st["tmax"] = _by(_self, logic.tmax, tenants)
    st["tenants"] = _by(_self, logic.tenants, tenants)
    st["emitted"] = dict(logic.emitted)
    st["counts"] = {ps: _by(_tenant, c, tenants) for ps, c in logic.counts.items()}
    st["panes"] = {ps: _by(_self, p, tenants) for ps, p in t.panes.items()}
    st["merged"] = {w: {ws: _by(_self, p, tenants) for ws, p in m.items()}
                    for w, m in t.merged.items()}
    det: dict[str, dict[str, Any]] = {}
    for name, attrs in DETECTOR_STATE.items():
        d = getattr(logic, name)
        if d is not None:
            det[name] = {a: _by(key, getattr(d, a), tenants) for a, key in attrs.items()}
    st["detectors"] = det
    st["incidents"] = _by(_second, logic.incidents.open, tenants)
    st["responder"] = (_by(_self, logic.responder.active, tenants),
                       _by(_self, logic.responder.version, tenants))
    st["alerts"] = {k: v for k, v in logic.alerts.windows.items()
                    if v and v[-1][1]["tenant"] in tenants}
    st["quiet"] = dict(logic.alerts.quiet_until)
    return st


def snapshot(logic: StreamLogic, tenants: Collection[str] | None = None,
             meta: dict[str, Any] | None = None) -> bytes:
    """Pickled state of ``tenants`` (all tenants when None), with the driver's ``meta``
    (the faust driver keeps the last offset the state includes)."""
    st = split(logic, logic.tmax.keys() if tenants is None else tenants)
    st["meta"] = meta or {}
    # lz4: names and sets compress several-fold, keeping records under Kafka's 1 MB default
    return lz4.frame.compress(pickle.dumps(st, protocol=pickle.HIGHEST_PROTOCOL))


def _load(data: bytes) -> dict[str, Any]:
    return pickle.loads(lz4.frame.decompress(data))  # our own changelog topic, never input


def read_meta(data: bytes) -> dict[str, Any]:
    return _load(data).get("meta", {})


def _merge_nested(into: dict[Any, Any], src: dict[Any, Any], depth: int) -> None:
    for k, v in src.items():
        if depth > 1 and k in into:
            _merge_nested(into[k], v, depth - 1)
        elif depth > 1:
            into[k] = dict(v)
        else:
            into[k] = v


def restore(logic: StreamLogic, checkpoints: Iterable[bytes], running: bool = False) -> int:
    """Merge ``checkpoints`` (one per owned partition) into ``logic``; return count.

    A fresh ``logic`` takes its clock from the checkpoints; a ``running`` one (a partition
    assigned by a rebalance) keeps its own clock and only gains the partition's tenants.
    """
    n = 0
    for data in checkpoints:
        st = _load(data)
        n += 1
        for a in SCALARS:
            if not running and (n == 1 or st[a] > getattr(logic, a)):
                setattr(logic, a, st[a])
        logic.tmax.update(st["tmax"])
        logic.tenants.update(st["tenants"])
        for k, v in st["emitted"].items():
            logic.emitted[k] = max(logic.emitted.get(k, 0), v)
        _merge_nested(logic.counts, st["counts"], 2)
        _merge_nested(logic.telemetry.panes, st["panes"], 2)
        _merge_nested(logic.telemetry.merged, st["merged"], 3)
        for name, attrs in st["detectors"].items():
            det = getattr(logic, name, None)
            if det is None:
                continue
            for attr, value in attrs.items():
                getattr(det, attr).update(value)
        logic.incidents.open.update(st["incidents"])
        logic.responder.active.update(st["responder"][0])
        logic.responder.version.update(st["responder"][1])
        logic.alerts.windows.update(st["alerts"])
        for k, v in st["quiet"].items():
            logic.alerts.quiet_until[k] = max(logic.alerts.quiet_until.get(k, v), v)
    if not running:
        logic.holder, logic.blocked = "", False
    return n


def _drop(first: Callable[[Any], str], d: dict[Any, Any], gone: Collection[str]) -> None:
    for k in [k for k in d if first(k) in gone]:
        del d[k]


def forget(logic: StreamLogic, tenants: Collection[str]) -> None:
    """Remove the state of ``tenants`` (the state :func:`split` would give for them).

    Called when their partition moves to another worker: that worker resumes them from the
    checkpoint, and this one must not close their windows a second time.
    """
    gone = set(tenants)
    if not gone:
        return
    t = logic.telemetry
    _drop(_self, logic.tmax, gone)
    _drop(_self, logic.tenants, gone)
    for c in logic.counts.values():
        _drop(_tenant, c, gone)
    for p in t.panes.values():
        _drop(_self, p, gone)
    for m in t.merged.values():
        for p in m.values():
            _drop(_self, p, gone)
    for name, attrs in DETECTOR_STATE.items():
        d = getattr(logic, name)
        if d is not None:
            for a, key in attrs.items():
                _drop(key, getattr(d, a), gone)
    _drop(_second, logic.incidents.open, gone)
    _drop(_self, logic.responder.active, gone)
    _drop(_self, logic.responder.version, gone)
    for k in [k for k, v in logic.alerts.windows.items() if v and v[-1][1]["tenant"] in gone]:
        del logic.alerts.windows[k]
