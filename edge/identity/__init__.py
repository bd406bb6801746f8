"""Who is asking: source address -> (tenant, namespace, pod, service account, labels)."""

from dnsflow.edge.identity.static import StaticMap, StaticMapError, load_static_map
from dnsflow.edge.identity.table import IdentityTable

__all__ = ["IdentityTable", "StaticMap", "StaticMapError", "load_static_map"]
