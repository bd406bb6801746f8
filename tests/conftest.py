"""Shared fixtures: the real local Kafka, unique topic prefixes, chDB paths.

``make test`` starts one broker for the session and passes it as ``DNSFLOW_TEST_KAFKA``.
Run outside ``make test``, the fixture starts (and stops) its own broker with
``scripts/kafka-local``. Kafka tests are never skipped when ``DNSFLOW_REQUIRE_KAFKA=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Apache Kafka broker on loopback."""
    given = os.environ.get("DNSFLOW_TEST_KAFKA")
    if given:
        yield given
        return
    from harness.peers import KafkaLocal

    kafka = KafkaLocal(tmp_path_factory.mktemp("kafka-local"))
    try:
        bootstrap = kafka.start()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("DNSFLOW_REQUIRE_KAFKA") == "1":
            pytest.fail(f"local Kafka did not start: {exc}")
        pytest.skip(f"local Kafka not available: {exc}")
    try:
        yield bootstrap
    finally:
        kafka.stop()


@dataclass(frozen=True)
class KubeLocal:
    """A real kube-apiserver (scripts/kube-local): its admin kubeconfig and the folder with
    ``kube-apiserver``, ``kubectl`` and ``helm`` built from their Go modules."""

    kubeconfig: Path
    tools: Path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                as_user: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.tools / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        if as_user:
            cmd += ["--as", as_user]
        out = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=120)
        if check and out.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
        return out

    def apply_crds(self, timeout: float = 30.0) -> None:
        """Apply the committed CRDs (``deploy/crds``) and wait until both are Established:
        the API server refuses a CRD whose CEL rules exceed its cost budget, so this is
        itself a check."""
        self.kubectl("apply", "-f", str(ROOT / "deploy" / "crds"))
        for crd in ("dnspolicies.dnsflow.io", "clusterdnspolicies.dnsflow.io"):
            deadline = time.monotonic() + timeout
            while True:
                got = json.loads(self.kubectl("get", "crd", crd, "-o", "json").stdout)
                conds = {c["type"]: c["status"]
                         for c in got.get("status", {}).get("conditions", [])}
                if conds.get("Established") == "True":
                    break
                assert time.monotonic() < deadline, f"{crd} not established: {conds}"
                time.sleep(0.2)


@pytest.fixture(scope="session")
def kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeLocal]:
    """A real Kubernetes API server on loopback, started by ``make test`` or here."""
    given, tools = os.environ.get("DNSFLOW_TEST_KUBECONFIG"), os.environ.get("DNSFLOW_KUBE_TOOLS")
    if given and tools:
        yield KubeLocal(Path(given), Path(tools))
        return
    script = ROOT / "scripts" / "kube-local"
    env = {**os.environ, "KUBE_LOCAL_DIR": str(tmp_path_factory.mktemp("kube-local"))}
    try:
        tools_out = subprocess.run(["bash", str(script), "tools"], env=env, capture_output=True,
                                   text=True, timeout=1800, check=True).stdout.strip()
        cfg = subprocess.run(["bash", str(script), "start"], env=env, capture_output=True,
                             text=True, timeout=300, check=True).stdout.strip()
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", "") or ""
        if os.environ.get("DNSFLOW_REQUIRE_KUBE") == "1":
            pytest.fail(f"local kube-apiserver did not start: {exc} {detail[-400:]}")
        pytest.skip(f"local kube-apiserver not available: {exc}")
    try:
        yield KubeLocal(Path(cfg), Path(tools_out))
    finally:
        subprocess.run(["bash", str(script), "stop"], env=env, timeout=120, check=False)


@pytest.fixture
def topic_prefix() -> str:
    """A fresh topic prefix per test so tests never read each other's records."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def chdb_dsn(tmp_path: Path) -> str:
    return f"chdb://{tmp_path / 'chdb'}"
