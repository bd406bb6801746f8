"""Who may read what: bearer tokens mapped to one tenant or ``"*"`` (every tenant).

The token file is YAML ``tokens: {<token>: <tenant> | "*"}``. A request carries its token as
``Authorization: Bearer <token>`` or in the HttpOnly cookie the sign-in page sets. Without a
token file the console trusts whoever reaches it, which is why it then listens on loopback
only (``cli.py``).
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from dnsflow.yaml_file import read_utf8

ALL = "*"
COOKIE = "dnsflow_console"


class TokenFileError(ValueError):
    """The token file cannot be used; the message names the file and the place."""


@dataclass(frozen=True)
class Scope:
    """What one request may see: ``tenant`` None means every tenant."""

    tenant: str | None

    @property
    def label(self) -> str:
        return self.tenant if self.tenant is not None else "all tenants"

    def tenant_param(self, asked: str | None) -> str:
        """The tenant a query is bound to ('' = every tenant, for an all-tenant scope
        only). A tenant scope always binds its own tenant, whatever was asked."""
        if self.tenant is None:
            return asked or ""
        if asked and asked != self.tenant:
            raise PermissionError(f"tenant {asked!r} is not visible with this token")
        return self.tenant


EVERYTHING = Scope(None)


def _line(node: yaml.Node) -> str:
    return f"line {node.start_mark.line + 1}"


def _hint(token: str) -> str:
    """Enough of a token to find it in the file, not enough to use it."""
    return repr(token[:4] + "…") if len(token) > 6 else "(a short token)"


def parse_tokens(text: str, label: str) -> dict[str, str]:
    """``tokens: {token: tenant}`` → dict; every problem names ``label`` and the line."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise TokenFileError(
            f"{label}{f' line {mark.line + 1}' if mark else ''}: invalid YAML") from None
    if root is None:
        raise TokenFileError(f"{label}: empty file: expected 'tokens: {{<token>: <tenant>}}'")
    if not isinstance(root, yaml.MappingNode):
        raise TokenFileError(f"{label} {_line(root)}: expected a mapping with 'tokens:'")
    section = None
    for key, value in root.value:
        if not isinstance(key, yaml.ScalarNode) or key.value != "tokens":
            raise TokenFileError(f"{label} {_line(key)}: unknown key {key.value!r} "
                                 "(only 'tokens' is allowed)")
        section = value
    if section is None:
        raise TokenFileError(f"{label}: missing 'tokens:' mapping")
    if not isinstance(section, yaml.MappingNode) or not section.value:
        raise TokenFileError(f"{label} {_line(section)}: 'tokens' must be a non-empty mapping "
                             "of token to tenant (or \"*\")")
    out: dict[str, str] = {}
    for key, value in section.value:
        where = f"{label} {_line(key)}: tokens"
        if not isinstance(key, yaml.ScalarNode) or not key.value.strip():
            raise TokenFileError(f"{where}: a token must be a non-empty string")
        token = key.value
        if len(token) < 8 or token != token.strip():
            raise TokenFileError(f"{where}[{_hint(token)}]: a token needs at least 8 "
                                 "characters and no surrounding spaces")
        if token in out:
            raise TokenFileError(f"{where}[{_hint(token)}]: the same token appears twice")
        if (not isinstance(value, yaml.ScalarNode) or value.tag.endswith(":null")
                or not value.value.strip()):
            raise TokenFileError(f"{where}[{_hint(token)}]: the tenant must be a name or \"*\"")
        out[token] = value.value.strip()
    return out


def load_tokens(path: str | Path) -> dict[str, str]:
    label = f"token file {path}"
    return parse_tokens(read_utf8(path, label, TokenFileError), label)


class Auth:
    """Turns a request into a :class:`Scope`, or None when it is not signed in."""

    def __init__(self, tokens: dict[str, str] | None) -> None:
        self.tokens = tokens

    @property
    def required(self) -> bool:
        return self.tokens is not None

    def scope_for_token(self, token: str) -> Scope | None:
        if self.tokens is None:
            return EVERYTHING
        for known, tenant in self.tokens.items():  # compare every one: no early timing tell
            if hmac.compare_digest(known.encode(), token.encode()):
                return EVERYTHING if tenant == ALL else Scope(tenant)
        return None

    def scope(self, request: Any) -> Scope | None:
        if self.tokens is None:
            return EVERYTHING
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return self.scope_for_token(header[7:].strip())
        cookie = request.cookies.get(COOKIE)
        if cookie:
            return self.scope_for_token(cookie)
        return None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
