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
  ``seen`` (per tenant, registered domains) and ``rcode`` (only answers with this rcode)
  let the logic skip events without a call. ``on_deny = True``: also every event the edge
  denied, whatever its name.
* :meth:`Detector.observe` -- one event, in event-time order: ``(ts, key, ev, name)`` with
  ``key = (tenant, client_ip)``, ``ev`` the decoded event and ``name`` the cached
  :data:`NameEntry` of its ``qname``.
* ``cluster = True``: :meth:`Detector.observe_cluster` sees every event whose name is under
  the cluster domain (``streams.detectors.cluster_domain``) or a reverse (PTR) name, with
  the name parsed once and cached (REG: the namespace it points into, LABEL: the service or
  pod, SUB: the form, ``streams.domains.SVC`` ... ``PTR``); ``rcode`` filters these too.
* :meth:`Detector.on_pane` -- a closed pane's ``{(tenant, client): [queries, nxdomain]}``
  (the logic counts them for every event; pane detectors cost nothing per event).
* :meth:`Detector.on_watermark` -- event time moved: drop what can no longer matter.
* :meth:`Detector.snapshot` / :meth:`Detector.restore` / :meth:`Detector.forget` -- the
  state of some tenants as plain data (str/int/float/bool/None/bytes, lists, tuples, sets and
  dicts of those: no objects), merged back into a running detector, or dropped when the
  tenants' partition moves to another worker. ``restore`` checks the data before it changes
  anything, so a malformed checkpoint is refused whole. A detector that lists its per-tenant
  maps in ``parts`` (:class:`Part`) gets all three from here.

Findings go to ``ctx.report(Detection(...))``; incidents, alerts and auto-response follow.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

# per query name: registered domain, label, subdomain, kind (streams.domains NORMAL |
# ALLOWLISTED | INTERNAL), DGA label score, the (observe, seen, rcode) of the detectors that
# want it (``Detector.names``, ``Detector.seen``, ``Detector.rcode``)
NameEntry = tuple[str, str, str, int, float,
                  tuple[tuple[Callable[..., None], dict[str, Any] | None, str | None], ...]]
REG, LABEL, SUB, KIND, SCORE = 0, 1, 2, 3, 4
NS, FORM = REG, SUB  # a cluster name's entry (Detector.cluster): namespace and form

Key = tuple[str, str]  # (tenant, client_ip)
PaneCounts = dict[Key, list[int]]  # [queries, nxdomain] per (tenant, client) in one pane


@dataclass(slots=True)
class Detection:
    """One finding, handed to ``ctx.report``; ``streams.incidents`` makes it an anomaly."""

    ts: int
    kind: str
    tenant: str
    score: float  # 0..1; the severity follows from it unless given
    key: tuple[str, ...] = ()  # the incident it updates (default: kind, tenant, client, domain)
    client_ip: str = ""
    domain: str = ""  # the registered domain to name (and auto-deny), if any
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str = ""


def _no_score(label: str) -> float:
    return 0.0


def _never_known(tenant: str, reg: str) -> bool:
    return False


def _no_owner(namespace: str) -> str | None:
    return None


def _no_cluster_name(name: str) -> tuple[str, str, str]:
    return "", "", "search"


class DetectorContext:
    """What a detector gets from the logic: where findings go, the shared trigram model, the
    pane size, and two services one detector may provide to the others (set in
    ``__init__``, read in :meth:`Detector.bind`): ``label_score(label)`` (the DGA
    detector's per-label score, also cached with every name) and ``known(tenant, reg)``
    (whether the tenant resolved ``reg`` before: the new-domain detector's memory) and
    ``namespace_owner(ns)`` (the tenant a namespace belongs to, "" when several claim it,
    None when unknown: the cross-tenant detector's map). ``cluster_domain`` and
    ``cluster_name(name)`` (a cached ``(namespace, label, form)`` of a name under it) are the
    logic's."""

    def __init__(self, report: Callable[[Detection], None], model: Any, pane_us: int,
                 cluster_domain: str = "cluster.local",
                 cluster_name: Callable[[str], tuple[str, str, str]] = _no_cluster_name
                 ) -> None:
        self.report = report
        self.model = model
        self.pane = pane_us
        self.cluster_domain = cluster_domain
        self.cluster_name = cluster_name
        self.label_score: Callable[[str], float] = _no_score
        self.known: Callable[[str, str], bool] = _never_known
        self.namespace_owner: Callable[[str], str | None] = _no_owner


