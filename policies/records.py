"""The record format on the compacted policies topic (format 1).

Key: the tenant name, ``_global`` (ClusterDNSPolicy set) or ``auto:<tenant>`` (auto-denies).
Value (JSON object)::

    {"format": 1, "kind": "TenantPolicy" | "ClusterPolicy" | "AutoDeny",
     "tenant": "<tenant>" | "_global", "version": 7, "hash": "sha256:<hex>",
     "published_at": <µs>, "source": "yaml:/etc/dnsflow/policies", "actor": "alice@host",
     "policies": [<DNSPolicy or ClusterDNSPolicy documents, in precedence order>],   # policy kinds
     "denies": [{"domain", "expires_at_us", "cause", "kind"}]}                         # AutoDeny

``hash`` covers only the content (kind, tenant, policies/denies), never version or time, so
the publisher can tell a real change from a re-publication.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from dnsflow.policies.loader import Located
from dnsflow.policies.model import ClusterDNSPolicy, DNSPolicy, dump
from dnsflow.policies.types import PolicyRecordError
from dnsflow.policies.validate import groups
from dnsflow.schema import decode_json

FORMAT = 1
GLOBAL = "_global"
AUTO_PREFIX = "auto:"
KIND_TENANT = "TenantPolicy"
KIND_CLUSTER = "ClusterPolicy"
KIND_AUTO = "AutoDeny"


def canonical(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def content_of(doc: dict[str, Any]) -> dict[str, Any]:
    body = "denies" if doc.get("kind") == KIND_AUTO else "policies"
    return {"kind": doc.get("kind"), "tenant": doc.get("tenant"), body: doc.get(body, [])}


def content_hash(doc: dict[str, Any]) -> str:
    return "sha256:" + hashlib.sha256(canonical(content_of(doc))).hexdigest()


def key_for(doc: dict[str, Any]) -> str:
    if doc["kind"] == KIND_AUTO:
        return AUTO_PREFIX + doc["tenant"]
    return str(doc["tenant"])


def tenant_document(tenant: str, policies: Sequence[DNSPolicy]) -> dict[str, Any]:
    dumped = []
    for p in policies:
        d = dump(p)
        d.setdefault("spec", {})["tenant"] = tenant  # explicit, whatever the source implied
        dumped.append(d)
    return {"kind": KIND_TENANT, "tenant": tenant, "policies": dumped}


def cluster_document(policies: Sequence[ClusterDNSPolicy]) -> dict[str, Any]:
    return {"kind": KIND_CLUSTER, "tenant": GLOBAL, "policies": [dump(p) for p in policies]}


def documents(docs: Sequence[Located]) -> dict[str, dict[str, Any]]:
    """The content to publish per key for a validated set (ordered by precedence)."""
    out: dict[str, dict[str, Any]] = {}
    cluster: list[ClusterDNSPolicy] = []
    for name, group in sorted(groups(docs).items()):
        if name.startswith(GLOBAL + "/"):
            cluster.extend(loc.policy for loc in group)  # type: ignore[misc]
        else:
            out[name] = tenant_document(name, [loc.policy for loc in group])  # type: ignore[misc]
    if cluster:
        cluster.sort(key=lambda p: (p.spec.tier != "guardrail", p.spec.priority,
                                    p.metadata.name))
        out[GLOBAL] = cluster_document(cluster)
    return out


def encode(doc: dict[str, Any], version: int, published_at: int, source: str,
           actor: str) -> tuple[bytes, bytes]:
    """The (key, value) for one document at ``version``."""
    value = {"format": FORMAT, **content_of(doc), "version": version,
             "hash": content_hash(doc), "published_at": published_at, "source": source,
             "actor": actor}
    return key_for(doc).encode(), orjson.dumps(value)


def decode(key: bytes | None, value: bytes) -> dict[str, Any]:
    """Parse and sanity-check one value; raise :class:`PolicyRecordError` naming the problem."""
    k = key.decode("utf-8", "replace") if key is not None else None
    where = f"policy record key={k!r}"
    obj = decode_json(value, where, PolicyRecordError)
    if obj.get("format") != FORMAT:
        raise PolicyRecordError(f"{where}: unsupported format {obj.get('format')!r}")
    kind = obj.get("kind")
    if kind not in (KIND_TENANT, KIND_CLUSTER, KIND_AUTO):
        raise PolicyRecordError(f"{where}: unknown kind {kind!r}")
    version = obj.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 0:
        raise PolicyRecordError(f"{where}: version must be a non-negative integer")
    tenant = obj.get("tenant")
    if not isinstance(tenant, str) or not tenant:
        raise PolicyRecordError(f"{where}: missing tenant")
    if kind == KIND_CLUSTER and tenant != GLOBAL:
        raise PolicyRecordError(f"{where}: a ClusterPolicy must have tenant {GLOBAL!r}")
    if kind != KIND_CLUSTER and tenant == GLOBAL:
        raise PolicyRecordError(f"{where}: tenant {GLOBAL!r} is reserved for ClusterPolicy")
    if k is not None and k != key_for(obj):
        # a record must never smuggle policy for one tenant under another's key
        raise PolicyRecordError(f"{where}: key does not match tenant {tenant!r} ({kind})")
    body = "denies" if kind == KIND_AUTO else "policies"
    if not isinstance(obj.get(body), list):
        raise PolicyRecordError(f"{where}: {body!r} must be a list")
    if obj.get("hash") != content_hash(obj):
        raise PolicyRecordError(f"{where}: hash does not match the content")
    return obj
