"""The public API of policies/ for the edge and the streams (the binding contract).

Import from here only; the modules behind it may be reorganised.
"""

from policies.autodeny import AutoDeny, auto_deny_record
from policies.follower import PolicyFollower
from policies.loader import Located, PolicySetError, Problem
from policies.model import API_VERSION, TENANT_LABEL, ClusterDNSPolicy, DNSPolicy
from policies.records import GLOBAL
from policies.store import PolicyStore
from policies.types import ClientInfo, LocalRecord, PolicyRecordError, Verdict, View

__all__ = [
    "API_VERSION",
    "GLOBAL",
    "TENANT_LABEL",
    "AutoDeny",
    "ClientInfo",
    "ClusterDNSPolicy",
    "DNSPolicy",
    "LocalRecord",
    "Located",
    "PolicyFollower",
    "PolicyRecordError",
    "PolicySetError",
    "PolicyStore",
    "Problem",
    "Verdict",
    "View",
    "auto_deny_record",
]
