"""Checkpoints of the stream logic's state, per partition, for restarts and rebalances.

Events are keyed by tenant, so everything the logic keeps is keyed by tenant too. A
checkpoint holds the state of the tenants of one partition (plus the clock), so whichever
worker is assigned that partition after a restart or rebalance resumes exactly its tenants'
open windows, detector state, incidents and auto-denies. :func:`restore` merges the
checkpoints of all partitions a worker owns.

Checkpoints are data only, never code: anyone who can write the changelog topic must not
be able to run code in the worker (pickle would let them). A checkpoint is an lz4 frame of
one msgpack map ``{"format": "dnsflow.streams.checkpoint", "v": 1, "state": ...}``; the state
is plain msgpack (str, int, float, bool, None, bytes, lists, str-keyed maps) plus tagged
values for what msgpack lacks: a map ``{"\\x00": [tag, payload]}`` holds a tuple, set, frozenset,
deque, bytearray, a map with non-str keys, or an instance of one of the logic's own state
classes in ``_CLASSES`` (built with ``__new__`` and its listed fields: no constructor, no
import by name). Detectors hand over their state as plain data
(``streams.detectors.base.Detector.snapshot``/``restore``/``forget``), stored under their
kind: the checkpoint knows no detector. A checkpoint of another format or version (version 1,
before issue #15, included), or one that does not decode, is refused with an ERROR log:
:func:`restore` skips it (that partition starts fresh from its committed offset) and
:func:`read_meta` returns ``{}``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Callable, Collection, Iterable
from typing import Any

import lz4.frame
import msgspec

from dnsflow.streams.incidents import _Incident
from dnsflow.streams.logic import StreamLogic
from dnsflow.streams.policy_bridge import Deny
from dnsflow.streams.sketch import HyperLogLog
from dnsflow.streams.telemetry import Pane

log = logging.getLogger("dnsflow.streams.checkpoint")

FORMAT = "dnsflow.streams.checkpoint"
VERSION = 2  # 2: detector state as each detector's own plain data (issue #15)

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
    st["detectors"] = {kind: d.snapshot(tenants) for kind, d in logic.detectors.items()}
    st["incidents"] = _by(_second, logic.incidents.open, tenants)
    st["responder"] = (_by(_self, logic.responder.active, tenants),
                       _by(_self, logic.responder.version, tenants))
    st["alerts"] = {k: v for k, v in logic.alerts.windows.items()
                    if v and v[-1][1]["tenant"] in tenants}
    st["quiet"] = dict(logic.alerts.quiet_until)
    return st


class CheckpointError(ValueError):
    """A checkpoint that is not a data-only checkpoint of this format and version."""


def _fields(cls: type) -> tuple[str, ...]:
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    return tuple(sorted({n for c in cls.__mro__ for n in getattr(c, "__slots__", ())}))


# The only classes a checkpoint may hold, by a stable name: (class, fields). A class of the
# state that is not listed makes snapshot() fail loudly instead of losing state.
_CLASSES: dict[str, tuple[type, tuple[str, ...]]] = {
    name: (cls, _fields(cls)) for name, cls in {
        "telemetry.Pane": Pane, "sketch.HyperLogLog": HyperLogLog,
        "incidents.Incident": _Incident, "policy_bridge.Deny": Deny,
    }.items()
}
_NAME_OF = {cls: name for name, (cls, _) in _CLASSES.items()}
_TAG = "\x00"
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1


def _tag(tag: str, payload: Any) -> dict[str, Any]:
    return {_TAG: [tag, payload]}


def _data(v: Any) -> Any:
    """``v`` as msgpack-native data (tagged where msgpack has no such type)."""
    t = type(v)
    if t is str or t is float or t is bool or v is None or t is bytes:
        return v
    if t is int:
        return v if _INT_MIN <= v <= _INT_MAX else _tag("int", str(v))
    if t is dict:
        if _TAG not in v and all(type(k) is str for k in v):
            return {k: _data(x) for k, x in v.items()}
        return _tag("map", [[_data(k), _data(x)] for k, x in v.items()])
    if t is list:
        return [_data(x) for x in v]
    if t is tuple:
        return _tag("tuple", [_data(x) for x in v])
    if t is set or t is frozenset:
        return _tag("set" if t is set else "frozenset", [_data(x) for x in v])
    if t is deque:
        return _tag("deque", [v.maxlen, [_data(x) for x in v]])
    if t is bytearray:
        return _tag("bytearray", bytes(v))
    name = _NAME_OF.get(t)
    if name is None:
        raise TypeError(f"checkpoint: no data encoding for {t.__module__}.{t.__qualname__}")
    return _tag(name, {f: _data(getattr(v, f)) for f in _CLASSES[name][1] if hasattr(v, f)})


def _hashable(v: Any) -> Any:
    if type(v) in (list, dict, set, bytearray, deque):
        raise CheckpointError(f"a {type(v).__name__} cannot be a map key")
    return v


def _value(d: Any) -> Any:
    """Inverse of :func:`_data`: only the types and classes listed above are ever built."""
    t = type(d)
    if t is list:
        return [_value(x) for x in d]
    if t is not dict:
        return d
    if _TAG not in d:
        return {k: _value(x) for k, x in d.items()}
    if len(d) != 1 or type(d[_TAG]) is not list or len(d[_TAG]) != 2:
        raise CheckpointError("malformed tagged value")
    tag, p = d[_TAG]
    if tag == "tuple":
        return tuple(_value(x) for x in p)
    if tag == "map":
        return {_hashable(_value(k)): _value(x) for k, x in p}
    if tag == "set":
        return {_hashable(_value(x)) for x in p}
    if tag == "frozenset":
        return frozenset(_hashable(_value(x)) for x in p)
    if tag == "deque":
        return deque((_value(x) for x in p[1]), p[0])
    if tag == "bytearray":
        return bytearray(p)
    if tag == "int":
        return int(p)
    known = _CLASSES.get(tag) if isinstance(tag, str) else None
    if known is None or type(p) is not dict:
        raise CheckpointError(f"unknown tagged value {tag!r}")
    cls, fields = known
    if not set(p) <= set(fields):
        raise CheckpointError(f"{tag}: unknown fields {sorted(set(p) - set(fields))}")
    obj = cls.__new__(cls)
    for f, x in p.items():
        object.__setattr__(obj, f, _value(x))  # frozen dataclasses too; no __init__ runs
    return obj


_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def snapshot(logic: StreamLogic, tenants: Collection[str] | None = None,
             meta: dict[str, Any] | None = None) -> bytes:
    """Data-only state of ``tenants`` (all tenants when None), with the driver's ``meta``
    (the faust driver keeps the last offset the state includes)."""
    st = split(logic, logic.tmax.keys() if tenants is None else tenants)
    st["meta"] = meta or {}
    doc = {"format": FORMAT, "v": VERSION, "state": _data(st)}
    # lz4: names and sets compress several-fold, keeping records under Kafka's 1 MB default
    return lz4.frame.compress(_ENCODER.encode(doc))


_REQUIRED = (*SCALARS, "tmax", "tenants", "emitted", "counts", "panes", "merged", "detectors",
             "incidents", "responder", "alerts", "quiet", "meta")


def load(data: bytes) -> dict[str, Any]:
    """The state in a checkpoint; :class:`CheckpointError` says why one is refused."""
    try:
        doc = _DECODER.decode(lz4.frame.decompress(data))
    except Exception as exc:
        raise CheckpointError(f"not a data checkpoint ({type(exc).__name__}: {exc}); "
                              "pickled checkpoints of older versions are not read") from None
    if type(doc) is not dict or doc.get("format") != FORMAT:
        raise CheckpointError("not a dnsflow streams checkpoint")
    if doc.get("v") != VERSION:
        raise CheckpointError(f"checkpoint version {doc.get('v')!r}, this worker reads "
                              f"version {VERSION}")
    try:
        st = _value(doc.get("state"))
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f"malformed state ({type(exc).__name__}: {exc})") from None
    if type(st) is not dict or any(k not in st for k in _REQUIRED):
        raise CheckpointError("malformed state (missing parts)")
    if any(type(st[a]) not in (int, float) for a in SCALARS):
        raise CheckpointError("malformed state (clock)")
    if type(st["detectors"]) is not dict:
        raise CheckpointError("malformed state (detectors)")
    return st


def read_meta(data: bytes) -> dict[str, Any]:
    """The driver's meta of a checkpoint; ``{}`` for one :func:`load` refuses."""
    try:
        meta = load(data)["meta"]
    except CheckpointError:
        return {}
    return meta if type(meta) is dict else {}


