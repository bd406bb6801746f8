"""The Kubernetes policy source against a real kube-apiserver (scripts/kube-local): what the
CRD cannot judge (an RE2-refused regex, a conflict, a namespace without tenant) is judged by
the source and written to the resource's status subresource; `kubectl get dnsp` shows it;
the source never loops on its own status writes."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

from dnsflow.bus.memory import MemoryBus
from dnsflow.policies.records import GLOBAL
from dnsflow.policies.sources.kubernetes import KubernetesSource

ROOT = Path(__file__).resolve().parents[2]
G = ("dnsflow.io", "v1")


@pytest.fixture(scope="module")
def api(kube):
    kube.apply_crds()
    return config.new_client_from_config(config_file=str(kube.kubeconfig))


async def until(pred, timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(pred)
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.1)


def _policy(ns: str, name: str, rules: list[dict]) -> dict:
    return {"apiVersion": "dnsflow.io/v1", "kind": "DNSPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": {"rules": rules}}


def _regex_rule(pattern: str) -> list[dict]:
    return [{"id": "dga", "action": "deny", "match": {"regex": [pattern]}}]


def _table(out: str) -> list[dict[str, str]]:
    """kubectl's table output as rows keyed by column (cells cut at the header's offsets)."""
    head, *rows = out.splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", head)]
    names = head.split()
    return [{n: row[a:b].strip() for n, a, b in zip(names, starts, [*starts[1:], None],
                                                     strict=True)} for row in rows]


def _accepted(obj: dict) -> dict:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Accepted":
            return c
    return {}


def _validate_line(doc: dict, tmp_path: Path) -> str:
    """What `dnsflow policy validate` prints for this document in a file, after the file."""
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(doc))
    out = subprocess.run([sys.executable, "-m", "dnsflow", "policy", "validate", str(f)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert out.returncode == 1, out.stdout + out.stderr
    line = next(ln for ln in (out.stdout + out.stderr).splitlines() if str(f) in ln)
    return line.split(f"{f}: ", 1)[1]


async def test_status_says_whether_each_policy_is_in_force(api, kube, tmp_path) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    uid = uuid.uuid4().hex[:8]
    ns, loose, tenant = f"shop-{uid}", f"loose-{uid}", f"acme-{uid}"
    await asyncio.to_thread(core.create_namespace, {"metadata": {
        "name": ns, "labels": {"dnsflow.io/tenant": tenant}}})
    await asyncio.to_thread(core.create_namespace, {"metadata": {"name": loose}})

    def get(name: str, namespace: str = ns) -> dict:
        return custom.get_namespaced_custom_object(*G, namespace, "dnspolicies", name)

    source = KubernetesSource(MemoryBus(), api_client=api, timeout_s=10)
    await source.start()
    try:
        good = _policy(ns, "base", _regex_rule(r"[a-z0-9]{25,}\.biz"))
        await asyncio.to_thread(custom.create_namespaced_custom_object, *G, ns,
                                "dnspolicies", good)
        got = await until(lambda: _accepted(get("base")).get("status") == "True" and get("base"),
                          what="accepted")
        st = got["status"]
        assert _accepted(got)["reason"] == "Published"
        assert (st["observedGeneration"], st["publishedVersion"], st["tenant"]) == (1, 1, tenant)
        assert st["contentHash"] == source.publisher.current[tenant]["hash"]
        assert st["contentHash"].startswith("sha256:")
        first_hash = st["contentHash"]

        # a regex RE2 refuses (a backreference) passes the CRD but not the source
        bad = _regex_rule(r"(a+)\1")
        await asyncio.to_thread(custom.patch_namespaced_custom_object, *G, ns, "dnspolicies",
                                "base", {"spec": {"rules": bad}})
        got = await until(lambda: _accepted(get("base")).get("status") == "False" and get("base"),
                          what="rejected")
        cond, st = _accepted(got), got["status"]
        assert cond["reason"] == "Invalid"
        assert cond["message"].startswith(f"dnspolicies/{ns}/base: document 1: "
                                          "spec.rules[0].match.regex[0]: bad regex")
        expected = _validate_line(_policy(ns, "base", bad) | {"spec": {
            "tenant": ns, "rules": bad}}, tmp_path)
        assert cond["message"].split("document 1: ", 1)[1] == \
            expected.split("document 1: ", 1)[1]
        # the last good version stays in force, and the status says which
        assert (st["observedGeneration"], st["publishedVersion"]) == (2, 1)
        assert st["contentHash"] == first_hash

        # kubectl get dnsp shows it
        (row,) = _table(kube.kubectl("get", "dnsp", "-n", ns).stdout)
        assert list(row) == ["NAME", "TENANT", "PRIORITY", "ACCEPTED", "VERSION", "AGE"]
        assert (row["NAME"], row["TENANT"], row["ACCEPTED"], row["VERSION"]) == \
            ("base", tenant, "False", "1")
        wide = kube.kubectl("get", "dnsp", "-n", ns, "-o", "wide").stdout
        assert "Invalid" in wide and "bad regex" in wide

        # fixed: in force again with the next version
        await asyncio.to_thread(custom.patch_namespaced_custom_object, *G, ns, "dnspolicies",
                                "base", {"spec": {"rules": _regex_rule(r"x[0-9]+\.example")}})
        got = await until(lambda: _accepted(get("base")).get("status") == "True" and get("base"),
                          what="fixed")
        st = got["status"]
        assert (st["observedGeneration"], st["publishedVersion"]) == (3, 2)
        assert st["contentHash"] != first_hash
        (row,) = _table(kube.kubectl("get", "dnsp", "base", "-n", ns).stdout)
        assert (row["ACCEPTED"], row["VERSION"]) == ("True", "2")

        # a second policy that makes the set invalid (duplicate rule id is fine across
        # policies; two upstream lists for one view are not): it conflicts, the first is blocked
        for name, up in (("view-a", "udp://10.0.0.1"), ("view-b", "udp://10.0.0.2")):
            doc = _policy(ns, name, []) | {}
            doc["spec"] = {"view": {"upstreams": [up]}}
            await asyncio.to_thread(custom.create_namespaced_custom_object, *G, ns,
                                    "dnspolicies", doc)
        conds = await until(lambda: (lambda c: c if all(x.get("status") == "False"
                                                        for x in c.values()) else None)(
            {n: _accepted(get(n)) for n in ("base", "view-a", "view-b")}), what="conflict")
        reasons = {n: c["reason"] for n, c in conds.items()}
        assert sorted(reasons.values()) == ["Blocked", "Blocked", "Conflict"], reasons
        culprit = next(n for n, r in reasons.items() if r == "Conflict")
        assert "spec.view.upstreams" in conds[culprit]["message"]
        blocked = next(n for n, r in reasons.items() if r == "Blocked")
        assert f"{tenant} keeps version 2" in conds[blocked]["message"]
        await asyncio.to_thread(custom.delete_namespaced_custom_object, *G, ns, "dnspolicies",
                                culprit)
        await until(lambda: all(_accepted(get(n)).get("status") == "True"
                                for n in ("base", "view-a", "view-b") if n != culprit),
                    what="unblocked")

        # a namespace without the tenant label cannot carry policy
        await asyncio.to_thread(custom.create_namespaced_custom_object, *G, loose,
                                "dnspolicies", _policy(loose, "evil", _regex_rule("x")))
        cond = await until(lambda: _accepted(get("evil", loose)) or None, what="no tenant")
        assert (cond["status"], cond["reason"]) == ("False", "NoTenant")
        assert "has no dnsflow.io/tenant label" in cond["message"]

        # a ClusterDNSPolicy gets its status through the cluster-scoped subresource
        cname = f"guard-{uid}"
        await asyncio.to_thread(custom.create_cluster_custom_object, *G, "clusterdnspolicies", {
            "apiVersion": "dnsflow.io/v1", "kind": "ClusterDNSPolicy",
            "metadata": {"name": cname},
            "spec": {"rules": [{"id": "tor", "match": {"suffixes": ["onion"]},
                                "action": "deny"}]}})
        got = await until(lambda: (lambda o: o if _accepted(o).get("status") == "True" else None)(
            custom.get_cluster_custom_object(*G, "clusterdnspolicies", cname)),
            what="cluster policy accepted")
        assert got["status"]["tenant"] == GLOBAL and got["status"]["publishedVersion"] >= 1

        # no write loop: once settled, the source's own writes do not make it write again
        await asyncio.sleep(1.0)
        writes, rv = source.status_writes, get("base")["metadata"]["resourceVersion"]
        await asyncio.sleep(2.0)
        assert source.status_writes == writes
        assert get("base")["metadata"]["resourceVersion"] == rv
        assert source.status()["status_errors"] == 0
        await asyncio.to_thread(custom.delete_cluster_custom_object, *G, "clusterdnspolicies",
                                cname)
    finally:
        await source.stop()
        for name in (ns, loose):
            await asyncio.to_thread(core.delete_namespace, name)
