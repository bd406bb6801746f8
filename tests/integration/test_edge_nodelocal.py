"""The node-local edge started exactly as the Helm chart's DaemonSet starts it, inside network
namespaces this test creates: a "node" namespace (where hostNetwork pods live) and a "pod"
namespace joined to it by a veth pair (10.233.x.0/30, used only inside them).

From the rendered chart (``helm template``) the test takes the init containers, the edge's
command, args, env (downward API values filled in as the kubelet would), volume mounts and
securityContext, and runs each container in the node namespace in a private mount namespace
with a read-only root where the manifest says so, as the user it names, with exactly the
capabilities it adds (``setpriv``: bounding set, no inheritable or ambient capabilities,
``no_new_privs`` when privilege escalation is not allowed), the image's environment from the
Dockerfile, and the image's ``python3-netbind`` (a copy of this interpreter with the same file
capability). Then ``dig @169.254.20.10`` from the pod namespace must be answered (UDP and TCP),
and the metrics port must be reachable on the node's IP.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

from harness.peers import stop_process
from tests.helpers.dockerfile import image_env

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "dnsflow"
CLUSTER_IP = "10.96.0.10"
NEEDED = ("ip", "nft", "setpriv", "setcap", "dig", "unshare", "curl")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or any(shutil.which(t) is None for t in NEEDED),
    reason="needs root and " + ", ".join(NEEDED) + " (scripts/install-peers)")

UPSTREAM = """
import asyncio, sys
from harness.fake_upstream import FakeUpstream
async def main():
    up = FakeUpstream(["example.com. 60 IN A 192.0.2.1"], host=sys.argv[1])
    await up.start()
    print(up.port, flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {out.stderr.strip()}")
    return out


def caps_flags(sc: dict) -> list[str]:
    """setpriv flags for a container securityContext, as a container runtime applies it."""
    caps = sc.get("capabilities", {})
    assert caps.get("drop") == ["ALL"], "the test expects drop: [ALL]"
    bset = ",".join(["-all", *(f"+{c.lower()}" for c in caps.get("add", []))])
    flags = ["--inh-caps=-all", "--ambient-caps=-all", f"--bounding-set={bset}"]
    uid, gid = sc.get("runAsUser", 0), sc.get("runAsGroup", 0)
    if uid:
        flags += [f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if sc.get("allowPrivilegeEscalation") is False:
        flags.append("--no-new-privs")
    return flags


def expand(value: str, env: dict[str, str]) -> str:
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)),
                  value)


@pytest.fixture
def helm_bin() -> Path:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "kube-local"), "tools"],
                         capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        pytest.skip(f"helm not available: {out.stderr[-300:]}")
    return Path(out.stdout.strip()) / "helm"


@pytest.fixture
def netns():
    tag = uuid.uuid4().hex[:6]
    node, pod = f"dnsflow-node-{tag}", f"dnsflow-pod-{tag}"
    net = f"10.233.{int(tag[:2], 16)}"
    procs: list[subprocess.Popen] = []
    try:
        sh("ip", "netns", "add", node)
        sh("ip", "netns", "add", pod)
        sh("ip", "-n", node, "link", "add", "veth-pod", "type", "veth", "peer", "name", "eth0",
           "netns", pod)
        sh("ip", "-n", node, "addr", "add", f"{net}.1/30", "dev", "veth-pod")
        sh("ip", "-n", pod, "addr", "add", f"{net}.2/30", "dev", "eth0")
        for ns, dev in ((node, "veth-pod"), (node, "lo"), (pod, "eth0"), (pod, "lo")):
            sh("ip", "-n", ns, "link", "set", dev, "up")
        sh("ip", "-n", pod, "route", "add", "default", "via", f"{net}.1")
        yield {"node": node, "pod": pod, "node_ip": f"{net}.1", "procs": procs}
    finally:
        for p in procs:
            stop_process(p, 15)
        for ns in (pod, node):
            sh("ip", "netns", "del", ns, check=False)


