"""The HTTP edge: routes, the error translation table, start-up replay and shutdown."""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from blocks.errors import RequestTooLarge, StrataError, Unavailable
from blocks.objstore.factory import open_store
from gateway.config import GatewayConfig
from gateway.decode import check_content_headers, decode_write_request, decompress_snappy
from gateway.head import Head
from gateway.metrics import GatewayMetrics, HeadCollector
from gateway.shipper import Shipper
from gateway.tenants import tenant_from_headers
from gateway.wal import WAL
from gateway.wal_replay import replay
from gateway.write import Ingester

log = logging.getLogger(__name__)

WRITE_PATHS = ("/api/v1/write", "/api/v1/push", "/api/v1/receive")


class Gateway:
    """The parts of a running gateway, built once from the configuration."""

    def __init__(self, config: GatewayConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.metrics = GatewayMetrics(registry)
        self.head = Head(max_bytes=config.head_max_bytes, freeze_samples=config.head_freeze_samples)
        self.wal = WAL(
            config.wal_dir,
            segment_bytes=config.wal_segment_bytes,
            fsync=config.wal_fsync,
            metrics=self.metrics,
        )
        self.ingester = Ingester(config, self.head, self.wal, self.metrics)
        self.store = open_store(config.bucket)
        self.shipper = Shipper(config, self.head, self.wal, self.ingester, self.store, self.metrics)
        registry.register(HeadCollector(self.head, self.wal.size, self.shipper.queue_size))
        self.ready = False
        self.stopping = False

    def recover(self) -> None:
        """Replay the WAL into the head, then open the WAL for writing."""
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        remove_partial_blocks(self.config.upload_dir)
        report = replay(self.config.wal_dir, self.head, self.metrics)
        log.info(
            "wal replayed segments=%d records=%d samples=%d damaged=%d",
            report.segments,
            report.records,
            report.samples,
            len(report.damage),
        )
        self.wal.start()
        self.ready = True
        self.metrics.ready.set(1)

    def stop(self) -> None:
        """Stop taking writes and make everything pending durable."""
        self.ready = False
        self.metrics.ready.set(0)
        self.wal.close()
        self.store.close()

    def check_writable(self) -> None:
        """Unavailable (503) while replaying or shutting down."""
        if self.stopping:
            raise Unavailable("shutting down")
        if not self.ready:
            raise Unavailable("replaying the WAL; not ready for writes yet")


def remove_partial_blocks(upload_dir: Path) -> None:
    """Blocks whose build a crash cut short (still named .tmp) are rebuilt from the WAL."""
    for partial in upload_dir.glob("*/*.tmp"):
        log.info("removing partial block dir=%s", partial)
        shutil.rmtree(partial, ignore_errors=True)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"body of {declared} bytes is over the limit of {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def error_response(exc: StrataError) -> Response:
    """The one translation from Strata's errors to HTTP answers."""
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    return PlainTextResponse(exc.reason + "\n", status_code=exc.http_status, headers=headers)


def create_app(config: GatewayConfig, registry: CollectorRegistry) -> FastAPI:
    """The gateway's ASGI app; the WAL is replayed in the background at start-up."""
    gateway = Gateway(config, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop_shipping = asyncio.Event()

        async def recover_then_ship() -> None:
            await asyncio.to_thread(gateway.recover)
            await gateway.shipper.run(stop_shipping)

        background = asyncio.create_task(recover_then_ship())
        try:
            yield
        finally:
            gateway.stopping = True
            stop_shipping.set()
            await background
            await asyncio.to_thread(gateway.stop)

    app = FastAPI(title="Strata", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.gateway = gateway

    @app.exception_handler(StrataError)
    async def strata_error(request: Request, exc: StrataError) -> Response:
        if exc.http_status >= 500:
            log.warning("request failed path=%s error=%s", request.url.path, exc.reason)
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("unexpected error path=%s", request.url.path, exc_info=exc)
        return PlainTextResponse("internal error\n", status_code=500)

    async def remote_write(request: Request) -> Response:
        try:
            gateway.check_writable()
            tenant = tenant_from_headers(request.headers, config.default_tenant)
            check_content_headers(request.headers)
            body = await read_body(request, config.max_request_bytes)
            decoded = decode_write_request(decompress_snappy(body, config.max_decompressed_bytes))
            outcome = await gateway.ingester.write(tenant, decoded)
            outcome.raise_if_rejected()
        except StrataError as exc:
            gateway.metrics.requests.labels(str(exc.http_status)).inc()
            raise
        gateway.metrics.requests.labels("204").inc()
        return Response(status_code=204)

    for path in WRITE_PATHS:
        app.add_api_route(path, remote_write, methods=["POST"], include_in_schema=False)

    @app.get("/-/healthy", include_in_schema=False)
    async def healthy() -> Response:
        return PlainTextResponse("Strata is Healthy.\n")

    @app.get("/-/ready", include_in_schema=False)
    async def ready() -> Response:
        if gateway.ready and not gateway.stopping:
            return PlainTextResponse("Strata is Ready.\n")
        return PlainTextResponse("Strata is not ready.\n", status_code=503)

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        # A route, not a mounted app: a mount answers /metrics with a redirect to /metrics/.
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
