"""`strata serve` exports its process metrics (memory, CPU, the collector) at /metrics."""

from __future__ import annotations

from tests.e2e.servers import StrataServer
from tests.support.process_metrics import check_process_metrics


def test_serve_reports_its_resident_memory_cpu_and_collections(strata: StrataServer) -> None:
    check_process_metrics(strata.metrics(), strata.pid)