def container_script(tmp: Path, name: str, c: dict, volumes: dict[str, Path],
                     argv: list[str]) -> Path:
    """A shell script that does what the runtime does for one container, then execs it."""
    sc = c.get("securityContext", {})
    lines = ["set -e", "mount --make-rprivate /"]
    # the non-root user must reach this interpreter under /root (0700 here): a 0755 tmpfs
    # over /root with .pyenv bound back in, only in this mount namespace
    lines += [f"mkdir -p {tmp}/keep-pyenv", f"mount --bind /root/.pyenv {tmp}/keep-pyenv",
              "mount -t tmpfs -o mode=0755 tmpfs /root", "mkdir /root/.pyenv",
              f"mount --bind {tmp}/keep-pyenv /root/.pyenv"]
    overlays = []
    for i, m in enumerate(c.get("volumeMounts", [])):
        target = Path(m["mountPath"])
        parent = target.parent
        # a mount point the host may not have: an overlay over its parent makes it here only
        ov = tmp / f"ov-{name}-{i}"
        lines += [f"mkdir -p {ov}/up {ov}/work",
                  f"mount -t overlay overlay -o lowerdir={parent},upperdir={ov}/up,"
                  f"workdir={ov}/work {parent}", f"mkdir -p {target}",
                  f"mount --bind {volumes[m['name']]} {target}"]
        if m.get("readOnly"):
            lines.append(f"mount -o remount,bind,ro {target}")
        overlays.append(parent)
    if sc.get("readOnlyRootFilesystem"):
        lines += ["mount -o remount,bind,ro /"]
        lines += [f"mount -o remount,ro {p}" for p in overlays]
    lines.append("exec setpriv " + " ".join(caps_flags(sc)) + " -- "
                 + " ".join(shlex.quote(a) for a in argv))
    path = tmp / f"{name}.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def work() -> Path:
    """A folder the edge user can reach (pytest's tmp_path sits under a 0700 folder)."""
    path = Path(tempfile.mkdtemp(prefix="dnsflow-nodelocal-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_daemonset_edge_answers_on_the_node_local_address(netns, helm_bin: Path,
                                                          work: Path) -> None:
    tmp_path = work
    node, pod, node_ip, procs = netns["node"], netns["pod"], netns["node_ip"], netns["procs"]
    # an upstream inside the node namespace
    up = subprocess.Popen(["ip", "netns", "exec", node, sys.executable, "-c", UPSTREAM,
                           node_ip], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    procs.append(up)
    up_port = int(up.stdout.readline())
    rendered = subprocess.run(
        [str(helm_bin), "template", "dnsflow", str(CHART), "--namespace", "dnsflow-system",
         "--set", f"edge.upstreams={{udp://{node_ip}:{up_port}}}",
         "--set", "edge.kubernetes=false",
         # a second local address, as when the edge takes over the kube-dns ClusterIP (this
         # address exists only inside the namespaces the test made)
         "--set", f"edge.localIPs={{169.254.20.10,{CLUSTER_IP}}}",
         # Kafka is away (nothing listens there): the edge and its worker spool, not die
         "--set", f"kafka.bootstrap={node_ip}:9"],
        capture_output=True, text=True, check=True, timeout=60).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"]
              == "dnsflow-edge")
    secret = next(d for d in docs if d["kind"] == "Secret")
    spec = ds["spec"]["template"]["spec"]
    assert spec["hostNetwork"] is True

    # volumes: the ConfigMap's files and the hostPath as the kubelet leaves it (root, 0755)
    config = tmp_path / "configmap"
    config.mkdir()
    for k, v in cm["data"].items():
        (config / k).write_text(v)
    hostpath = tmp_path / "hostpath"
    hostpath.mkdir(mode=0o755)
    vols = {"config": config, "data": hostpath}
    assert {v["name"] for v in spec["volumes"]} == set(vols)

    # the image's python3-netbind: this interpreter with the image's file capability
    pyroot = tmp_path / "pyroot"
    (pyroot / "bin").mkdir(parents=True)
    real = Path(os.path.realpath(sys.executable))
    netbind = pyroot / "bin" / "python3-netbind"
    shutil.copy2(real, netbind)
    venv = Path(sys.prefix)
    (pyroot / "pyvenv.cfg").write_text(f"home = {real.parent}\n"
                                       "include-system-site-packages = false\n")
    (pyroot / "lib").symlink_to(venv / "lib")
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "setcap cap_net_bind_service=+ep /usr/local/bin/python3-netbind" in dockerfile
    sh("setcap", "cap_net_bind_service=+ep", str(netbind))
    programs = {"/usr/local/bin/python3-netbind": str(netbind),
                "dnsflow": str(venv / "bin" / "dnsflow"), "chown": shutil.which("chown")}

    downward = {"spec.nodeName": "node-a", "status.hostIP": node_ip}
    base_env = {"PATH": os.environ["PATH"], **image_env()}

    def argv_env(c: dict) -> tuple[list[str], dict[str, str]]:
        env = dict(base_env)
        for src in c.get("envFrom", []):
            assert src["secretRef"]["name"] == secret["metadata"]["name"]
            env.update(secret["stringData"])
        for e in c.get("env", []):
            env[e["name"]] = (e["value"] if "value" in e
                              else downward[e["valueFrom"]["fieldRef"]["fieldPath"]])
        command = c.get("command") or ["dnsflow"]  # the image's ENTRYPOINT
        argv = [programs.get(command[0], command[0]), *command[1:], *c.get("args", [])]
        return [expand(a, env) for a in argv], env

    # init containers, in order, each to completion
    for c in spec["initContainers"]:
        argv, env = argv_env(c)
        script = container_script(tmp_path, c["name"], c, vols, argv)
        out = subprocess.run(["ip", "netns", "exec", node, "unshare", "-m", "sh", str(script)],
                             env=env, cwd="/", capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, f"init {c['name']}: {out.stdout}{out.stderr}"
    addrs = sh("ip", "-n", node, "-o", "addr", "show", "dev", "dnsflow0").stdout
    assert "169.254.20.10/32" in addrs and f"{CLUSTER_IP}/32" in addrs
    rules = sh("ip", "netns", "exec", node, "nft", "list", "table", "inet",
               "dnsflow_nodelocal").stdout
    assert "notrack" in rules and "169.254.20.10" in rules
    assert hostpath.stat().st_uid == 65534

    # the edge container
    (c,) = spec["containers"]
    argv, env = argv_env(c)
    assert argv[0] == str(netbind)
    script = container_script(tmp_path, "edge", c, vols, argv)
    log = open(tmp_path / "edge.log", "w")  # noqa: SIM115 (closed below)
    edge = subprocess.Popen(["ip", "netns", "exec", node, "unshare", "-m", "sh", str(script)],
                            env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT)
    procs.append(edge)
    try:
        deadline = time.monotonic() + 60
        answer = ""
        while time.monotonic() < deadline:
            assert edge.poll() is None, (tmp_path / "edge.log").read_text()[-3000:]
            answer = sh("ip", "netns", "exec", pod, "dig", "@169.254.20.10", "+short",
                        "+time=1", "+tries=1", "example.com", check=False).stdout.strip()
            if answer == "192.0.2.1":
                break
            time.sleep(0.5)
        assert answer == "192.0.2.1", (tmp_path / "edge.log").read_text()[-3000:]
        tcp = sh("ip", "netns", "exec", pod, "dig", "@169.254.20.10", "+tcp", "+short",
                 "+time=2", "+tries=1", "example.com").stdout.strip()
        assert tcp == "192.0.2.1"
        for proto in ("+notcp", "+tcp"):  # the second local address, same port
            got = sh("ip", "netns", "exec", pod, "dig", f"@{CLUSTER_IP}", proto, "+short",
                     "+time=2", "+tries=1", "example.com").stdout.strip()
            assert got == "192.0.2.1", proto
        # the process is the DaemonSet's user with only NET_BIND_SERVICE
        status = Path(f"/proc/{edge.pid}/status").read_text()
        fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
        assert fields["Uid"].split()[0] == "65534" and fields["Gid"].split()[0] == "65534"
        assert int(fields["CapEff"], 16) == 1 << 10 and int(fields["CapBnd"], 16) == 1 << 10
        # one spool per worker on the hostPath, written by the edge user (2 workers)
        workers = int(argv[argv.index("--workers") + 1])
        spool = hostpath / "spool"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                (spool / f"w{i}").is_dir() for i in range(workers)):
            time.sleep(0.2)
        for i in range(workers):
            assert (spool / f"w{i}").stat().st_uid == 65534
        # scrapeable: /metrics on the node's IP, from the pod namespace
        port = c["ports"][-1]["containerPort"]
        metrics = sh("ip", "netns", "exec", pod, "curl", "-sf", "--max-time", "5",
                     f"http://{node_ip}:{port}/metrics").stdout
        assert "dnsflow_edge_responses_total" in metrics
        assert 'dnsflow_edge_workers_alive{edge="node-a"} 1.0' in metrics
    finally:
        edge.terminate()
        try:
            edge.wait(20)
        except subprocess.TimeoutExpired:
            edge.kill()
        log.close()
