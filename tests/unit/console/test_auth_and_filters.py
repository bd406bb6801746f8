"""The token file, the tail filter and the console's refusals, as a user meets them."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsflow.cli import main
from dnsflow.console.auth import EVERYTHING, Auth, Scope, TokenFileError, load_tokens
from dnsflow.console.queries import step_for
from dnsflow.console.tail import FilterError, TailFilter, format_line
from tests.unit.console.conftest import event


def _tokens(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tokens.yaml"
    path.write_text(text)
    return path


def test_a_good_token_file(tmp_path: Path):
    path = _tokens(tmp_path, 'tokens:\n  s3cret-acme: acme\n  s3cret-ops: "*"\n')
    auth = Auth(load_tokens(path))
    assert auth.scope_for_token("s3cret-acme") == Scope("acme")
    assert auth.scope_for_token("s3cret-ops") == EVERYTHING
    assert auth.scope_for_token("s3cret-acmeX") is None


@pytest.mark.parametrize(("text", "message"), [
    ("tokens:\n  s3cret-acme: acme\n  - oops\n", "line 3: invalid YAML"),
    ("tokens:\n  s3cret-acme: acme\n  s3cret-bbb:\n", "line 3: tokens['s3cr…']: the tenant"),
    ("tokens:\n  short: acme\n", "line 2: tokens[(a short token)]: a token needs at least 8"),
    ("tokenz:\n  s3cret-acme: acme\n", "line 1: unknown key 'tokenz'"),
    ("tokens: {}\n", "line 1: 'tokens' must be a non-empty mapping"),
    ("tokens:\n  s3cret-acme: acme\n  s3cret-acme: beta\n", "line 3: tokens['s3cr…']: the same"),
    ("", "empty file"),
])
def test_a_bad_token_file_names_the_file_and_the_place(tmp_path: Path, text: str,
                                                       message: str):
    path = _tokens(tmp_path, text)
    with pytest.raises(TokenFileError) as err:
        load_tokens(path)
    assert str(err.value).startswith(f"token file {path}")
    assert message in str(err.value)
    assert "s3cret-acme" not in str(err.value)  # never the token itself


def test_the_console_refuses_bad_tokens_and_open_addresses(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]):
    path = _tokens(tmp_path, "tokens:\n  s3cret-acme: [a, b]\n")
    assert main(["console", "--home", str(tmp_path), "--tokens", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"token file {path} line 2" in err and "the tenant must be" in err
    assert main(["console", "--home", str(tmp_path), "--listen", "0.0.0.0:8484"]) == 2
    err = capsys.readouterr().err
    assert "--listen 0.0.0.0:8484: without --tokens FILE" in err and "loopback only" in err
    assert main(["console", "--home", str(tmp_path), "--listen", "nonsense"]) == 2
    assert "use HOST:PORT" in capsys.readouterr().err
    assert main(["console", "--home", str(tmp_path / "empty"), "--listen",
                 "127.0.0.1:0"]) == 1
    assert "nothing stored there yet" in capsys.readouterr().err


def test_filters_match_what_they_say():
    ev = event("acme", 1, pod="web-7d9f", qname="API.Example.com", decision="deny")
    assert TailFilter().matches(ev)
    assert TailFilter(tenant="acme", namespace="acme", decision="deny").matches(ev)
    assert not TailFilter(tenant="globex").matches(ev)
    assert TailFilter(pod="web-*").matches(ev) and not TailFilter(pod="web").matches(ev)
    assert TailFilter.from_mapping({"name": "example.COM."}).matches(ev)
    assert not TailFilter.from_mapping({"name": "example.org"}).matches(ev)
    assert not TailFilter(decision="allow").matches(ev)
    with pytest.raises(FilterError, match="decision 'maybe': must be one of allow"):
        TailFilter.from_mapping({"decision": "maybe"})


def test_a_tenant_scope_pins_the_filter():
    assert TailFilter(name="x").scoped("acme") == TailFilter(tenant="acme", name="x")
    assert TailFilter(tenant="acme").scoped(None) == TailFilter(tenant="acme")
    with pytest.raises(PermissionError):
        TailFilter(tenant="globex").scoped("acme")
    with pytest.raises(PermissionError):
        Scope("acme").tenant_param("globex")
    assert Scope("acme").tenant_param(None) == "acme"
    assert EVERYTHING.tenant_param(None) == ""


def test_one_line_per_event():
    ev = event("acme", 0, ts=1_796_417_425_768_889, pod="web-1", qname="a.example",
               latency_us=1847, rule="acme/base#x", decision="deny", rcode="NXDOMAIN",
               answers=[])
    assert format_line(ev) == ("20:50:25.768 acme/acme/web-1 (10.1.0.5) udp A a.example -> "
                               "deny NXDOMAIN 1.85ms cache=miss rule=acme/base#x")


def test_buckets_are_round_and_about_sixty():
    assert step_for(9) == 1
    assert step_for(3600) == 60
    assert step_for(86400) == 1800


def test_a_name_cannot_drive_the_terminal():
    ev = event("acme", 0, qname="evil\x1b[2J.example")
    line = format_line(ev)
    assert "\x1b" not in line and "evil\\x1b[2J.example" in line
