"""The image's runtime contract without a container engine: its ENTRYPOINT as its USER (65534)
with the image's ENV, in a working directory it cannot write, must start and answer; faust's
data directory and DNSFLOW_HOME come from the ENV, never the working directory. The Dockerfile
installs dependencies before copying the sources and ships no bench/ or tests/; compose.yaml
is valid against the Compose specification and every service has a healthcheck."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

from harness.peers import dns_probe, free_port, stop_process
from tests.helpers.dockerfile import DOCKERFILE, image_env, instructions

ROOT = Path(__file__).resolve().parents[2]


def test_dockerfile_layers_and_contents() -> None:
    lines = DOCKERFILE.splitlines()
    deps = next(i for i, line in enumerate(lines) if "pip install --no-cache-dir -r" in line)
    first_source = next(i for i, line in enumerate(lines) if line.startswith("COPY dnsflow"))
    assert deps < first_source, "dependencies must be installed before the sources are copied"
    copies = " ".join(instructions("COPY"))
    assert "bench" not in copies and "tests" not in copies
    assert instructions("USER") == ["USER 65534:65534"]
    assert instructions("HEALTHCHECK")
    env = image_env()
    assert env["DNSFLOW_HOME"] == "/var/lib/dnsflow"
    assert env["APP_DATADIR"].startswith("/var/lib/dnsflow/")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root and setpriv to run as the image's user")
def test_entrypoint_as_the_image_user_starts_and_answers() -> None:
    """`dnsflow edge` as uid 65534, cwd unwritable, DNSFLOW_HOME the image's volume."""
    work = Path(tempfile.mkdtemp(prefix="dnsflow-image-"))
    try:
        os.chmod(work, 0o755)
        home, cwd = work / "home", work / "cwd"
        home.mkdir()
        cwd.mkdir(mode=0o555)
        os.chown(home, 65534, 65534)
        env = {"PATH": os.environ["PATH"], **image_env(), "DNSFLOW_HOME": str(home),
               "APP_DATADIR": str(home / "faust" / "{conf.name}-data"),
               "HOME": str(home), "DNSFLOW_HEALTH_URL": ""}
        port, mport = free_port(), free_port()
        entry = [str(Path(sys.prefix) / "bin" / "dnsflow")]  # ENTRYPOINT ["dnsflow"]
        # /root (this venv's interpreter) is 0700 here: a 0755 tmpfs over it with .pyenv and
        # the venv bound back, only in this mount namespace
        prelude = (f"mount --make-rprivate / && mkdir -p {work}/keep && "
                   f"mount --bind /root {work}/keep && mount -t tmpfs -o mode=0755 tmpfs /root && "
                   f"mkdir /root/.pyenv && mount --bind {work}/keep/.pyenv /root/.pyenv && "
                   "exec setpriv --reuid 65534 --regid 65534 --clear-groups "
                   "--inh-caps=-all --bounding-set=-all -- \"$@\"")
        cmd = ["unshare", "-m", "sh", "-c", prelude, "sh", *entry, "edge", "--listen",
               f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}", "--upstream",
               "udp://127.0.0.1:9"]
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        try:
            import time

            deadline = time.monotonic() + 30
            reply = None
            while time.monotonic() < deadline and reply is None:
                assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
                reply = dns_probe(port, "example.com", timeout=0.5)
            assert reply is not None  # SERVFAIL from a dead upstream is still an answer
            # the HEALTHCHECK command, as the image runs it
            hc = subprocess.run([sys.executable, "-m", "dnsflow.healthcheck",
                                 f"http://127.0.0.1:{mport}/healthz"], capture_output=True,
                                text=True, timeout=15)
            assert hc.returncode == 0, hc.stdout
            assert list(cwd.iterdir()) == []
            assert (home / "spool").is_dir()  # the event spool went where the image says
        finally:
            stop_process(proc)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_faust_data_dir_comes_from_the_image_env(tmp_path: Path) -> None:
    """faust puts `<appid>-data` in the working directory unless APP_DATADIR says otherwise."""
    code = ("import faust; app = faust.App('t-img', broker='kafka://127.0.0.1:9'); "
            "print(app.conf.datadir)")
    env = {**os.environ, "APP_DATADIR": image_env()["APP_DATADIR"]}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "/var/lib/dnsflow/faust/t-img-data"
    assert list(tmp_path.iterdir()) == []


def test_compose_is_valid_and_every_service_has_a_healthcheck() -> None:
    cj = Path(sys.prefix) / "bin" / "check-jsonschema"
    if not cj.exists():
        pytest.fail("check-jsonschema missing: pip install -e '.[dev]'")
    out = subprocess.run([str(cj), "--builtin-schema", "vendor.compose-spec",
                          str(ROOT / "compose.yaml")], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, svc in compose["services"].items():
        assert "healthcheck" in svc, name
