"""`strata compact`: open the bucket, run one pass or loop, serve /metrics while looping."""

from __future__ import annotations

import logging
import signal
from types import FrameType

from prometheus_client import start_http_server

from blocks.objstore.factory import bucket_label, open_existing_store
from compactor.config import CompactorConfig
from compactor.metrics import CompactorMetrics
from compactor.run import Compactor
from compactor.workspace import claimed_workspace
from gateway.config import listen_host_port
from gateway.process_metrics import process_registry

log = logging.getLogger(__name__)


def compact(config: CompactorConfig, *, loop: bool) -> int:
    """Run the compactor; the exit status (1 if the last pass left a tenant failed)."""
    registry = process_registry()
    metrics = CompactorMetrics(registry)
    with open_existing_store(config.bucket) as store, claimed_workspace(config.work_dir) as work:
        compactor = Compactor(store, config, metrics, work_dir=work)
        log.info(
            "compactor started bucket=%s holder=%s loop=%s",
            bucket_label(config.bucket),
            compactor.holder,
            loop,
        )
        if not loop:
            return 0 if compactor.run_pass().ok else 1
        host, port = listen_host_port(config.listen)
        server, thread = start_http_server(port, addr=host, registry=registry)

        def stop(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: stopping after the current step", signum)
            compactor.stop.set()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        try:
            compactor.run_loop()
        finally:
            server.shutdown()
            thread.join(timeout=5)
        return 0
