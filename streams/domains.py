"""Registered domains (eTLD+1) from the Public Suffix List snapshot bundled with tldextract.

No network: ``suffix_list_urls=()`` makes tldextract use its packaged snapshot. Results are
cached per query name (LRU) because the same names repeat constantly in DNS traffic.
Names without a public suffix (``svc.cluster.local``, ``*.internal``, reverse zones) are
*internal*: detectors skip them, since search-path expansion makes them NXDOMAIN all day.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import NamedTuple

import tldextract

NORMAL, ALLOWLISTED, INTERNAL = 0, 1, 2

_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), include_psl_private_domains=False)


class NameInfo(NamedTuple):
    reg: str    # registered domain ("example.co.uk"), "" when internal
    label: str  # registered label without the suffix ("example")
    sub: str    # everything left of the registered domain ("a.b"), "" if none
    kind: int   # NORMAL | ALLOWLISTED | INTERNAL


class DomainIndex:
    """qname -> :class:`NameInfo`, with the look-alike allowlist applied once per name."""

    def __init__(self, allowlist: Iterable[str] = (), cache_size: int = 262_144) -> None:
        entries = {a.lower().strip(".") for a in allowlist if a.strip(".")}
        self._allow = frozenset(entries)
        self._allow_suffixes = tuple("." + a for a in entries)
        self.info = lru_cache(maxsize=cache_size)(self._compute)

    def _compute(self, qname: str) -> NameInfo:
        if not qname or qname.endswith(".arpa") or "." not in qname:
            return NameInfo("", "", "", INTERNAL)
        r = _EXTRACT.extract_str(qname)
        if not r.suffix or not r.domain:
            return NameInfo("", "", "", INTERNAL)
        reg = f"{r.domain}.{r.suffix}"
        if reg in self._allow or qname in self._allow or qname.endswith(self._allow_suffixes):
            return NameInfo(reg, r.domain, r.subdomain, ALLOWLISTED)
        return NameInfo(reg, r.domain, r.subdomain, NORMAL)

    def registered(self, qname: str) -> str:
        """The registered domain of ``qname`` ("" for internal names)."""
        return self.info(qname).reg
