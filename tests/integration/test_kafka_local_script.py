"""scripts/kafka-local's stdout contract: only the bootstrap address, whatever its tools print.

A fresh machine resolves the Kafka jars with Maven, and Maven may write colour codes or
progress to stdout; before the fix those bytes became part of the bootstrap that
``scripts/run-tests`` captured and every Kafka test failed. Here a ``mvn`` wrapper that writes
such noise to stdout stands in front of the real Maven, the jar cache is empty, and the
captured output must still be exactly ``127.0.0.1:PORT``.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "kafka-local"
BOOTSTRAP = re.compile(r"127\.0\.0\.1:\d{1,5}\n")


@pytest.fixture
def noisy_mvn(tmp_path: Path) -> Path:
    real = shutil.which("mvn")
    if real is None:
        pytest.fail("mvn is needed by scripts/kafka-local and must be installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "mvn"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        "printf '\\033[0m\\033[0mnoise on stdout\\n'\n"
        f'exec "{real}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return bindir


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=400,
    )


def test_cold_start_prints_only_the_bootstrap(tmp_path: Path, noisy_mvn: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{noisy_mvn}:{os.environ['PATH']}",
        "KAFKA_JARS_CACHE": str(tmp_path / "empty-cache"),
        "KAFKA_LOCAL_DIR": str(tmp_path / "state"),
    }
    started = run(["start"], env)
    try:
        assert started.returncode == 0, started.stderr
        # The wrapper really ran (its noise must be on stderr now, not lost and not on stdout).
        assert "noise on stdout" in started.stderr
        assert BOOTSTRAP.fullmatch(started.stdout), repr(started.stdout)
        status = run(["status"], env)
        assert status.returncode == 0 and status.stdout == started.stdout
        host, port = started.stdout.strip().rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    finally:
        stopped = run(["stop"], env)
    assert stopped.returncode == 0 and stopped.stdout == ""
    assert run(["status"], env).returncode == 1


def test_fetch_prints_nothing_on_stdout(tmp_path: Path, noisy_mvn: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{noisy_mvn}:{os.environ['PATH']}",
        "KAFKA_JARS_CACHE": str(tmp_path / "empty-cache"),
    }
    fetched = run(["fetch"], env)
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == ""
    assert (tmp_path / "empty-cache" / ".complete").exists()


def test_run_tests_rejects_a_bootstrap_that_is_not_host_port(tmp_path: Path) -> None:
    """The capturing side stops with one clear line when the captured value is malformed."""
    fake_root = tmp_path / "repo"
    (fake_root / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run-tests", fake_root / "scripts" / "run-tests")
    (fake_root / "scripts" / "kafka-local").write_text(
        "#!/usr/bin/env bash\n"
        '[ "$1" = start ] && printf "\\033[0m127.0.0.1:9092\\n"\n'
        "exit 0\n"
    )
    (fake_root / "scripts" / "kube-local").write_text("#!/usr/bin/env bash\nexit 0\n")
    out = subprocess.run(
        ["bash", str(fake_root / "scripts" / "run-tests")], capture_output=True, text=True,
        timeout=60, env={**os.environ, "KAFKA_LOCAL_DIR": str(tmp_path / "s")},
    )
    assert out.returncode == 1
    assert "expected host:port" in out.stderr
    assert out.stderr.strip().count("\n") == 0, out.stderr
