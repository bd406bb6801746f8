"""DSNs: one parser for chdb:// and http(s)://, and passwords never printed."""

from __future__ import annotations

import pytest

from dnsflow.sinks.dsn import DsnError, one_line, parse, redact


def test_redact_hides_password_only():
    assert redact("https://bob:s3cret@ch.example:8443/dnsflow") == (
        "https://bob:***@ch.example:8443/dnsflow"
    )
    assert redact("chdb:///var/lib/dnsflow/chdb") == "chdb:///var/lib/dnsflow/chdb"


def test_parse_chdb_and_http():
    assert parse("chdb:///tmp/x").path == "/tmp/x"
    d = parse("http://u:pw@127.0.0.1:8123/db")
    assert not d.embedded and "pw" not in str(d)


@pytest.mark.parametrize("bad", ["mysql://h/db", "chdb://", "http://"])
def test_bad_dsn_is_named_without_secret(bad):
    with pytest.raises(DsnError) as err:
        parse(bad.replace("//", "//u:topsecret@", 1) if bad.startswith("mysql") else bad)
    assert "topsecret" not in str(err.value)


def test_error_lines_are_scrubbed_of_the_password():
    exc = RuntimeError("Code: 516. DB::Exception: u: Authentication failed pw=hunter2\nstack")
    assert "hunter2" not in one_line(exc, "http://u:hunter2@h:8123")
