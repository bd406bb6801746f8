"""Settings precedence and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dnsflow.cli import VERBS, main
from dnsflow.settings import ConfigError, load_settings


def test_flags_beat_env_beat_file(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("kafka: file:9092\nclickhouse: http://file\nhome: /from/file\n")
    s = load_settings(cfg, {"kafka": "flag:9092"}, environ={"DNSFLOW_CLICKHOUSE": "http://env"})
    assert s.kafka == "flag:9092"
    assert s.clickhouse == "http://env"
    assert str(s.home) == "/from/file"


def test_embedded_default_is_chdb_under_home(tmp_path):
    s = load_settings(None, {"home": str(tmp_path)}, environ={})
    assert s.embedded
    assert s.clickhouse_dsn == f"chdb://{tmp_path.resolve()}/chdb"


def test_config_errors_name_file_and_field(tmp_path):
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_settings(tmp_path / "missing.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("kafkaa: x\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: kafkaa: Extra inputs"):
        load_settings(bad, environ={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml line \d+: invalid YAML"):
        load_settings(broken, environ={})


def test_help_lists_every_contract_verb():
    out = subprocess.run([sys.executable, "-m", "dnsflow", "--help"], capture_output=True,
                         text=True, check=True).stdout
    for verb in ("demo", "up", "edge", "streams", "sink", "policy", "replay", "query"):
        assert verb in VERBS
        assert f"    {verb}" in out


def test_bad_flag_is_one_line_and_nonzero(capsys):
    assert main(["up", "--no-such-flag"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--no-such-flag" in err


def test_unreadable_config_is_one_line_and_nonzero(capsys, tmp_path):
    assert main(["up", "--config", str(tmp_path / "nope.yaml"), "--seconds", "0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "nope.yaml" in err
