"""The value types the edge and the streams exchange with the policy store (see api.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

EMPTY_LABELS: Mapping[str, str] = MappingProxyType({})


def _no_labels() -> Mapping[str, str]:
    return EMPTY_LABELS


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who asks; built by the edge's identity layer."""

    ip: str
    tenant: str
    namespace: str
    pod: str = ""
    service_account: str = ""
    labels: Mapping[str, str] = field(default_factory=_no_labels)


@dataclass(frozen=True, slots=True)
class LocalRecord:
    """A record the edge answers itself (view records, rewrites)."""

    name: str  # lower case, no trailing dot
    rtype: str
    ttl: int
    rdata: str  # presentation format


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one query; ``rule`` and ``policy_version`` go into the event."""

    action: str  # "allow" | "deny" | "rewrite" | "redirect" | "would_deny" (audit: answered)
    rule: str
    policy_version: int
    deny_mode: str = ""
    records: tuple[LocalRecord, ...] = ()
    upstreams: tuple[str, ...] = ()
    rate_limit: tuple[float, int] | None = None
    log: bool = False
    isolated: bool = False


@dataclass(frozen=True, slots=True)
class CompiledView:
    """A tenant's DNS view: local records, search domains, upstreams."""

    tenant: str
    records: tuple[LocalRecord, ...] = ()
    search_domains: tuple[str, ...] = ()
    upstreams: tuple[str, ...] = ()
    cluster_domain: str = "cluster.local"


class PolicyRecordError(ValueError):
    """A record on the policies topic that cannot be applied (goes to the DLQ)."""
