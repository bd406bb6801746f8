"""The detector interface: what the stream logic calls, and nothing else.

A detector is one class in one module of this package: subclassing :class:`Detector` with a
``kind`` registers it (``streams.detectors`` imports every module here), its ``config``
model becomes ``streams.detectors.<kind>`` in the settings, and its ``kind`` an anomaly kind
alert rules and auto-response may name. The logic never names a detector.

Modelled on bytewax's ``StatefulBatchLogic`` (state in, state out, no framework inside):

* ``names`` -- which events :meth:`observe` sees: those whose query name has a public
  suffix (not internal, not on the look-alike allowlist) and a subdomain part of at least
  ``names`` characters (0: every such name; ``None``, the default: none). Decided once per
  name and cached with it, so a detector costs nothing for events it does not want.
  ``on_deny = True``: also every event the edge denied, whatever its name.
* :meth:`Detector.observe` -- one event, in event-time order: ``(ts, key, ev, name)`` with
  ``key = (tenant, client_ip)``, ``ev`` the decoded event and ``name`` the cached
  :data:`NameEntry` of its ``qname``.
* :meth:`Detector.on_pane` -- a closed pane's ``{(tenant, client): [queries, nxdomain]}``
  (the logic counts them for every event; pane detectors cost nothing per event).
* :meth:`Detector.on_watermark` -- event time moved: drop what can no longer matter.
* :meth:`Detector.snapshot` / :meth:`Detector.restore` / :meth:`Detector.forget` -- the
  state of some tenants as plain data (str/int/float/bool/None/bytes, lists, tuples, sets and
  dicts of those: no objects), merged back into a running detector, or dropped when the
  tenants' partition moves to another worker. ``restore`` checks the data before it changes
  anything, so a malformed checkpoint is refused whole.

Findings go to ``ctx.report(Detection(...))``; incidents, alerts and auto-response follow.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel

# per query name: registered domain, label, subdomain, kind (streams.domains NORMAL |
# ALLOWLISTED | INTERNAL), DGA label score, the (observe, seen) of the detectors that want it
# (``Detector.names``, ``Detector.seen``)
NameEntry = tuple[str, str, str, int, float,
                  tuple[tuple[Callable[..., None], dict[str, Any] | None], ...]]
REG, LABEL, SUB, KIND, SCORE = 0, 1, 2, 3, 4

Key = tuple[str, str]  # (tenant, client_ip)
PaneCounts = dict[Key, list[int]]  # [queries, nxdomain] per (tenant, client) in one pane


@dataclass(slots=True)
class Detection:
    ts: int
    kind: str
    tenant: str
    score: float
    client_ip: str = ""
    domain: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str = ""
    key: tuple[str, ...] = ()


def _no_score(label: str) -> float:
    return 0.0


def _never_known(tenant: str, reg: str) -> bool:
    return False


class DetectorContext:
    """What a detector gets from the logic: where findings go, the shared trigram model, the
    pane size, and two services one detector may provide to the others (set in
    ``__init__``, read in :meth:`Detector.bind`): ``label_score(label)`` (the DGA
    detector's per-label score, also cached with every name) and ``known(tenant, reg)``
    (whether the tenant resolved ``reg`` before: the new-domain detector's memory)."""

    def __init__(self, report: Callable[[Detection], None], model: Any, pane_us: int) -> None:
        self.report = report
        self.model = model
        self.pane = pane_us
        self.label_score: Callable[[str], float] = _no_score
        self.known: Callable[[str, str], bool] = _never_known


REGISTRY: dict[str, type[Detector]] = {}


class Detector:
    kind: ClassVar[str] = ""
    order: ClassVar[int] = 100       # call order among detectors (outputs follow it)
    config: ClassVar[type[BaseModel]]
    on_deny: ClassVar[bool] = False  # observe() every event with decision=deny
    names: int | None = None         # observe() names with a subdomain this long (see above)
    # optional, per tenant: registered domains this detector has seen enough of; the logic
    # skips observe() for them without a call (new_domain: the domains a tenant resolved)
    seen: dict[str, Any] | None = None

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
                raise TypeError(f"detector kind {cls.kind!r} registered twice")
            REGISTRY[cls.kind] = cls

    def __init__(self, cfg: Any, ctx: DetectorContext) -> None:
        self.cfg = cfg
        self.report = ctx.report

    @classmethod
    def pane_seconds(cls, cfg: Any) -> tuple[float, ...]:
        """Pane lengths this detector needs (the logic's pane divides all of them)."""
        return ()

    def bind(self, ctx: DetectorContext) -> None:
        """All detectors are built: take services other detectors provide."""

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        return None

    def on_pane(self, ps: int, counts: PaneCounts) -> None:
        return None

    def on_watermark(self, watermark: int) -> None:
        return None

    def snapshot(self, tenants: Collection[str]) -> dict[str, Any]:
        return {}

    def restore(self, data: dict[str, Any]) -> None:
        return None

    def forget(self, tenants: Collection[str]) -> None:
        return None


def overrides(det: Detector, method: str) -> bool:
    """Whether ``det`` implements ``method`` (the logic skips the no-op defaults)."""
    return getattr(type(det), method) is not getattr(Detector, method)


# ---------------------------------------------------------------- state helpers

def slots_of(cls: type) -> tuple[str, ...]:
    return tuple(sorted({n for c in cls.__mro__ for n in getattr(c, "__slots__", ())}))


def to_rows(d: dict[Any, Any], tenants: Collection[str], fields: tuple[str, ...],
            tenant_of: Callable[[Any], str]) -> list[list[Any]]:
    """``[key, [field values]]`` for the entries of ``tenants`` (objects become lists)."""
    return [[k, [getattr(v, f) for f in fields]] for k, v in d.items()
            if tenant_of(k) in tenants]


def from_rows(cls: type, rows: Iterable[Any], fields: tuple[str, ...]) -> dict[Any, Any]:
    """Inverse of :func:`to_rows` (builds ``cls`` with ``__new__``: no constructor runs)."""
    out: dict[Any, Any] = {}
    for row in rows:
        key, values = row
        if len(values) != len(fields):
            raise ValueError(f"{cls.__name__}: {len(values)} values for {len(fields)} fields")
        obj = cls.__new__(cls)
        for f, v in zip(fields, values, strict=True):
            setattr(obj, f, v)
        out[key] = obj
    return out


def drop(d: dict[Any, Any], tenants: Collection[str], tenant_of: Callable[[Any], str]) -> None:
    for k in [k for k in d if tenant_of(k) in tenants]:
        del d[k]


def expect(data: Any, *names: str) -> list[Any]:
    """The parts ``names`` of a snapshot, or ``ValueError`` naming what is missing."""
    if type(data) is not dict:
        raise ValueError("detector state is not a map")
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"detector state lacks {missing}")
    return [data[n] for n in names]


def first(k: Any) -> str:
    return k[0]


def itself(k: Any) -> str:
    return k
