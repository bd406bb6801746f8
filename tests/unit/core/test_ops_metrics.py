"""The core's operations endpoint as an operator meets it: where it listens, what the three
routes answer, and what happens when its default port is taken."""

from __future__ import annotations

import socket

import httpx
import pytest

from dnsflow.ops import OpsServer, component_registry, parse_listen, registry_render, serve_ops


@pytest.mark.parametrize(("text", "want"), [
    ("9155", ("127.0.0.1", 9155)),
    (":9155", ("127.0.0.1", 9155)),
    ("0.0.0.0:9155", ("0.0.0.0", 9155)),
    ("[::1]:0", ("::1", 0)),
])
def test_listen_is_loopback_unless_a_host_is_named(text: str, want: tuple[str, int]) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize("text", ["host", "::1", "1.2.3.4:99999", "a:b"])
def test_bad_listen_addresses_are_named(text: str) -> None:
    with pytest.raises(ValueError, match=r"HOST:PORT|brackets"):
        parse_listen(text)


async def test_routes_answer_with_the_checks_verdicts() -> None:
    registry = component_registry("sink")
    ready = {"ok": False}

    def readiness() -> tuple[bool, dict[str, object]]:
        return ready["ok"], {"clickhouse": ready["ok"]}

    def liveness() -> tuple[bool, dict[str, object]]:
        raise RuntimeError("loop gone")

    srv = OpsServer(registry_render(registry), "127.0.0.1", 0, readiness, liveness)
    await srv.start()
    try:
        async with httpx.AsyncClient(base_url=srv.url) as http:
            m = await http.get("/metrics")
            assert m.status_code == 200 and m.headers["content-type"].startswith("text/plain")
            assert 'dnsflow_build_info{component="sink"' in m.text
            assert "process_cpu_seconds_total" in m.text
            r = await http.get("/readyz")
            assert r.status_code == 503 and r.json() == {"ok": False, "clickhouse": False}
            ready["ok"] = True
            assert (await http.get("/readyz")).status_code == 200
            h = await http.get("/healthz")  # a check that raises reads as unhealthy
            assert h.status_code == 503 and "loop gone" in h.json()["error"]
    finally:
        await srv.stop()


async def test_a_taken_default_port_is_a_warning_an_explicit_one_an_error(monkeypatch) -> None:
    from dnsflow import ops

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    monkeypatch.setitem(ops.DEFAULT_PORTS, "streams", port)
    try:
        assert await serve_ops("streams", None, lambda: b"", ops.alive) is None
        with pytest.raises(OSError, match=f"--metrics-listen 127.0.0.1:{port}"):
            await serve_ops("streams", f"127.0.0.1:{port}", lambda: b"", ops.alive)
        assert await serve_ops("streams", "off", lambda: b"", ops.alive) is None
    finally:
        busy.close()


def test_an_explicit_address_is_checked_before_the_process_starts() -> None:
    from dnsflow.ops import check_listen

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(OSError) as err:
            check_listen(f"127.0.0.1:{port}")
        assert err.value.strerror.startswith(f"--metrics-listen 127.0.0.1:{port}: ")
        check_listen("off")
    finally:
        busy.close()
    check_listen(f"127.0.0.1:{port}")  # free again: nothing held afterwards
    check_listen(f"127.0.0.1:{port}")
