import asyncio
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

from streams_helpers import T0, make_logic

from dnsflow.streams.alerts import Webhook
from dnsflow.streams.checkpoint import forget, restore, snapshot
from dnsflow.streams.webhook import WebhookSender


def traffic(ev, lt):
    events = [ev(T0 + i * 100_000, "shop", f"10.0.0.{i % 4}", f"n{i % 9}.example.com")
              for i in range(1500)]
    events += [ev(T0 + i * 500_000, "shop", "10.0.0.66", name, rcode="NXDOMAIN")
               for i, name in enumerate(lt.dga_family("necurs", 2, 200))]
    return sorted(events, key=lambda e: e["ts"])


def test_restarted_logic_resumes_windows_from_checkpoint(ev, lt):
    events = traffic(ev, lt)
    whole = make_logic()
    for e in events:
        whole.process(e)
    whole.flush()
    expected = [(o.type, o.key, o.value) for o in whole.drain()]

    first = make_logic()
    half = len(events) // 2
    for e in events[:half]:
        first.process(e)
    got = [(o.type, o.key, o.value) for o in first.drain()]
    data = snapshot(first)  # the worker dies here; a new one restores the checkpoint
    second = make_logic()
    assert restore(second, [data]) == 1
    for e in events[half:]:
        second.process(e)
    second.flush()
    got += [(o.type, o.key, o.value) for o in second.drain()]
    assert got == expected
    assert any(t == "anomaly" for t, _, _ in got)


def two_tenants(ev, lt):
    """Traffic of two tenants ("shop", "pay"), and what one uninterrupted logic publishes."""
    events = traffic(ev, lt)
    events += [dict(e, tenant="pay", namespace="pay") for e in traffic(ev, lt)[::3]]
    events.sort(key=lambda e: e["ts"])
    whole = make_logic(auto_response={"enabled": True})
    for e in events:
        whole.process(e)
    whole.flush()
    return events, sorted((o.type, o.key, str(o.value)) for o in whole.drain())


def first_half(events):
    """A logic (auto-response on) that processed the first half of ``events``: the logic,
    what it published so far, and where the second half starts."""
    logic = make_logic(auto_response={"enabled": True})
    half = len(events) // 2
    for e in events[:half]:
        logic.process(e)
    return logic, [(o.type, o.key, str(o.value)) for o in logic.drain()], half


def test_per_partition_checkpoints_merge_back_into_the_whole(ev, lt):
    events, expected = two_tenants(ev, lt)
    first, got, half = first_half(events)
    # two partitions, one tenant each, checkpointed separately and restored together
    parts = [snapshot(first, {"shop"}), snapshot(first, {"pay"})]
    second = make_logic(auto_response={"enabled": True})
    assert restore(second, parts) == 2
    for e in events[half:]:
        second.process(e)
    second.flush()
    got += [(o.type, o.key, str(o.value)) for o in second.drain()]
    assert sorted(got) == expected
    # a worker owning only "pay" resumes only pay's windows
    only_pay = make_logic()
    restore(only_pay, parts[1:])
    assert set(only_pay.tmax) == {"pay"}
    assert all(set(p) <= {"pay"} for p in only_pay.telemetry.panes.values())


def test_rebalanced_tenant_moves_to_the_new_owner_and_leaves_the_old(ev, lt):
    """A partition moving mid-stream: the old worker checkpoints and forgets its tenant, the
    new one (already running) resumes it; together they publish what one worker would."""
    events, expected = two_tenants(ev, lt)
    old, got, half = first_half(events)
    moved = snapshot(old, {"pay"})
    forget(old, {"pay"})
    assert "pay" not in old.tmax and all("pay" not in p for p in old.telemetry.panes.values())
    new = make_logic(auto_response={"enabled": True})
    assert restore(new, [moved], running=True) == 1
    for e in events[half:]:
        (old if e["tenant"] == "shop" else new).process(e)
    for logic in (old, new):
        logic.flush()
        got += [(o.type, o.key, str(o.value)) for o in logic.drain()]
    assert sorted(got) == expected


class _Hook(BaseHTTPRequestHandler):
    calls: list[dict] = []
    fail_first = 2

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Hook.calls.append(body)
        code = 503 if len(_Hook.calls) <= _Hook.fail_first else 204
        self.send_response(code)
        self.end_headers()

    def log_message(self, *args):
        pass


async def test_webhook_retries_until_delivered_and_counts_failures():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    sender = WebhookSender()
    await sender.start()
    try:
        ok = await sender.post(Webhook(url=url, retries=3, backoff_s=0.01), {"rule": "r1"})
        assert ok and len(_Hook.calls) == 3 and _Hook.calls[-1] == {"rule": "r1"}
        dead = Webhook(url="http://127.0.0.1:9/none", retries=1, backoff_s=0.01, timeout_s=1)
        assert not await sender.post(dead, {"rule": "r2"})
        assert sender.status()["sent"] == 1 and sender.status()["failed"] == 1
        sender.submit(Webhook(url=url, retries=0), {"rule": "r3"})
        await asyncio.wait_for(sender.queue.join(), 5)
        assert _Hook.calls[-1] == {"rule": "r3"}
    finally:
        await sender.stop()
        server.shutdown()
