"""Running the app under uvicorn, with SIGTERM turning readiness off first."""

from __future__ import annotations

import logging
from types import FrameType

import uvicorn
from prometheus_client import CollectorRegistry

from blocks.objstore.factory import bucket_label
from gateway.app import Gateway, create_app
from gateway.config import GatewayConfig, listen_host_port

log = logging.getLogger(__name__)


class GatewayServer(uvicorn.Server):
    """uvicorn's server, reporting not-ready as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, gateway: Gateway) -> None:
        super().__init__(config)
        self.gateway = gateway

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Refuse new writes, then let uvicorn drain in-flight requests and stop."""
        log.info("stop signal received signal=%d", sig)
        self.gateway.stopping = True
        super().handle_exit(sig, frame)


def serve(config: GatewayConfig, *, query_only: bool = False) -> int:
    """Serve until a stop signal (`strata serve`, or `strata query` with query_only)."""
    host, port = listen_host_port(config.listen)
    if query_only:
        from querier.app import create_query_app

        app = create_query_app(config, CollectorRegistry())
    else:
        app = create_app(config, CollectorRegistry())
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(config.shutdown_timeout_s),
        lifespan="on",
    )
    if query_only:
        server: uvicorn.Server = uvicorn.Server(uv_config)
        log.info(
            "strata querier serving listen=%s bucket=%s", config.listen, bucket_label(config.bucket)
        )
    else:
        server = GatewayServer(uv_config, app.state.gateway)
        log.info("strata serving listen=%s data_dir=%s", config.listen, config.data_dir)
    server.run()
    return 0
