"""`strata query`: a read-only remote-read server over the bucket.

It holds no head and writes nothing, so any number of replicas can serve one bucket.
Blocks a gateway has uploaded show up once the tenant's bucket index is fetched again
(`--bucket-index-refresh-s`); data still in a gateway's head is that gateway's to serve.
GET /api/v1/metadata answers from the tenant's metadata copy in the bucket, fetched
again as often; /api/v1/query_exemplars answers 404: exemplars are only on gateways.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from blocks.objstore.base import ObjectStore
from blocks.objstore.factory import open_existing_store
from gateway.auth import Access, install_auth
from gateway.config import GatewayConfig
from gateway.http import NO_TELEMETRY, add_status_routes, install_error_handlers
from gateway.metadata_api import (
    EXEMPLARS_PATH,
    METADATA_PATH,
    BucketMetadataAPI,
    add_metadata_routes,
)
from gateway.metadata_store import BucketMetadata
from gateway.tenant_limits import Limits
from querier.engine import Engine, LocalView
from querier.index_files import IndexFiles
from querier.metrics import CacheCollector, QuerierMetrics
from querier.read_api import READ_PATH, ReadHandler

log = logging.getLogger(__name__)

# What each data path of the querier needs when auth is on: reading the tenant, as on
# `strata serve`.
AUTH_ROUTES = {READ_PATH: Access.READ, METADATA_PATH: Access.READ, EXEMPLARS_PATH: Access.READ}


def index_files(config: GatewayConfig) -> IndexFiles | None:
    """The disk cache of big block indexes the settings ask for, if any."""
    if config.index_cache_disk_bytes <= 0:
        return None
    root = Path(config.index_cache_dir or Path(config.data_dir) / "index-cache")
    try:
        return IndexFiles(root, config.index_cache_disk_bytes)
    except OSError as exc:
        # A cache: without it big indexes are decoded for every query, nothing is wrong.
        log.warning(
            "index_cache_dir unusable, big block indexes not kept dir=%s error=%s", root, exc
        )
        return None


def build_read_handler(
    config: GatewayConfig,
    store: ObjectStore,
    registry: CollectorRegistry,
    *,
    local_view: Callable[[str], LocalView | None] | None = None,
    check_ready: Callable[[], None] = lambda: None,
) -> ReadHandler:
    """The remote-read handler over `store` with the settings' limits and caches; inside
    `strata serve` also over what `local_view` gives of the gateway."""
    limits = Limits(config)
    engine = Engine(
        store,
        config.query_limits,
        index_cache_bytes=config.index_cache_bytes,
        index_refresh_s=config.bucket_index_refresh_s,
        index_max_age_ms=int(config.bucket_index_max_age_s * 1000),
        downsampled=config.query_downsampled,
        chunk_cache_bytes=config.chunk_cache_bytes,
        stream_cache_bytes=config.stream_cache_bytes,
        index_files=index_files(config),
    )
    registry.register(
        CacheCollector(
            {
                "index": engine.block_indexes,
                "index_files": engine.block_indexes.files,
                "chunks": engine.chunks,
                "stream": engine.encoded_chunks,
            }
        )
    )
    return ReadHandler(
        engine,
        config.query_limits,
        QuerierMetrics(registry),
        default_tenant=config.default_tenant,
        max_request_bytes=config.max_request_bytes,
        max_decompressed_bytes=config.max_decompressed_bytes,
        local_view=local_view,
        check_ready=check_ready,
        tenant_limits=lambda tenant, base: limits.of(tenant).query_limits(base),
    )


def create_query_app(config: GatewayConfig, registry: CollectorRegistry) -> FastAPI:
    """The querier's ASGI app."""
    store = open_existing_store(config.bucket)
    reader = build_read_handler(config, store, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            store.close()

    app = FastAPI(
        title="Strata querier",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        telemetry=NO_TELEMETRY,
    )
    install_error_handlers(app)
    install_auth(app, config, registry, AUTH_ROUTES)

    # Plain Starlette routes: the handlers take the Request and nothing else, and
    # FastAPI's per-request parameter solving cost a small read a tenth of its time.
    app.add_route(READ_PATH, reader.endpoint, methods=["POST"], include_in_schema=False)
    metadata_api = BucketMetadataAPI(
        BucketMetadata(store, refresh_s=config.bucket_index_refresh_s),
        default_tenant=config.default_tenant,
    )
    add_metadata_routes(app, metadata_api)
    add_status_routes(app, registry, lambda: True)
    return app
