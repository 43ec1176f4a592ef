"""The HTTP edge: routes, the error translation table, start-up replay and shutdown."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from blocks.errors import StrataError, Unavailable
from blocks.meta import META_FILENAME, BlockMeta
from blocks.objstore.factory import open_store
from blocks.objstore.local import LocalStore
from gateway.auth import Access, install_auth
from gateway.config import GatewayConfig
from gateway.decode import (
    V2_PROTO,
    check_content_headers,
    decode_write_request,
    decompress_snappy,
)
from gateway.decode_v2 import decode_v2_request
from gateway.head import Head
from gateway.http import (
    NO_TELEMETRY,
    add_status_routes,
    error_response,
    install_error_handlers,
    read_body,
)
from gateway.metadata_api import EXEMPLARS_PATH, METADATA_PATH, MetadataAPI, add_metadata_routes
from gateway.metrics import GatewayMetrics, HeadCollector
from gateway.shipper import Shipper, queued_blocks
from gateway.tenants import tenant_from_headers
from gateway.wal import WAL
from gateway.wal_replay import replay
from gateway.write import Ingester, WriteOutcome
from querier.app import build_read_handler
from querier.engine import LocalView
from querier.head_source import HeadPostings, capture
from querier.read_api import READ_PATH

log = logging.getLogger(__name__)

WRITE_PATHS = ("/api/v1/write", "/api/v1/push", "/api/v1/receive")
FLUSH_PATH = "/api/v1/admin/flush"
# What each data endpoint asks of a credential when authentication is on; flush cuts
# every tenant's head, so it is an admin's.
AUTH_ROUTES = {
    **dict.fromkeys(WRITE_PATHS, Access.WRITE),
    READ_PATH: Access.READ,
    METADATA_PATH: Access.READ,
    EXEMPLARS_PATH: Access.READ,
    FLUSH_PATH: Access.ADMIN,
}
# The remote write 2.0 answer headers: what of the request is stored, by kind.
SAMPLES_WRITTEN = "X-Prometheus-Remote-Write-Samples-Written"
HISTOGRAMS_WRITTEN = "X-Prometheus-Remote-Write-Histograms-Written"
EXEMPLARS_WRITTEN = "X-Prometheus-Remote-Write-Exemplars-Written"


def written_headers(outcome: WriteOutcome | None) -> dict[str, str]:
    """The 2.0 written counts of an outcome (zeros when nothing was written)."""
    if outcome is None:
        return {SAMPLES_WRITTEN: "0", HISTOGRAMS_WRITTEN: "0", EXEMPLARS_WRITTEN: "0"}
    return {
        SAMPLES_WRITTEN: str(outcome.samples_written),
        HISTOGRAMS_WRITTEN: str(outcome.histograms_stored),
        EXEMPLARS_WRITTEN: str(outcome.exemplars_kept),
    }


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
        self.store = open_store(config.bucket)
        self.ingester = Ingester(
            config, self.head, self.wal, self.metrics, persist=True, bucket=self.store
        )
        self.queue_store = LocalStore(config.upload_dir)
        self.head_postings: dict[str, HeadPostings] = {}
        # (shipper.queue_changes, queued block metas by tenant) when last listed.
        self._queue_listing: tuple[int, dict[str, list[BlockMeta]]] | None = None
        self.reader = build_read_handler(
            config,
            self.store,
            registry,
            local_view=self.local_view,
            check_ready=self.check_readable,
        )
        self.shipper = Shipper(
            config,
            self.head,
            self.wal,
            self.ingester,
            self.store,
            self.metrics,
            on_uploaded=self.reader.engine.bucket_indexes.invalidate,
        )
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
        metrics = self.ingester.metadata.load()
        exemplars = self.ingester.exemplars.load(int(time.time() * 1000))
        log.info("metadata and exemplars loaded metrics=%d exemplars=%d", metrics, exemplars)
        self.wal.start()
        self.ready = True
        self.metrics.ready.set(1)

    def local_view(self, tenant: str) -> LocalView:
        """What this gateway holds for a tenant outside the bucket; call on the event loop."""
        head = self.head.tenants.get(tenant)
        view = None
        if head is not None:
            view = capture(head, self.shipper.in_flight.get(tenant))
        queued = self._queued_metas().get(tenant, [])
        postings = self.head_postings.setdefault(tenant, HeadPostings())
        return LocalView(view, postings, queued, self.queue_store)

    def _queued_metas(self) -> dict[str, list[BlockMeta]]:
        """The metas of the queued blocks by tenant, listed again only after the shipper
        changed the queue. A block it has uploaded may still be listed while it leaves the
        queue; readers then read it from the bucket (querier/engine.py)."""
        changes = self.shipper.queue_changes
        if self._queue_listing is None or self._queue_listing[0] != changes:
            metas: dict[str, list[BlockMeta]] = {}
            for tenant, block_dir in queued_blocks(self.config.upload_dir):
                try:
                    meta = BlockMeta.from_json((block_dir / META_FILENAME).read_bytes())
                except FileNotFoundError:
                    continue  # uploaded and removed from the queue since the listing
                metas.setdefault(tenant, []).append(meta)
            self._queue_listing = (changes, metas)
        return self._queue_listing[1]

    def stop(self) -> None:
        """Stop taking writes and make everything pending durable."""
        self.ready = False
        self.metrics.ready.set(0)
        self.wal.close()
        try:
            self.ingester.metadata.persist_all()
        except OSError as exc:
            log.warning("metadata not written at shutdown error=%s", exc)
        self.ingester.metadata.copy_all_to_bucket(self.store)
        self.store.close()
        self.queue_store.close()

    def check_readable(self) -> None:
        """Unavailable (503) while the head is rebuilt from the WAL: answers would miss data."""
        if not self.ready:
            raise Unavailable("replaying the WAL; not ready for reads yet")

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


def create_app(config: GatewayConfig, registry: CollectorRegistry) -> FastAPI:
    """The gateway's ASGI app; the WAL is replayed in the background at start-up.
    ConfigError for a bad auth file, before anything is opened."""

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

    app = FastAPI(
        title="Strata", lifespan=lifespan, docs_url=None, redoc_url=None, telemetry=NO_TELEMETRY
    )
    install_auth(app, config, registry, AUTH_ROUTES)
    gateway = Gateway(config, registry)
    app.state.gateway = gateway

    install_error_handlers(app)

    async def remote_write(request: Request) -> Response:
        # 2.0 answers carry the written counts once the content type is accepted, 4xx and
        # 5xx included; 1.0 answers none, as Prometheus's own receiver does.
        protocol = ""
        outcome = None
        try:
            gateway.check_writable()
            tenant = tenant_from_headers(request.headers, config.default_tenant)
            protocol = check_content_headers(request.headers)
            gateway.metrics.write_protocol_requests.labels(protocol).inc()
            limits = gateway.ingester.limits.of(tenant)
            body = await read_body(request, limits.max_request_bytes)
            raw = decompress_snappy(body, limits.max_decompressed_bytes)
            if protocol == V2_PROTO:
                decoded = decode_v2_request(raw)
            else:
                # Series this tenant's head knows are read without protobuf objects.
                known = gateway.head.tenants.get(tenant)
                decoded = decode_write_request(raw, known.ref_by_key if known else ())
            outcome = await gateway.ingester.write(tenant, decoded)
            outcome.raise_if_rejected()
        except StrataError as exc:
            gateway.metrics.requests.labels(str(exc.http_status)).inc()
            if protocol != V2_PROTO:
                raise
            if exc.http_status >= 500:
                log.warning("request failed path=%s error=%s", request.url.path, exc.reason)
            answer = error_response(exc)
            written = outcome if exc.http_status < 500 else None
            answer.headers.update(written_headers(written))
            return answer
        gateway.metrics.requests.labels("204").inc()
        headers = written_headers(outcome) if protocol == V2_PROTO else None
        return Response(status_code=204, headers=headers)

    # Plain Starlette routes: the handlers take the Request and nothing else, and
    # FastAPI's per-request parameter solving cost a small read a tenth of its time.
    for path in WRITE_PATHS:
        app.add_route(path, remote_write, methods=["POST"], include_in_schema=False)

    app.add_route(READ_PATH, gateway.reader.endpoint, methods=["POST"], include_in_schema=False)
    metadata_api = MetadataAPI(
        gateway.ingester.metadata,
        gateway.ingester.exemplars,
        default_tenant=config.default_tenant,
        check_ready=gateway.check_readable,
    )
    add_metadata_routes(app, metadata_api)

    @app.post(FLUSH_PATH, include_in_schema=False)
    async def flush() -> Response:
        # Before taking a gateway out of service, or to make recent data visible to
        # bucket-only queriers at once.
        gateway.check_writable()
        blocks = await gateway.shipper.flush()
        return JSONResponse({"uploadedBlocks": blocks})

    add_status_routes(app, registry, lambda: gateway.ready and not gateway.stopping)
    return app
