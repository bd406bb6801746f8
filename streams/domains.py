"""Registered domains (eTLD+1) from the Public Suffix List snapshot bundled with tldextract.

No network: ``suffix_list_urls=()`` makes tldextract use its packaged snapshot. Results are
cached per query name (LRU) because the same names repeat constantly in DNS traffic.
Names without a public suffix (``svc.cluster.local``, ``*.internal``, reverse zones) are
*internal*: detectors skip them, since search-path expansion makes them NXDOMAIN all day.

Plain DNS names (lower-case letters, digits, ``-``, ``_`` and dots, no punycode) are matched
here against the same suffix list with tldextract's own algorithm (a reversed-label trie
walk, wildcards and exceptions), without its URL parsing and result objects — about a fifth
of the cost per uncached name, and 40 % of the names in real traffic are seen once. Any other
name goes through tldextract itself, so the answer is the same for every input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, NamedTuple

import tldextract

NORMAL, ALLOWLISTED, INTERNAL = 0, 1, 2

# what a name under the cluster domain is (:meth:`DomainIndex.cluster`): a service
# ``<svc>.<ns>.svc.<cd>``, an endpoint ``<ep>.<svc>.<ns>.svc.<cd>``, an SRV name
# ``_<port>._<proto>.<svc>.<ns>.svc.<cd>``, a pod ``<a-b-c-d>.<ns>.pod.<cd>``; ``public`` a
# service name whose ``<svc>.<ns>`` is also a public name (``stripe.com.svc.<cd>``: a service
# only if the namespace exists); ``search`` a search-path expansion (``api.stripe.com.<ns>.svc.
# <cd>``, ``x.svc.<cd>``, ``x.<cd>``); ``ptr`` a reverse name (``*.in-addr.arpa``)
SVC, ENDPOINT, SRV, POD, PUBLIC, SEARCH, PTR = (
    "svc", "endpoint", "srv", "pod", "public", "search", "ptr")
REVERSE = (".in-addr.arpa", ".ip6.arpa")

_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), include_psl_private_domains=False)
# what tldextract's URL parsing leaves unchanged, and labels needing no punycode decoding
_PLAIN = re.compile(r"[a-z0-9_-](?:[a-z0-9_.-]*[a-z0-9_-])?").fullmatch

Node = dict[str, Any]  # children by label; the key "." (never a label) marks a suffix end


class NameInfo(NamedTuple):
    reg: str    # registered domain ("example.co.uk"), "" when internal
    label: str  # registered label without the suffix ("example")
    sub: str    # everything left of the registered domain ("a.b"), "" if none
    kind: int   # NORMAL | ALLOWLISTED | INTERNAL


_INTERNAL = NameInfo("", "", "", INTERNAL)
STOPS_CAP = 65_536
MAX_REG_LABELS = 6  # longer registered domains take the walk


@lru_cache(maxsize=1)
def suffix_trie() -> Node:
    """The ICANN suffixes as tldextract's trie: labels reversed, ``*`` and ``!`` kept."""
    root: Node = {}
    for suffix in _EXTRACT.tlds:
        node = root
        for label in reversed(suffix.split(".")):
            node = node.setdefault(label, {})
        node["."] = True
    return root


def split_plain(labels: list[str], root: Node) -> tuple[int, bool]:
    """Index of the registered label in a plain name's ``labels``, as tldextract finds it
    (the walk of its ``suffix_index``), -1 when there is no public suffix or no label left
    of it; and whether the walk saw no label left of the registered domain (then every name
    ending in that registered domain splits at it too)."""
    n = len(labels)
    suffix_idx = label_idx = n
    node = root
    for label in reversed(labels):
        child = node.get(label)
        if child is not None:
            label_idx -= 1
            node = child
            if "." in node:
                suffix_idx = label_idx
            continue
        if "*" in node:
            suffix_idx = label_idx if "!" + label in node else label_idx - 1
            final = True
        else:
            final = suffix_idx == label_idx  # stopped right at the registered label
        break
    else:
        final = False
    if suffix_idx == n or suffix_idx < 1 or not labels[suffix_idx - 1]:
        return -1, False
    return suffix_idx - 1, final


