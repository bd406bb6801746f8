"""The tenant scope enforced by a ClickHouse server too: one read-only user per token tenant.

The console binds every statement to the request's tenant (``queries.py``). On a ClickHouse
server that is not the only wall: ``dnsflow console --tokens FILE --access-sql`` prints the
statements an administrator runs once — a user per tenant of the token file, ``readonly``,
allowed ``SELECT`` on the tables that hold tenant rows only, and a row policy per table that
lets it see its own tenant's rows — and ``--server-users`` makes the console connect as that
user for each tenant's requests. A bug in a console query then still cannot show another
tenant's rows: the server filters them out.

The user's password is derived from the tenant's tokens (they are secrets already), so the
console and the printed statements agree without a second secret to distribute; rotating a
token changes it, and re-running the printed statements (``OR REPLACE``) follows.

chDB has no access control (it refuses ``CREATE USER``), so on this project's machine the
statements are only parsed (``EXPLAIN AST``, in the tests); see console/README.md.
"""

from __future__ import annotations

import hashlib
import re

from dnsflow.console.auth import ALL

DATABASE = "dnsflow"
# The tables with a ``tenant`` column (checked against the migrated schema by a test); the
# materialized views and the ingest table are not readable by these users at all.
TENANT_TABLES = ("alerts", "anomalies", "dns_events", "dns_minute", "dns_names_hour",
                 "egress_events", "policy_log", "telemetry")
ALL_USER = "dnsflow_console_all"
_UNSAFE = re.compile(r"[^A-Za-z0-9]")


def user_for(tenant: str) -> str:
    """The ClickHouse user of a tenant (``*``: the all-tenant user). Characters outside
    ``[A-Za-z0-9]``, ``_`` too, become ``_xx`` (their code): distinct tenants, distinct users."""
    if tenant == ALL:
        return ALL_USER
    return "dnsflow_console_t_" + _UNSAFE.sub(lambda m: f"_{ord(m.group()):02x}", tenant)


def password_for(tenant: str, tokens: dict[str, str]) -> str:
    """The password of :func:`user_for` ``(tenant)``: a digest of that tenant's tokens."""
    mine = sorted(t for t, owner in tokens.items() if owner == tenant)
    if not mine:
        raise KeyError(f"no token of tenant {tenant!r} in the token file")
    material = "\0".join(["dnsflow-console", tenant, *mine]).encode()
    return hashlib.sha256(material).hexdigest()


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def access_statements(tokens: dict[str, str], database: str = DATABASE) -> list[str]:
    """The statements giving each tenant of ``tokens`` its read-only, row-filtered user."""
    out: list[str] = []
    for tenant in sorted(set(tokens.values())):
        user = user_for(tenant)
        digest = hashlib.sha256(password_for(tenant, tokens).encode()).hexdigest()
        out.append(f"CREATE USER OR REPLACE {user} IDENTIFIED WITH sha256_hash BY "
                   f"'{digest}' SETTINGS readonly = 2")
        for table in TENANT_TABLES:
            out.append(f"GRANT SELECT ON {database}.{table} TO {user}")
            rows = "1" if tenant == ALL else f"tenant = {_literal(tenant)}"
            out.append(f"CREATE ROW POLICY OR REPLACE {user}_rows ON {database}.{table} "
                       f"FOR SELECT USING {rows} TO {user}")
    return out
