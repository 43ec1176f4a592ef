"""HTTP pieces every Strata server shares: bounded bodies, the error table, health and
/metrics routes. `strata serve` (gateway/app.py) and `strata query` (querier/app.py)
are both built from them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from fastapi.telemetry import TelemetryConfig
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from blocks.errors import RequestTooLarge, StrataError, Unavailable

log = logging.getLogger(__name__)

HEALTHY_PATH = "/-/healthy"
READY_PATH = "/-/ready"
METRICS_PATH = "/metrics"

# Strata's own /metrics say what it does. FastAPI's built-in OpenTelemetry hooks, left on,
# look for configured providers on every request (5 % of a small remote read) to find none.
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    # isdigit() alone accepts digits int() refuses ('²'); a Content-Length is ASCII.
    if declared is not None and declared.isascii() and declared.isdigit() and int(declared) > limit:
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


def install_error_handlers(app: FastAPI) -> None:
    """StrataError answers its status and one-line reason; anything else a bare 500."""

    @app.exception_handler(StrataError)
    async def strata_error(request: Request, exc: StrataError) -> Response:
        if exc.http_status >= 500:
            log.warning("request failed path=%s error=%s", request.url.path, exc.reason)
        return error_response(exc)

    @app.exception_handler(Exception)
    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.error("unexpected error path=%s", request.url.path, exc_info=exc)
        return PlainTextResponse("internal error\n", status_code=500)


def add_status_routes(app: FastAPI, registry: CollectorRegistry, ready: Callable[[], bool]) -> None:
    """/-/healthy (the process answers), /-/ready (it does its job), /metrics."""

    @app.get(HEALTHY_PATH, include_in_schema=False)
    async def healthy() -> Response:
        return PlainTextResponse("Strata is Healthy.\n")

    @app.get(READY_PATH, include_in_schema=False)
    async def is_ready() -> Response:
        if ready():
            return PlainTextResponse("Strata is Ready.\n")
        return PlainTextResponse("Strata is not ready.\n", status_code=503)

    @app.get(METRICS_PATH, include_in_schema=False)
    async def metrics() -> Response:
        # A route, not a mounted app: a mount answers /metrics with a redirect to /metrics/.
        body = await asyncio.to_thread(generate_latest, registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)
