"""`dnsflow streams --kafka` keeps faust's files under the data directory: a worker started
from a checkout or a read-only working directory writes nothing there."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnsflow.settings import Settings
from dnsflow.streams.faust_app import make_app


def test_faust_files_go_under_the_data_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("APP_DATADIR", raising=False)
    app = make_app(Settings(home=tmp_path / "home", kafka="127.0.0.1:9"))
    assert Path(app.conf.datadir).is_relative_to(tmp_path / "home")
    assert Path(app.conf.datadir).name.endswith("dnsflow-streams-data")
    assert Path(app.conf.datadir).parent.is_dir()  # faust makes only the last part


@pytest.mark.parametrize("name", ["{conf.name}-data", "fixed"])
def test_app_datadir_wins(tmp_path: Path, monkeypatch, name: str) -> None:
    monkeypatch.setenv("APP_DATADIR", str(tmp_path / "elsewhere" / name))
    app = make_app(Settings(home=tmp_path / "home", kafka="127.0.0.1:9"))
    assert Path(app.conf.datadir).is_relative_to(tmp_path / "elsewhere")