class DomainIndex:
    """qname -> :class:`NameInfo`, with the look-alike allowlist applied once per name."""

    def __init__(self, allowlist: Iterable[str] = (), cache_size: int = 262_144) -> None:
        entries = {a.lower().strip(".") for a in allowlist if a.strip(".")}
        self._allow = frozenset(entries)
        self._allow_suffixes = tuple("." + a for a in entries)
        self._depth = max((a.count(".") + 1 for a in entries), default=0)
        self._root = suffix_trie()
        # registered domain -> (label, allow-listed, labels): see _under_known
        self._stops: dict[str, tuple[str, bool, int]] = {}
        self.info = lru_cache(maxsize=cache_size)(self.compute)

    def compute(self, qname: str) -> NameInfo:
        """Uncached :attr:`info`."""
        return NameInfo._make(self.split(qname))

    def split(self, qname: str) -> tuple[str, str, str, int]:
        """``(reg, label, sub, kind)`` of ``qname``, uncached (for callers that keep
        their own cache)."""
        hit = self._under_known(qname)
        if hit is not None:
            return hit
        if _PLAIN(qname) and "xn--" not in qname:
            if qname.endswith(".arpa"):
                return _INTERNAL
            labels = qname.split(".")
            i, final = split_plain(labels, self._root)
            if i < 0:
                return _INTERNAL
            reg = ".".join(labels[i:])
            allowed = self._allowed(labels)
            if final:
                stops = self._stops
                if len(stops) >= STOPS_CAP:
                    stops.clear()
                stops[reg] = (labels[i], self._allowed(labels[i:]), len(labels) - i)
            return reg, labels[i], ".".join(labels[:i]), ALLOWLISTED if allowed else NORMAL
        if not qname or qname.endswith(".arpa") or "." not in qname:
            return _INTERNAL
        r = _EXTRACT.extract_str(qname)
        if not r.suffix or not r.domain:
            return _INTERNAL
        reg = f"{r.domain}.{r.suffix}"
        allowed = (reg in self._allow or qname in self._allow
                   or qname.endswith(self._allow_suffixes))
        return reg, r.domain, r.subdomain, ALLOWLISTED if allowed else NORMAL

    def _under_known(self, qname: str) -> tuple[str, str, str, int] | None:
        """A plain name under a registered domain whose split did not depend on the labels
        left of it (most unique names: tunnel payloads, hashed CDN hosts): no walk.

        Registered domains are short, so they are looked for from the right; at most one
        dotted suffix of a name can be one of them (a longer one would end in a shorter one
        and split there)."""
        stops = self._stops
        j = qname.rfind(".")
        for _ in range(MAX_REG_LABELS - 1):
            j = qname.rfind(".", 0, j)
            if j <= 0:
                return None
            hit = stops.get(qname[j + 1:])
            if hit is None:
                continue
            sub = qname[:j]
            if not _PLAIN(sub) or "xn--" in sub:
                return None
            label, allowed, labels = hit
            if not allowed:  # the longer suffixes of the name the allowlist may hold
                allow = self._allow
                k = j
                for _ in range(self._depth - labels):
                    k = qname.rfind(".", 0, k)
                    if qname[k + 1:] in allow:
                        allowed = True
                        break
                    if k < 0:
                        break
            return qname[j + 1:], label, sub, ALLOWLISTED if allowed else NORMAL
        return None

    def _allowed(self, labels: list[str]) -> bool:
        """The name or a parent of it is allow-listed (checked over the name's dotted
        suffixes no longer than the longest entry, with set look-ups)."""
        allow = self._allow
        tail = ""
        for label in labels[:-self._depth - 1:-1]:
            tail = f"{label}.{tail}" if tail else label
            if tail in allow:
                return True
        return False

    def _public(self, name: str) -> bool:
        return self.split(name)[3] != INTERNAL

    def cluster(self, qname: str, domain: str) -> tuple[str, str, str]:
        """``(namespace, service or pod label, form)`` of ``qname``, a name ending in
        ``"." + domain`` (the cluster domain), uncached; form: ``SVC``, ``ENDPOINT``,
        ``SRV``, ``POD``, ``PUBLIC`` or ``SEARCH`` (then namespace and label are "")."""
        head = qname[:-len(domain) - 1]
        i = head.rfind(".")
        zone = head[i + 1:]
        if i <= 0 or zone not in ("svc", "pod"):
            return "", "", SEARCH  # <x>.<cd>, svc.<cd>: the search list's last entries
        prefix = head[:i]
        labels = prefix.split(".")
        n = len(labels)
        if not all(labels):
            return "", "", SEARCH
        ns = labels[-1]
        if zone == "pod":
            return (ns, labels[0], POD) if n == 2 else ("", "", SEARCH)
        if n == 2:
            return ns, labels[0], PUBLIC if self._public(prefix) else SVC
        if n == 3:
            if self._public(f"{labels[0]}.{labels[1]}"):  # stripe.com.<ns>.svc.<cd>
                return "", "", SEARCH
            return ns, labels[1], PUBLIC if self._public(prefix) else ENDPOINT
        if n == 4 and labels[0][:1] == "_" and labels[1][:1] == "_":
            return ns, labels[2], SRV
        return "", "", SEARCH  # api.stripe.com.<ns>.svc.<cd> and longer

    def registered(self, qname: str) -> str:
        """The registered domain of ``qname`` ("" for internal names)."""
        return self.info(qname).reg
