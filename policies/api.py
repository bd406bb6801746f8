"""The public API of policies/ for the edge and the streams (the binding contract).

Import from here only; the modules behind it may be reorganised.
"""

from collections.abc import Sequence
from pathlib import Path

from dnsflow.policies import policyset, records
from dnsflow.policies.autodeny import AutoDeny, auto_deny_record
from dnsflow.policies.explain import explain
from dnsflow.policies.follower import PolicyFollower
from dnsflow.policies.loader import Located, PolicySetError, Problem
from dnsflow.policies.model import API_VERSION, TENANT_LABEL, ClusterDNSPolicy, DNSPolicy
from dnsflow.policies.records import GLOBAL
from dnsflow.policies.store import PolicyStore
from dnsflow.policies.tenant_map import TenantMap, TenantMapError, load_tenant_map
from dnsflow.policies.types import (
    ClientInfo,
    CompiledView,
    LocalRecord,
    PolicyRecordError,
    Verdict,
)


def policy_records(source: str | Sequence[str | Path], version: int = 1,
                   published_at: int = 0) -> list[tuple[bytes, bytes]]:
    """(key, value) records for YAML text or files, as ``dnsflow policy apply`` would
    publish them at ``version`` (for tests, demos and replay). Raises PolicySetError."""
    docs = (policyset.from_text(source, "<text>") if isinstance(source, str)
            else policyset.from_paths(source))
    order = sorted(docs, key=lambda k: (k != GLOBAL, k))  # cluster first
    return [records.encode(docs[k], version, published_at, "api", "api") for k in order]


__all__ = [
    "API_VERSION",
    "GLOBAL",
    "TENANT_LABEL",
    "AutoDeny",
    "ClientInfo",
    "ClusterDNSPolicy",
    "CompiledView",
    "DNSPolicy",
    "LocalRecord",
    "Located",
    "PolicyFollower",
    "PolicyRecordError",
    "PolicySetError",
    "PolicyStore",
    "Problem",
    "TenantMap",
    "TenantMapError",
    "Verdict",
    "auto_deny_record",
    "explain",
    "load_tenant_map",
    "policy_records",
]
