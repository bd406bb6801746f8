"""CoreDNS as platform teams run it (issue #14): its ``kubernetes`` plugin serving from the real
API server (scripts/kube-local) and its ``dnstap`` plugin feeding ``dnsflow tap``, whose client
identity comes from the same Kubernetes watch the edge uses. Every query a pod sends arrives as
one event with the pod's tenant, namespace, name and service account, whether CoreDNS answered
it, and cross-tenant lookups included (the tap records, it does not enforce)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
from kubernetes import client, config

from dnsflow.bus.memory import MemoryBus
from dnsflow.edge.tap.service import TapService, build
from dnsflow.kube import TENANT_LABEL
from dnsflow.settings import Settings
from dnsflow.topics import Topics
from harness.peers import free_port
from tests.integration.test_tap_senders import events_of

COREDNS = os.environ.get("DNSFLOW_COREDNS", "")

pytestmark = pytest.mark.skipif(
    not (COREDNS and os.access(COREDNS, os.X_OK)) and not os.environ.get("DNSFLOW_REQUIRE_KUBE"),
    reason="DNSFLOW_COREDNS not set (make test builds it with scripts/kube-local coredns)")


@pytest.fixture
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="coredns-it-"))  # short: unix socket paths
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def cluster(kube):
    """Two tenants' namespaces, a service in each, and two running pods on one node (no
    kubelet: the test plays it, as in test_kube_identity)."""
    api = config.new_client_from_config(config_file=str(kube.kubeconfig))
    core = client.CoreV1Api(api)
    uid = uuid.uuid4().hex[:6]
    node = f"node-{uid}"
    spaces = {"shop": f"shop-{uid}", "pay": f"pay-{uid}"}
    pods = {"127.0.0.2": ("shop", "web-1", "web"), "127.0.0.3": ("pay", "ledger-0", "default")}
    for key, ns in spaces.items():
        core.create_namespace({"metadata": {"name": ns, "labels": {TENANT_LABEL: f"t-{key}"}}})
        for sa in ("default", "web"):
            core.create_namespaced_service_account(ns, {"metadata": {"name": sa}})
        core.create_namespaced_service(ns, {"metadata": {"name": "api"}, "spec": {
            "ports": [{"port": 80}], "selector": {"app": "api"}}})
    for ip, (key, name, sa) in pods.items():
        ns = spaces[key]
        core.create_namespaced_pod(ns, {"metadata": {"name": name}, "spec": {
            "nodeName": node, "serviceAccountName": sa, "automountServiceAccountToken": False,
            "containers": [{"name": "c", "image": "registry.invalid/x"}]}})
        core.patch_namespaced_pod_status(name, ns, {"status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}})
    yield kube, node, spaces, pods
    for ns in spaces.values():
        core.delete_namespace(ns)


@pytest.fixture
async def tap(workdir: Path, cluster) -> AsyncIterator[tuple[TapService, MemoryBus, str]]:
    kube, node, _, _ = cluster
    bus = MemoryBus(Topics("t."))
    await bus.start()
    sock = str(workdir / "tap.sock")
    svc = build(Settings(home=workdir / "home", topic_prefix="t."), bus,
                listen=[f"unix:{sock}"], kubernetes=True, kubeconfig=str(kube.kubeconfig),
                node_name=node, name="tap-coredns", pair_timeout=2.0)
    await svc.start()
    yield svc, bus, sock
    await svc.stop()
    await bus.stop()


@pytest.fixture
async def coredns(workdir: Path, cluster, tap) -> AsyncIterator[int]:
    """CoreDNS started and connected to the tap. Async: the tap answers CoreDNS's Frame
    Streams handshake from this test's event loop, which must keep running meanwhile."""
    assert COREDNS, "DNSFLOW_COREDNS is not set: scripts/kube-local coredns builds it"
    kube = cluster[0]
    svc, _, sock = tap
    port = free_port()
    corefile = workdir / "Corefile"
    corefile.write_text(f"""
.:{port} {{
    bind 127.0.0.1
    kubernetes cluster.local {{
        kubeconfig {kube.kubeconfig}
        ttl 5
    }}
    dnstap unix://{sock} full {{
        identity coredns-it
    }}
}}
""")
    logfile = workdir / "coredns.log"
    log = logfile.open("w")
    proc = subprocess.Popen([COREDNS, "-conf", str(corefile)], stdout=log,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while (b"CoreDNS-" not in logfile.read_bytes()
               or svc.status()["listeners"][0]["connections"] < 1):
            assert proc.poll() is None, logfile.read_text()[-2000:]
            assert time.monotonic() < deadline, "CoreDNS did not start and connect in 30 s"
            await asyncio.sleep(0.1)
        yield port
        assert b"No connection to dnstap" not in logfile.read_bytes(), logfile.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


async def test_coredns_kubernetes_and_dnstap_into_tap(cluster, tap, coredns) -> None:
    _, _, spaces, pods = cluster
    svc, bus, _ = tap
    names = {  # asked by each pod: its own service, the other tenant's, and a missing one
        ip: [(f"api.{spaces[key]}.svc.cluster.local", "NOERROR"),
             (f"api.{spaces['pay' if key == 'shop' else 'shop']}.svc.cluster.local", "NOERROR"),
             (f"gone.{spaces[key]}.svc.cluster.local", "NXDOMAIN")]
        for ip, (key, _, _) in pods.items()}
    sent = []
    for _round in range(5):
        for ip, asks in names.items():
            for name, want in asks:
                q = dns.message.make_query(name, "A")
                r = await dns.asyncquery.udp(q, "127.0.0.1", port=coredns, source=ip,
                                             timeout=3)
                assert dns.rcode.to_text(r.rcode()) == want, (name, r)
                sent.append((ip, name, want))
    events = await events_of(svc, bus, set(pods), len(sent))
    assert sorted((e.client_ip, e.qname, e.rcode) for e in events) == sorted(sent)
    for e in events:
        key, pod, sa = pods[e.client_ip]
        assert (e.tenant, e.namespace, e.pod, e.service_account) == (
            f"t-{key}", spaces[key], pod, sa)
        assert e.edge == "coredns-it" and e.transport == "udp" and e.latency_us >= 0
        if e.rcode == "NOERROR":
            assert e.answers and e.answers[0].startswith("A 10.96.")
    assert svc.status()["decode_errors"] == 0
    assert svc.status()["adjacent_pairs"] > 0  # its pairs are read from the stream
