"""Kubernetes API access shared by the components that watch the cluster (edge identity,
policy source), so both find the API server and read tenancy the same way."""

from __future__ import annotations

from typing import Any

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
