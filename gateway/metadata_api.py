"""GET /api/v1/metadata and GET|POST /api/v1/query_exemplars in Prometheus's JSON shape.

Both answer for the tenant of X-Scope-OrgID (the read routes' rule). `strata serve`
answers from what its gateway keeps (gateway/metadata_store.py, gateway/exemplar_store.py);
`strata query` answers metadata from the bucket copy and exemplars, which live only on
the gateways' disks, with a 404 saying so. Errors come as Prometheus writes them:
`{"status": "error", "errorType": ..., "error": ...}`. Parameters, examples and why 404:
docs/metadata-exemplars.md.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from blocks.errors import InvalidRequest, NotFound, StrataError, Unavailable
from gateway.exemplar_store import Exemplar, ExemplarStore
from gateway.http import read_body
from gateway.metadata_store import BucketMetadata, MetadataStore
from gateway.selector import parse_selector
from gateway.tenants import tenant_from_headers

METADATA_PATH = "/api/v1/metadata"
EXEMPLARS_PATH = "/api/v1/query_exemplars"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# A form body holds a selector and two times: far below this.
MAX_FORM_BYTES = 1 << 20
MIN_TIME_MS = -(1 << 63)
MAX_TIME_MS = (1 << 63) - 1
# Prometheus's errorType of each status Strata answers here.
ERROR_TYPES = {400: "bad_data", 404: "not_found", 503: "unavailable"}
EXEMPLARS_ELSEWHERE = (
    "exemplars are served by `strata serve` (each gateway keeps those it received, on its "
    "own disk); `strata query` reads only the bucket: ask the gateway"
)


def error_json(exc: StrataError) -> Response:
    """A Strata error the way Prometheus's HTTP API reports errors."""
    headers = {}
    if isinstance(exc, Unavailable):
        headers["Retry-After"] = str(exc.retry_after_s)
    body = {
        "status": "error",
        "errorType": ERROR_TYPES.get(exc.http_status, "bad_data"),
        "error": exc.reason,
    }
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


@dataclass(frozen=True, slots=True)
class MetadataQuery:
    """The tenant and parameters of a GET /api/v1/metadata."""

    tenant: str
    metric: str | None
    limit: int
    limit_per_metric: int


def metadata_query(request: Request, default_tenant: str) -> MetadataQuery:
    """What a metadata request asks for; InvalidRequest for a bad tenant or parameter."""
    tenant = tenant_from_headers(request.headers, default_tenant)
    params = dict(request.query_params)
    return MetadataQuery(
        tenant,
        params.get("metric") or None,
        int_param(params, "limit"),
        int_param(params, "limit_per_metric"),
    )


def int_param(params: Mapping[str, str], name: str) -> int:
    """An optional integer parameter; 0 when absent (no limit)."""
    raw = params.get(name, "")
    if not raw:
        return 0
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(
            f"invalid parameter {name!r}: {raw[:64]!r} is not an integer"
        ) from None


def time_param(params: Mapping[str, str], name: str, default_ms: int) -> int:
    """A time as Prometheus takes it (Unix seconds, fractions allowed, or RFC 3339), in
    milliseconds; `default_ms` when absent."""
    raw = params.get(name, "")
    if not raw:
        return default_ms
    try:
        seconds = float(raw)
    except ValueError:
        return rfc3339_ms(name, raw)
    if not math.isfinite(seconds):
        return MAX_TIME_MS if seconds > 0 else MIN_TIME_MS
    return max(MIN_TIME_MS, min(MAX_TIME_MS, round(seconds * 1000)))


def rfc3339_ms(name: str, raw: str) -> int:
    """An RFC 3339 time parameter in milliseconds."""
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(
            f"invalid parameter {name!r}: cannot parse {raw[:64]!r} to a valid timestamp"
        ) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"invalid parameter {name!r}: {raw[:64]!r} has no time zone")
    return int(moment.timestamp() * 1000)


def format_value(value: float) -> str:
    """A float as Prometheus's API writes sample values (Go's 'f', -1 format)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(np.format_float_positional(value, unique=True, trim="-"))


def format_timestamp(ms: int) -> float | int:
    """Milliseconds as the seconds number Prometheus's API writes."""
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


