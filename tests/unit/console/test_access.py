"""The server-side tenant wall (console/access.py): what ``dnsflow console --access-sql``
prints is ClickHouse that parses, covers every table holding tenant rows, filters exactly the
tenant (quotes included), and the console's ``--server-users`` routes each tenant's
statements to that tenant's user. chDB has no access control, so the statements themselves
are parsed here, not run (console/README.md says so)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import pytest

from dnsflow.cli import main as cli_main
from dnsflow.console.access import (
    ALL_USER,
    TENANT_TABLES,
    access_statements,
    password_for,
    user_for,
)
from dnsflow.console.queries import Queries
from dnsflow.console.runtime import Clients
from dnsflow.sinks.dsn import connect, parse
from dnsflow.sinks.migrate import migrate

TOKENS = {"shop-token-1": "shop", "shop-token-2": "shop", "pay-token-01": "pay'ments",
          "admin-token": "*"}


@pytest.fixture
def client(chdb_dsn: str) -> Any:
    c = connect(parse(chdb_dsn))
    migrate(c)
    yield c
    c.close()


def test_every_statement_parses_in_clickhouse(client: Any) -> None:
    statements = access_statements(TOKENS)
    assert statements
    for statement in statements:
        client.command(f"EXPLAIN AST {statement}")  # raises on a syntax error


def test_the_users_can_read_exactly_the_tables_with_tenant_rows(client: Any) -> None:
    with_tenant = {r[0] for r in client.query(
        "SELECT t.name FROM system.tables AS t WHERE t.database = 'dnsflow' "
        "AND t.engine NOT IN ('MaterializedView', 'Null') AND t.name IN "
        "(SELECT table FROM system.columns WHERE database = 'dnsflow' AND name = 'tenant')"
    ).result_rows}
    assert set(TENANT_TABLES) == with_tenant
    statements = access_statements(TOKENS)
    for tenant in ("shop", "pay'ments", "*"):
        user = user_for(tenant)
        granted = {m.group(1) for s in statements
                   if (m := re.fullmatch(rf"GRANT SELECT ON dnsflow\.(\w+) TO {user}", s))}
        policed = {m.group(1) for s in statements
                   if (m := re.match(rf"CREATE ROW POLICY OR REPLACE {user}_rows ON "
                                     rf"dnsflow\.(\w+) FOR SELECT USING .* TO {user}$", s))}
        assert granted == policed == with_tenant, tenant


def test_a_row_policy_keeps_exactly_its_tenants_rows(client: Any) -> None:
    """The USING condition, run as a WHERE on real rows, keeps one tenant's, even with a quote
    and a backslash in the name."""
    client.command("CREATE TABLE default.rows (tenant String) ENGINE = Memory")
    names = ["shop", "pay'ments", "pay\\'ments", "payments", "shop2", "' OR 1 = 1 --"]
    client.insert("default.rows", [[n] for n in names], column_names=["tenant"])
    for tenant in names:
        statements = access_statements({"token-of-it": tenant})
        condition = re.search(r" USING (.*) TO ", statements[-1]).group(1)
        rows = client.query(f"SELECT tenant FROM default.rows WHERE {condition}").result_rows
        assert rows == [(tenant,)], (tenant, condition)
    everything = access_statements({"admin-token": "*"})[-1]
    assert " USING 1 TO " in everything


def test_users_and_passwords() -> None:
    assert user_for("*") == ALL_USER
    assert user_for("team-a") != user_for("team_a") != user_for("team_2da")
    assert len({user_for(t) for t in ("a_2d", "a-", "a_", "a-2d")}) == 4
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", user_for(t)) for t in ("x y", "ü", "a'b"))
    pw = password_for("shop", TOKENS)
    digest = hashlib.sha256(pw.encode()).hexdigest()
    assert any(f"dnsflow_console_t_shop IDENTIFIED WITH sha256_hash BY '{digest}'" in s
               for s in access_statements(TOKENS))
    rotated = {**TOKENS, "shop-token-3": "shop"}
    assert password_for("shop", rotated) != pw  # a new token, a new password
    assert password_for("pay'ments", rotated) == password_for("pay'ments", TOKENS)
    with pytest.raises(KeyError, match="ghost"):
        password_for("ghost", TOKENS)


def test_each_tenants_statements_run_as_its_own_user() -> None:
    users = {t: (user_for(t), password_for(t, TOKENS)) for t in set(TOKENS.values())}
    clients = Clients(parse("http://db.example:8123"), users)
    assert clients.route("shop") == "shop"
    assert clients.route("pay'ments") == "pay'ments"
    assert clients.route("") == "*"          # every tenant: the all-tenant user
    assert clients.route("other") == "*"     # only an all-tenant scope binds an unknown one
    assert Clients(parse("http://db.example:8123")).route("shop") == ""

    made: list[str] = []

    class Fake:
        def __init__(self, key: str) -> None:
            self.key = key

        def query(self, sql: str, parameters: dict[str, Any]) -> Any:
            made.append(f"{self.key}:{parameters['tenant']}")
            return type("R", (), {"column_names": ["n"], "result_rows": [(1,)]})()

        def close(self) -> None:
            pass

    import asyncio

    queries = Queries(Fake, clients.route)

    async def ask() -> None:
        for tenant in ("shop", "", "pay'ments", "shop"):
            await queries.rows("SELECT 1", tenant=tenant)

    asyncio.run(ask())
    assert made == ["shop:shop", "*:", "pay'ments:pay'ments", "shop:shop"]
    assert sorted(queries._clients) == ["*", "pay'ments", "shop"]  # one client per user


def test_the_flags_say_what_they_need(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                      ) -> None:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text('tokens:\n  "shop-token-1": shop\n  "admin-token": "*"\n')
    assert cli_main(["console", "--access-sql"]) == 2
    assert "--access-sql needs --tokens FILE" in capsys.readouterr().err
    assert cli_main(["console", "--tokens", str(tokens), "--access-sql"]) == 0
    out = capsys.readouterr().out
    assert out.count(";\n") == len(access_statements({"shop-token-1": "shop",
                                                      "admin-token": "*"}))
    assert "shop-token-1" not in out  # the tokens themselves never appear
    assert cli_main(["console", "--tokens", str(tokens), "--server-users", "--home",
                     str(tmp_path)]) == 2
    assert "--server-users needs a ClickHouse server" in capsys.readouterr().err
