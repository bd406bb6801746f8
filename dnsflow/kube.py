"""Kubernetes API access shared by the components that watch the cluster (edge identity,
policy source), so both find the API server and read tenancy the same way."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

TENANT_LABEL = "dnsflow.io/tenant"
"""Namespace label naming the tenant that owns the namespace (default: the namespace name)."""


def api_client(kubeconfig: str | None = None, host: str | None = None) -> Any:
    """In-cluster config, else the kubeconfig (default ``~/.kube/config``); ``host`` alone
    for tests and ``kubectl proxy``."""
    from kubernetes import client, config

    if host:
        cfg = client.Configuration()
        cfg.host = host
        return client.ApiClient(cfg)
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    return config.new_client_from_config(config_file=kubeconfig)


class WatchOwner(Protocol):
    """What a :class:`ListWatch` reports to: the API client, events, and error counters."""

    api: Any
    errors: int
    last_error: str

    def post(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        """Called from the watch thread: ``kind`` is ``RESET`` (a full listing) or the
        watch event type (ADDED, MODIFIED, DELETED)."""


class ListWatch(threading.Thread):
    """List one resource, then watch it from the listed ``resourceVersion``, forever.

    Any disconnect, idle timeout or ``ERROR`` event (e.g. 410 Gone) lists again, so nothing
    between a list and its watch is missed; failures back off exponentially up to 10 s.
    """

    def __init__(self, owner: WatchOwner, what: str, list_fn: Callable[..., Any],
                 kwargs: dict[str, Any] | None = None, *, timeout: float,
                 name: str | None = None) -> None:
        super().__init__(name=name or f"k8s-watch-{what}", daemon=True)
        self.owner = owner
        self.what = what
        self.list_fn = list_fn
        self.kwargs = kwargs or {}
        self.timeout = timeout
        self.stopped = threading.Event()
        self.watch: Any = None

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.owner.api.sanitize_for_serialization(obj)

    def run(self) -> None:
        from kubernetes import watch
        from urllib3.exceptions import ReadTimeoutError

        backoff = 0.2
        while not self.stopped.is_set():
            try:
                listing = self._dict(self.list_fn(**self.kwargs, _request_timeout=self.timeout))
                self.owner.post(self.what, "RESET",
                                [self._dict(i) for i in listing.get("items") or []])
                rv = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                since = {"resource_version": rv} if rv.isdigit() else {}
                self.watch = watch.Watch()
                # the server ends the watch first (timeout_seconds); the client-side read
                # timeout only catches a server that never does
                for event in self.watch.stream(self.list_fn, **self.kwargs, **since,
                                               timeout_seconds=max(1, int(self.timeout) - 1),
                                               _request_timeout=self.timeout):
                    if self.stopped.is_set() or event.get("type") == "ERROR":
                        break
                    obj = event.get("raw_object") or event.get("object")
                    self.owner.post(self.what, event.get("type", ""), [self._dict(obj)])
                backoff = 0.2
            except ReadTimeoutError:
                continue  # an idle watch: list again and carry on
            except Exception as exc:
                if self.stopped.is_set():
                    break
                self.owner.errors += 1
                self.owner.last_error = f"{self.what}: {type(exc).__name__}: {exc}"
                log.warning("kubernetes watch of %s failed: %s (retrying)", self.what, exc)
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def stop(self) -> None:
        self.stopped.set()
        if self.watch is not None:
            with contextlib.suppress(Exception):
                self.watch.stop()
