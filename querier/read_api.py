"""POST /api/v1/read: Prometheus's remote read, SAMPLES and STREAMED_XOR_CHUNKS.

Every query of a request is planned (selected and checked against the limits) before a
byte is answered, so a refused query gets a clear status instead of a broken stream.
The SAMPLES answer is built whole (bounded by query_max_response_bytes) and snappy
compressed; the streamed answer is written a batch of series at a time. Wire formats:
docs/remote-read.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

import numpy as np
import snappy
from fastapi import Request, Response
from google.protobuf.message import DecodeError

from blocks.errors import (
    InvalidRequest,
    QueryLimitExceeded,
    StrataError,
    Unavailable,
    UnsupportedMediaType,
)
from gateway.decode import decompress_snappy, wire_type_error
from gateway.http import read_body
from gateway.tenants import tenant_from_headers
from proto import remote_pb2
from querier.engine import Engine, LocalView, QueryPlan
from querier.limits import (
    Deadline,
    QueryLimits,
    check_query_count,
    check_range,
    check_request_counts,
)
from querier.matchers import Matcher, matchers_from_proto
from querier.metrics import QuerierMetrics
from querier.resolution import QueryHints
from querier.samples_response import Bytes, query_result_fields, read_response
from querier.stream_chunks import encode_pieces, piece_samples, series_fields, series_frames
from querier.stream_response import FrameStream

log = logging.getLogger(__name__)

READ_PATH = "/api/v1/read"
SAMPLES_CONTENT_TYPE = "application/x-protobuf"
STREAMED_CONTENT_TYPE = "application/x-streamed-protobuf; proto=prometheus.ChunkedReadResponse"
SAMPLES = remote_pb2.ReadRequest.SAMPLES
STREAMED = remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS
# A streamed answer this small is sent as one body once it is ready. Streaming it would
# cost a thread trip per batch and a task watching for a disconnect: for a small read,
# more than the read. Larger ones stream, holding about this much at a time.
WHOLE_ANSWER_BYTES = 2 << 20


def check_read_headers(headers: Mapping[str, str]) -> None:
    """Remote read bodies are snappy-compressed protobuf; refuse anything else (415)."""
    encoding = headers.get("content-encoding", "snappy").strip().lower()
    if encoding != "snappy":
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding!r}: remote read needs snappy"
        )
    media = headers.get("content-type", SAMPLES_CONTENT_TYPE).partition(";")[0].strip().lower()
    if media != SAMPLES_CONTENT_TYPE:
        raise UnsupportedMediaType(f"unsupported Content-Type {media!r} for remote read")


def parse_read_request(
    body: bytes, max_decompressed_bytes: int, limits: QueryLimits
) -> remote_pb2.ReadRequest:
    """The ReadRequest of a body; 400 for bad snappy or protobuf (a known field with the
    wrong wire type included), 413 for a bomb, 422 for too many queries."""
    data = decompress_snappy(body, max_decompressed_bytes)
    request = remote_pb2.ReadRequest()
    try:
        request.ParseFromString(data)
    except DecodeError as exc:
        raise InvalidRequest(f"body is not a remote-read ReadRequest: {exc}") from None
    check_query_count(limits, len(request.queries))
    error = wire_type_error(request)
    if error is not None:
        raise InvalidRequest(f"body is not a remote-read ReadRequest: {error}")
    return request


def response_type(request: remote_pb2.ReadRequest) -> int:
    """The first accepted type Strata speaks (both), SAMPLES when none is named."""
    for accepted in request.accepted_response_types:
        if accepted in (SAMPLES, STREAMED):
            return int(accepted)
    if request.accepted_response_types:
        raise InvalidRequest(
            f"no supported response type in {list(request.accepted_response_types)}"
        )
    return int(SAMPLES)


def hints_of(query: remote_pb2.Query) -> QueryHints | None:
    """The hints Prometheus sent with a query (it sends them for PromQL selectors)."""
    if not query.HasField("hints"):
        return None
    hints = query.hints
    return QueryHints(step_ms=hints.step_ms, range_ms=hints.range_ms, func=hints.func)


class ReadHandler:
    """Answers remote-read requests for one process (`strata serve` or `strata query`)."""

    def __init__(
        self,
        engine: Engine,
        limits: QueryLimits,
        metrics: QuerierMetrics,
        *,
        default_tenant: str,
        max_request_bytes: int,
        max_decompressed_bytes: int,
        local_view: Callable[[str], LocalView | None] | None = None,
        check_ready: Callable[[], None] = lambda: None,
        tenant_limits: Callable[[str, QueryLimits], QueryLimits] | None = None,
    ) -> None:
        self.engine = engine
        self.limits = limits
        self.tenant_limits = tenant_limits
        self.metrics = metrics
        self.default_tenant = default_tenant
        self.max_request_bytes = max_request_bytes
        self.max_decompressed_bytes = max_decompressed_bytes
        self.local_view = local_view
        self.check_ready = check_ready
        self._slots = asyncio.Semaphore(limits.concurrency)

    def limits_of(self, tenant: str) -> QueryLimits:
        """The query limits of `tenant`: the settings', with its overrides."""
        if self.tenant_limits is None:
            return self.limits
        return self.tenant_limits(tenant, self.limits)

    async def endpoint(self, request: Request) -> Response:
        """The route: tenant, bounded body, answer; every outcome counted by status."""
        try:
            self.check_ready()
            tenant = tenant_from_headers(request.headers, self.default_tenant)
            body = await read_body(request, self.max_request_bytes)
            response = await self.handle(tenant, request, body)
        except StrataError as exc:
            self.metrics.requests.labels(str(exc.http_status)).inc()
            if isinstance(exc, QueryLimitExceeded):
                self.metrics.refused.labels(exc.limit).inc()
            raise
        self.metrics.requests.labels("200").inc()
        return response

    async def handle(self, tenant: str, request: Request, body: bytes) -> Response:
        """Answer one request; StrataError for the app's error handler otherwise."""
        started = time.monotonic()
        limits = self.limits_of(tenant)
        deadline = Deadline(limits.timeout_s)
        check_read_headers(request.headers)
        read = parse_read_request(body, self.max_decompressed_bytes, limits)
        kind = response_type(read)
        queries = [(i, q, matchers_from_proto(i, q.matchers)) for i, q in enumerate(read.queries)]
        for i, query, _ in queries:
            check_range(limits, i, query.start_timestamp_ms, query.end_timestamp_ms)
        slot = await self._acquire(deadline)
        try:
            # Captured here, on the event loop where the head changes: a consistent view.
            local = self.local_view(tenant) if self.local_view is not None else None
            # Planning and the answer (a streamed answer's first frames) in one trip to a
            # worker thread: each trip costs a thread hand-off, a large share of a small
            # query's time.
            if kind == SAMPLES:
                payload = await asyncio.to_thread(
                    self._planned_samples, _Job(tenant, queries, local, deadline)
                )
                slot.release()
                self.metrics.observe("samples", time.monotonic() - started)
                return Response(
                    payload,
                    media_type=SAMPLES_CONTENT_TYPE,
                    headers={"Content-Encoding": "snappy"},
                )
            head, rest = await asyncio.to_thread(
                self._planned_frames, _Job(tenant, queries, local, deadline)
            )
        except BaseException:
            slot.release()
            raise
        if rest is None:
            # The whole answer came with the first trip: one body, no stream to run.
            slot.release()
            self.metrics.observe("streamed", time.monotonic() - started)
            return Response(b"".join(head), media_type=STREAMED_CONTENT_TYPE)

        def on_end(completed: bool) -> None:
            slot.release()
            if completed:
                self.metrics.observe("streamed", time.monotonic() - started)

        return FrameStream(b"".join(head), rest, STREAMED_CONTENT_TYPE, on_end)

    def _planned_samples(self, job: _Job) -> bytes:
        return self._samples_response(self._plan(job), job.deadline)

    def _planned_frames(self, job: _Job) -> tuple[list[bytes], Iterator[bytes] | None]:
        """The frames of the first batches, up to WHOLE_ANSWER_BYTES, in pieces, and an
        iterator over the rest, a batch's bytes at a time (None when there is none): most
        answers are whole by then, and a longer one starts with those in hand."""
        plans = self._plan(job)
        batches = (pieces for plan in plans for pieces in self._frames(plan, job.deadline))
        head: list[bytes] = []
        size = 0
        for pieces in batches:
            head += pieces
            size += sum(map(len, pieces))
            if size >= WHOLE_ANSWER_BYTES:
                return head, (b"".join(pieces) for pieces in batches)
        return head, None

    def _plan(self, job: _Job) -> list[QueryPlan]:
        """Every query planned, each within the limits and all of them together."""
        tenant, queries, local, deadline = job
        limits = self.limits_of(tenant)
        plans = []
        series = samples = 0
        for i, query, matchers in queries:
            plan = self.engine.plan(
                tenant,
                i,
                matchers,
                query.start_timestamp_ms,
                query.end_timestamp_ms,
                local,
                deadline,
                hints_of(query),
                limits,
            )
            series += len(plan.series)
            samples += plan.samples
            check_request_counts(limits, series, samples)
            plans.append(plan)
        self.metrics.series.inc(sum(len(p.series) for p in plans))
        for plan in plans:
            self.metrics.count_blocks(plan.blocks)
        return plans

    async def _acquire(self, deadline: Deadline) -> _Slot:
        """A slot among query_concurrency, waiting at most until the deadline."""
        try:
            if self._slots.locked():
                wait_s = max(0.0, deadline.at - time.monotonic())
                await asyncio.wait_for(self._slots.acquire(), wait_s)
            else:
                await self._slots.acquire()  # free: no wait, whatever the deadline
        except TimeoutError:
            self.metrics.refused.labels("query_concurrency").inc()
            raise Unavailable(
                f"too many remote-read requests: {self.limits.concurrency} running "
                "(query_concurrency) and no slot freed in time"
            ) from None
        self.metrics.in_flight.inc()
        return _Slot(self)

    def _release(self) -> None:
        self.metrics.in_flight.dec()
        self._slots.release()

    def _samples_response(self, plans: list[QueryPlan], deadline: Deadline) -> bytes:
        results = []
        size = 0
        for plan in plans:
            fields: list[Bytes] = []
            for batch in self.engine.series_batches(plan, deadline):
                batch_fields = query_result_fields(
                    [(labels, part, histograms) for labels, part, (_, histograms) in batch]
                )
                size += sum(map(len, batch_fields))
                if size > self.limits.max_response_bytes:
                    raise QueryLimitExceeded(
                        f"query {plan.index}: the answer passes "
                        f"{self.limits.max_response_bytes} bytes; ask for "
                        "STREAMED_XOR_CHUNKS or a narrower query",
                        limit="query_max_response_bytes",
                    )
                self.metrics.samples.inc(sum(len(ts) + len(h) for _, (ts, _), (_, h) in batch))
                fields += batch_fields
            results.append(fields)
        return bytes(snappy.compress(read_response(results)))

    def _frames(self, plan: QueryPlan, deadline: Deadline) -> Iterator[list[bytes]]:
        """Frames of one query, a batch of series at a time, in pieces (series_frames)."""
        for batch in self.engine.piece_batches(plan, deadline):
            # Series with histograms are cut by kind and time (series_fields); the others'
            # pieces are encoded together.
            fields = encode_pieces([[] if len(h[0]) else pieces for _, pieces, h in batch])
            out = []
            for (labels, pieces, histograms), own in zip(batch, fields, strict=True):
                samples = sum(piece_samples(p) for p in pieces)
                if len(histograms[0]):
                    floats = pieces[0] if pieces else (np.zeros(0, np.int64), np.zeros(0))
                    assert isinstance(floats, tuple)  # merged samples, not stored chunks
                    own = series_fields(floats, histograms)
                    samples += len(histograms[0])
                self.metrics.samples.inc(samples)
                out.extend(series_frames(plan.index, labels, own, self.limits.max_frame_bytes))
            yield out


class _Job(NamedTuple):
    """One request's queries, ready to plan off the event loop."""

    tenant: str
    queries: list[tuple[int, remote_pb2.Query, list[Matcher]]]
    local: LocalView | None
    deadline: Deadline


class _Slot:
    """One taken concurrency slot, given back exactly once whoever releases it."""

    def __init__(self, handler: ReadHandler) -> None:
        self._handler: ReadHandler | None = handler

    def release(self) -> None:
        if self._handler is not None:
            self._handler._release()
            self._handler = None