class DetectorConfig(BaseModel):
    """What every detector's settings section shares: unknown keys are refused, and
    ``enabled: false`` leaves the detector out."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = True


class WindowConfig(DetectorConfig):
    """A detector that counts over a tumbling window of ``window_s`` seconds."""

    window_s: float = Field(60, gt=0)


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
    parts: ClassVar[tuple[Part, ...]] = ()  # the per-tenant maps snapshot/restore/forget keep
    rcode: ClassVar[str | None] = None  # observe() only names answered with this rcode
    cluster: ClassVar[bool] = False  # observe_cluster() names under the cluster domain, PTRs

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            if cls.kind in REGISTRY and REGISTRY[cls.kind] is not cls:
                raise TypeError(f"detector kind {cls.kind!r} registered twice")
            REGISTRY[cls.kind] = cls

    def __init__(self, cfg: Any, ctx: DetectorContext) -> None:
        self.cfg = cfg
        self.report = ctx.report
        self.pane = ctx.pane  # µs, the logic's pane (on_pane's ``ps`` are multiples of it)

    @classmethod
    def pane_seconds(cls, cfg: Any) -> tuple[float, ...]:
        """Pane lengths this detector needs (the logic's pane divides all of them)."""
        return ()

    def bind(self, ctx: DetectorContext) -> None:
        """All detectors are built: take services other detectors provide."""

    def observe(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        return None

    def observe_cluster(self, ts: int, key: Key, ev: dict[str, Any], name: NameEntry) -> None:
        """One event for a name under the cluster domain or a reverse name (``cluster``)."""
        return None

    def on_pane(self, ps: int, counts: PaneCounts) -> None:
        return None

    def on_watermark(self, watermark: int) -> None:
        return None

    def snapshot(self, tenants: Collection[str]) -> dict[str, Any]:
        return {p.name: p.dump(getattr(self, p.name), tenants) for p in self.parts}

    def restore(self, data: dict[str, Any]) -> None:
        if not self.parts:
            return
        parts = expect(data, *(p.name for p in self.parts))
        loaded = [p.load(x, self.kind) for p, x in zip(self.parts, parts, strict=True)]
        for p, values in zip(self.parts, loaded, strict=True):  # all checked: now merge
            getattr(self, p.name).update(values)

    def forget(self, tenants: Collection[str]) -> None:
        for p in self.parts:
            d = getattr(self, p.name)
            tenant_of = _itself if p.per_tenant else _first
            for k in [k for k in d if tenant_of(k) in tenants]:
                del d[k]


def overrides(det: Detector, method: str) -> bool:
    """Whether ``det`` implements ``method`` (the logic skips the no-op defaults)."""
    return getattr(type(det), method) is not getattr(Detector, method)


# ---------------------------------------------------------------- state as plain data

class Part:
    """One per-tenant map of a detector's state (the attribute ``name``, a dict), and how its
    entries become plain data under ``name`` in the snapshot and back.

    Keys are the tenant (``per_tenant``: the snapshot is a map ``{tenant: value}``) or a
    tuple that starts with it (a list of ``[key, value]`` rows). Values are stored as
    ``dump(value)`` and restored with ``load(data)``, which raises ``ValueError`` (or
    ``TypeError``) on malformed data; ``of``: instances of that ``__slots__`` class, stored
    as the list of their fields (rebuilt with ``__new__``: no constructor runs).
    """

    __slots__ = ("dump_value", "load_value", "name", "per_tenant")

    def __init__(self, name: str, of: type | None = None, *, per_tenant: bool = False,
                 dump: Callable[[Any], Any] | None = None,
                 load: Callable[[Any], Any] | None = None) -> None:
        self.name = name
        self.per_tenant = per_tenant
        if of is not None:
            dump, load = _fields_codec(of)
        self.dump_value = dump
        self.load_value = load

    def dump(self, d: dict[Any, Any], tenants: Collection[str]) -> Any:
        f = self.dump_value
        if self.per_tenant:
            return {t: v if f is None else f(v) for t, v in d.items() if t in tenants}
        return [[k, v if f is None else f(v)] for k, v in d.items() if k[0] in tenants]

    def load(self, data: Any, kind: str) -> dict[Any, Any]:
        f = self.load_value
        if self.per_tenant:
            if type(data) is not dict:
                raise ValueError(f"{kind}: {self.name} is not a map")
            return {t: v if f is None else f(v) for t, v in data.items()}
        out: dict[Any, Any] = {}
        for row in data:
            k, v = row
            out[k] = v if f is None else f(v)
        return out


def _fields_codec(cls: type) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    fields = tuple(sorted({n for c in cls.__mro__ for n in getattr(c, "__slots__", ())}))

    def dump(obj: Any) -> list[Any]:
        return [getattr(obj, f) for f in fields]

    def load(values: Any) -> Any:
        if len(values) != len(fields):
            raise ValueError(f"{cls.__name__}: {len(values)} values for {len(fields)} fields")
        obj = cls.__new__(cls)
        for f, v in zip(fields, values, strict=True):
            setattr(obj, f, v)
        return obj

    return dump, load


def expect(data: Any, *names: str) -> list[Any]:
    """The parts ``names`` of a snapshot, or ``ValueError`` naming what is missing."""
    if type(data) is not dict:
        raise ValueError("detector state is not a map")
    missing = [n for n in names if n not in data]
    if missing:
        raise ValueError(f"detector state lacks {missing}")
    return [data[n] for n in names]


def _first(k: Any) -> str:
    return k[0]


def _itself(k: Any) -> str:
    return k