def exemplar_json(exemplar: Exemplar) -> dict[str, Any]:
    """One exemplar in query_exemplars' shape."""
    return {
        "labels": dict(exemplar.labels),
        "value": format_value(exemplar.value),
        "timestamp": format_timestamp(exemplar.timestamp),
    }


class MetadataAPI:
    """The two read endpoints over one gateway's metadata and exemplar stores."""

    def __init__(
        self,
        metadata: MetadataStore,
        exemplars: ExemplarStore,
        *,
        default_tenant: str,
        check_ready: Callable[[], None],
    ) -> None:
        self.metadata_store = metadata
        self.exemplar_store = exemplars
        self.default_tenant = default_tenant
        self.check_ready = check_ready

    async def metadata(self, request: Request) -> Response:
        """GET /api/v1/metadata?metric=&limit=&limit_per_metric="""
        try:
            self.check_ready()
            asked = metadata_query(request, self.default_tenant)
            data = self.metadata_store.query(
                asked.tenant, asked.metric, asked.limit, asked.limit_per_metric
            )
        except StrataError as exc:
            return error_json(exc)
        return JSONResponse({"status": "success", "data": data})

    async def query_exemplars(self, request: Request) -> Response:
        """GET|POST /api/v1/query_exemplars?query=&start=&end="""
        try:
            self.check_ready()
            tenant = tenant_from_headers(request.headers, self.default_tenant)
            params = await self._params(request)
            query = params.get("query", "")
            if not query:
                raise InvalidRequest("invalid parameter 'query': a series selector is needed")
            matchers = parse_selector(query)
            start = time_param(params, "start", MIN_TIME_MS)
            end = time_param(params, "end", MAX_TIME_MS)
            if end < start:
                raise InvalidRequest("end timestamp must not be before start time")
        except StrataError as exc:
            return error_json(exc)

        def accepts(series: tuple[tuple[str, str], ...]) -> bool:
            labels = dict(series)
            return all(m.matches(labels) for m in matchers)

        now_ms = int(time.time() * 1000)
        data = [
            {"seriesLabels": dict(series), "exemplars": [exemplar_json(e) for e in found]}
            for series, found in self.exemplar_store.select(tenant, accepts, start, end, now_ms)
        ]
        return JSONResponse({"status": "success", "data": data})

    async def _params(self, request: Request) -> dict[str, str]:
        """Query-string parameters, and for a POST those of its form body (which win)."""
        params = dict(request.query_params)
        if request.method == "POST":
            media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
            body = await read_body(request, MAX_FORM_BYTES)
            if body and media != FORM_MEDIA_TYPE:
                raise InvalidRequest(f"a POST body must be {FORM_MEDIA_TYPE}")
            try:
                form = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise InvalidRequest("form body is not UTF-8") from None
            params.update({key: values[-1] for key, values in form.items()})
        return params


class BucketMetadataAPI:
    """The same two endpoints on `strata query`: metadata from the bucket copy, exemplars
    refused (they are not in the bucket)."""

    def __init__(self, metadata: BucketMetadata, *, default_tenant: str) -> None:
        self.bucket_metadata = metadata
        self.default_tenant = default_tenant

    async def metadata(self, request: Request) -> Response:
        """GET /api/v1/metadata?metric=&limit=&limit_per_metric="""
        try:
            asked = metadata_query(request, self.default_tenant)
            # A stale copy is fetched again: object store I/O, off the event loop.
            data = await asyncio.to_thread(
                self.bucket_metadata.query,
                asked.tenant,
                asked.metric,
                asked.limit,
                asked.limit_per_metric,
            )
        except StrataError as exc:
            return error_json(exc)
        return JSONResponse({"status": "success", "data": data})

    async def query_exemplars(self, request: Request) -> Response:
        """GET|POST /api/v1/query_exemplars: 404, exemplars are the gateways' to serve."""
        return error_json(NotFound(EXEMPLARS_ELSEWHERE))


def add_metadata_routes(app: FastAPI, api: MetadataAPI | BucketMetadataAPI) -> None:
    """GET /api/v1/metadata and GET|POST /api/v1/query_exemplars, answered by `api`."""
    app.add_api_route(METADATA_PATH, api.metadata, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        EXEMPLARS_PATH, api.query_exemplars, methods=["GET", "POST"], include_in_schema=False
    )
