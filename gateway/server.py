"""Running the app under uvicorn, with SIGTERM turning readiness off first."""

from __future__ import annotations

import gc
import logging
import ssl
from pathlib import Path
from types import FrameType

import uvicorn

from blocks.objstore.factory import bucket_label
from gateway.app import Gateway, create_app
from gateway.config import ConfigError, GatewayConfig, listen_host_port
from gateway.process_metrics import process_registry

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


def check_tls_files(config: GatewayConfig) -> None:
    """When a certificate is configured, load it with its key now, so that a bad file is
    a ConfigError naming it rather than a traceback from the server."""
    if not config.tls_cert_file:
        return
    for key, path in (
        ("tls_cert_file", config.tls_cert_file),
        ("tls_key_file", config.tls_key_file),
    ):
        if not Path(path).is_file():
            raise ConfigError(key, path, "no such file")
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            config.tls_cert_file, config.tls_key_file, password=lambda: b""
        )
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            "tls_cert_file", config.tls_cert_file, f"does not load with tls_key_file: {exc}"
        ) from None


def serve(config: GatewayConfig, *, query_only: bool = False) -> int:
    """Serve until a stop signal (`strata serve`, or `strata query` with query_only)."""
    host, port = listen_host_port(config.listen)
    check_tls_files(config)
    if query_only:
        from querier.app import create_query_app

        app = create_query_app(config, process_registry())
    else:
        app = create_app(config, process_registry())
    uv_config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(config.shutdown_timeout_s),
        lifespan="on",
        http="httptools",
        loop="uvloop",
        ssl_certfile=config.tls_cert_file or None,
        ssl_keyfile=config.tls_key_file or None,
    )
    scheme = "https" if config.tls_cert_file else "http"
    if query_only:
        server: uvicorn.Server = uvicorn.Server(uv_config)
        log.info(
            "strata querier serving listen=%s scheme=%s bucket=%s",
            config.listen,
            scheme,
            bucket_label(config.bucket),
        )
    else:
        server = GatewayServer(uv_config, app.state.gateway)
        log.info(
            "strata serving listen=%s scheme=%s data_dir=%s",
            config.listen,
            scheme,
            config.data_dir,
        )
    freeze_startup_objects()
    server.run()
    return 0


def freeze_startup_objects() -> None:
    """Keep the objects of imports and app setup out of later full collections.

    They live as long as the process: tens of thousands of functions, classes and
    pydantic models that every full (generation 2) collection would walk again, a
    pause of 20-30 ms on the event loop each time, to find nothing. Frozen, those
    pauses take about 1 ms. Garbage made so far is collected first, so that none of
    it is kept."""
    gc.collect()
    gc.freeze()
