"""Anomaly detectors: every module here is imported, and every :class:`Detector` subclass
with a ``kind`` registers itself (``streams.detectors.base``). :func:`registered` lists them
in call order; the settings section ``streams.detectors`` and the anomaly kinds alert rules
may name are built from that list."""

from __future__ import annotations

import importlib
import pkgutil

from dnsflow.streams.detectors.base import REGISTRY, Detector

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "build_model":  # a build-time script
        importlib.import_module(f"{__name__}.{_m.name}")


def registered() -> list[type[Detector]]:
    """Every detector class, in call order (``order``, then kind)."""
    return sorted(REGISTRY.values(), key=lambda c: (c.order, c.kind))


__all__ = ["Detector", "registered"]
