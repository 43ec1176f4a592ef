"""The registry every Strata process starts from: its own process metrics already in it."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector


def process_registry() -> CollectorRegistry:
    """A registry holding the process's own metrics: resident memory, CPU seconds and open
    files (process_*), the Python version (python_info) and the garbage collector's work
    (python_gc_*), as every Prometheus client library exports them. The app's metrics
    are registered on it beside them; the global default registry stays unused."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