def _merge_nested(into: dict[Any, Any], src: dict[Any, Any], depth: int) -> None:
    for k, v in src.items():
        if depth > 1 and k in into:
            _merge_nested(into[k], v, depth - 1)
        elif depth > 1:
            into[k] = dict(v)
        else:
            into[k] = v


def restore(logic: StreamLogic, checkpoints: Iterable[bytes], running: bool = False) -> int:
    """Merge ``checkpoints`` (one per owned partition) into ``logic``; return how many were
    merged (a refused one is logged and skipped, never half-merged).

    A fresh ``logic`` takes its clock from the checkpoints; a ``running`` one (a partition
    assigned by a rebalance) keeps its own clock and only gains the partition's tenants.
    """
    n = 0
    probe: StreamLogic | None = None
    for data in checkpoints:
        try:
            st = load(data)
        except CheckpointError as exc:
            log.error("streams: checkpoint refused, its partition starts fresh from the "
                      "committed offset: %s", exc)
            continue
        # detectors are tried on a scratch logic first: a malformed part refuses the whole
        # checkpoint before anything of it is merged (a disabled detector's part is skipped)
        if probe is None:
            probe = StreamLogic(logic.cfg, model=logic.model, auto_watermark=False)
        kind = ""
        try:
            for kind, data in st["detectors"].items():
                if kind in probe.detectors:
                    probe.detectors[kind].restore(data)
        except (ValueError, TypeError, KeyError) as exc:
            log.error("streams: checkpoint refused, its partition starts fresh from the "
                      "committed offset: malformed %s state (%s)", kind, exc)
            continue
        for kind, data in st["detectors"].items():
            det = logic.detectors.get(kind)
            if det is not None:
                det.restore(data)
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
    for d in logic.detectors.values():
        d.forget(gone)
    _drop(_second, logic.incidents.open, gone)
    _drop(_self, logic.responder.active, gone)
    _drop(_self, logic.responder.version, gone)
    for k in [k for k, v in logic.alerts.windows.items() if v and v[-1][1]["tenant"] in gone]:
        del logic.alerts.windows[k]
