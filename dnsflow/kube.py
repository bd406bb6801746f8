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


def absorb_namespaces(table: dict[str, dict[str, str]], kind: str,
                      objs: list[dict[str, Any]]) -> None:
    """Apply one :class:`ListWatch` post of namespaces to ``table`` (name -> labels, in
    place): a ``RESET`` replaces it, ``DELETED`` drops a name, any other event sets its
    labels. The labels carry the tenancy (:data:`TENANT_LABEL`)."""
    if kind == "RESET":
        table.clear()
    for o in objs:
        meta = o.get("metadata") or {}
        name = meta.get("name")
        if not name:
            continue
        if kind == "DELETED":
            table.pop(name, None)
        else:
            table[name] = dict(meta.get("labels") or {})


class WatchOwner(Protocol):
    """What a :class:`ListWatch` reports to: the API client, events, and error counters."""

    api: Any
    errors: int
    last_error: str

    def post(self, what: str, kind: str, objs: list[dict[str, Any]]) -> None:
        """Called from the watch thread: ``kind`` is ``RESET`` (a full listing) or the
        watch event type (ADDED, MODIFIED, DELETED)."""


def _gone(exc: BaseException) -> bool:
    """An expired resourceVersion: HTTP 410 Gone (``Expired``, "too old resource version")."""
    return getattr(exc, "status", None) == 410


class ListWatch(threading.Thread):
    """List one resource, then watch it from the listed ``resourceVersion``, forever.

    When the server ends a watch (its ``timeout_seconds``, a restart, a dropped connection)
    the next watch resumes from the last ``resourceVersion`` seen (events and bookmarks), so
    nothing between the two is missed and nothing is listed again. An expired
    ``resourceVersion`` (410 Gone: etcd compacted, or the watch cache moved past it) lists
    again and posts the listing as a ``RESET``; so does any other failure, after an
    exponential back-off up to 10 s. ``lists``, ``watches`` and ``expired`` count them.
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
        self.resource_version = ""  # "" = list before watching
        self.lists = 0
        self.watches = 0
        self.expired = 0

    def _dict(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.owner.api.sanitize_for_serialization(obj)

    def _list(self) -> None:
        listing = self._dict(self.list_fn(**self.kwargs, _request_timeout=self.timeout))
        self.lists += 1
        self.owner.post(self.what, "RESET", [self._dict(i) for i in listing.get("items") or []])
        self.resource_version = str((listing.get("metadata") or {}).get("resourceVersion") or "")

    def _expire(self, detail: str) -> None:
        self.expired += 1
        log.info("kubernetes watch of %s: %s; listing again", self.what, detail)
        self.resource_version = ""

    def _watch(self) -> None:
        from kubernetes import watch

        since = {"resource_version": self.resource_version} if self.resource_version else {}
        self.watch = watch.Watch()
        self.watches += 1
        # the server ends the watch first (timeout_seconds); the client-side read timeout only
        # catches a server that never does
        for event in self.watch.stream(self.list_fn, **self.kwargs, **since,
                                       allow_watch_bookmarks=True,
                                       timeout_seconds=max(1, int(self.timeout) - 1),
                                       _request_timeout=self.timeout):
            if self.stopped.is_set():
                return
            kind = event.get("type", "")
            obj = self._dict(event.get("raw_object") or event.get("object") or {})
            if kind == "ERROR":
                if obj.get("code") == 410:
                    self._expire(str(obj.get("message") or "410 Gone"))
                    return
                raise RuntimeError(f"watch error: {obj.get('message') or obj}")
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            if rv:
                self.resource_version = str(rv)
            if kind != "BOOKMARK":
                self.owner.post(self.what, kind, [obj])

    def run(self) -> None:
        from urllib3.exceptions import ReadTimeoutError

        backoff = 0.2
        while not self.stopped.is_set():
            try:
                if not self.resource_version:
                    self._list()
                    if not self.resource_version:  # no version to resume from: list each time
                        self._watch()
                        self.resource_version = ""
                        continue
                self._watch()
                backoff = 0.2
            except ReadTimeoutError:
                continue  # an idle watch: resume from the last version seen
            except Exception as exc:
                if self.stopped.is_set():
                    break
                if _gone(exc):
                    self._expire(str(getattr(exc, "reason", "") or exc))
                    continue
                self.owner.errors += 1
                self.owner.last_error = f"{self.what}: {type(exc).__name__}: {exc}"
                log.warning("kubernetes watch of %s failed: %s (retrying)", self.what, exc)
                self.resource_version = ""  # start over from a listing
                self.stopped.wait(backoff)
                backoff = min(backoff * 2, 10.0)

    def status(self) -> dict[str, int]:
        return {"lists": self.lists, "watches": self.watches, "expired": self.expired}

    def stop(self) -> None:
        self.stopped.set()
        if self.watch is not None:
            with contextlib.suppress(Exception):
                self.watch.stop()
