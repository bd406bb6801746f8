"""Domain-name helpers shared by the model, the compiler and the matcher.

Every name is compared in one canonical form — lower case, no trailing dot — so the
matcher's hot path only ever does dictionary lookups on strings it already has.
"""

from __future__ import annotations

import re

_LABEL = re.compile(r"^(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?|\*)$")
_LABEL_SRC = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
# the common case in one match; the label-by-label loop below only explains failures
_PLAIN = re.compile(rf"(?:{_LABEL_SRC}\.)*{_LABEL_SRC}")
_WILD = re.compile(rf"\*\.(?:{_LABEL_SRC}\.)*{_LABEL_SRC}")


def normalize(name: str) -> str:
    """Canonical form: lower case, without the trailing dot."""
    name = name.lower()
    return name[:-1] if name.endswith(".") else name


def check_name(name: str, *, allow_wildcard: bool = False) -> str:
    """Normalise and validate a domain name; raise ValueError naming what is wrong."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("empty name")
    norm = normalize(name.strip())
    if not norm.isascii():  # queries carry IDNs as punycode: match what arrives
        try:
            norm = norm.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError(f"name {name!r}: not a valid internationalised name ({exc})") \
                from None
    if len(norm) > 253:
        raise ValueError(f"name {name!r} is longer than 253 characters")
    if _PLAIN.fullmatch(norm) or (allow_wildcard and _WILD.fullmatch(norm)):
        return norm
    labels = norm.split(".")
    for i, label in enumerate(labels):
        if label == "":
            raise ValueError(f"name {name!r} has an empty label")
        if label == "*":
            if not allow_wildcard:
                raise ValueError(f"name {name!r}: wildcard not allowed here")
            if i != 0 or len(labels) < 2:
                raise ValueError(f"name {name!r}: '*' is only allowed as the first label, "
                                 "as in '*.example.com'")
            continue
        if not _LABEL.match(label):
            raise ValueError(f"name {name!r}: invalid label {label!r}")
    return norm


def is_under(name: str, zone: str) -> bool:
    """True if ``name`` equals ``zone`` or is below it (both canonical)."""
    return name == zone or name.endswith("." + zone)


def strictly_under(name: str, zone: str) -> bool:
    return name.endswith("." + zone)
