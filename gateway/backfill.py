"""`strata import`: backfill a tenant from a Prometheus over its remote_read API.

The range is taken one 2 h window at a time (the gateway's block windows): one
streamed remote-read request per window, series written into a block as they arrive
(Prometheus streams them in label order, the order a block keeps), the block uploaded
meta.json last and added to the bucket index. Native histograms come as Prometheus's
HISTOGRAM / FLOAT_HISTOGRAM chunks (2.42's SAMPLES answer leaves them out; later releases
carry them as messages there, taken too) and are stored as the messages the chunks decode
to: every field, reset hints as the chunks give them. A window's block id is derived from
the tenant, the source and the window, with the window's start as its ULID time, so:

- an interrupted import run again finds the windows it finished (their meta.json is
  there) and skips them: nothing is imported twice;
- where the same window also holds samples the gateway received, the gateway's blocks
  are newer and win a conflicting timestamp (docs/remote-read.md: newest place wins);
  exact duplicates are read once and merged away by the compactor.

Details and examples: docs/operations.md#importing-from-prometheus.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import snappy

from blocks.bucket_index import add_blocks
from blocks.errors import InvalidRequest, StrataError, Unavailable
from blocks.failpoints import failpoint
from blocks.histogram_codec import canonical_histogram
from blocks.meta import META_FILENAME
from blocks.objstore.base import ObjectStore
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter, OutOfOrder
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.validate import format_labels
from proto import remote_pb2, types_pb2
from querier.histogram_chunk import FLOAT_HISTOGRAM, HISTOGRAM, decode_histogram_chunk
from querier.stream_frames import iter_responses
from querier.xor_chunk import decode_xor_chunk

log = logging.getLogger(__name__)

STREAMED_TYPE = "application/x-streamed-protobuf"
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
    "User-Agent": "strata-import",
}
# Prometheus answers a window of a busy server in seconds; a stuck one is a failure.
READ_TIMEOUT_S = 300.0
# Frames Prometheus sends are at most 1 MiB by default (--storage.remote.read-max-bytes-in-frame).
MAX_FRAME_BYTES = 64 << 20
MATCHER = re.compile(r"^([^=!~]+)(=~|!~|!=|=)(.*)$")
MATCH_TYPES = {
    "=": types_pb2.LabelMatcher.EQ,
    "!=": types_pb2.LabelMatcher.NEQ,
    "=~": types_pb2.LabelMatcher.RE,
    "!~": types_pb2.LabelMatcher.NRE,
}
Labels = tuple[tuple[str, str], ...]
# One series' histograms as they arrive: (timestamp, serialized Histogram message).
HistogramRows = list[tuple[int, bytes]]


class SourceError(Unavailable):
    """The Prometheus read from failed or answered something unusable; run again later."""


@dataclass(frozen=True, slots=True)
class SourceSeries:
    """One series of a window as the source sent it, trimmed to the window: float samples
    and native histograms, each time-sorted with every timestamp once."""

    labels: Labels
    ts: np.ndarray
    values: np.ndarray
    histogram_ts: np.ndarray
    histograms: list[bytes]


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What one window's block holds."""

    series: int
    samples: int
    histograms: int


@dataclass(slots=True)
class ImportSummary:
    """What an import did."""

    windows: int = 0
    imported: int = 0
    skipped: int = 0
    empty: int = 0
    series: int = 0
    samples: int = 0
    histograms: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """The import in one line."""
        return (
            f"import done: windows={self.windows} imported={self.imported} "
            f"already_there={self.skipped} empty={self.empty} series={self.series} "
            f"samples={self.samples} histograms={self.histograms} "
            f"seconds={self.seconds:.1f}"
        )


def parse_matcher(text: str) -> types_pb2.LabelMatcher:
    """`name=value`, `name!=value`, `name=~regex`, `name!~regex` as a remote-read matcher."""
    found = MATCHER.match(text)
    if found is None:
        raise InvalidRequest(f"not a matcher (NAME=VALUE, !=, =~ or !~): {text!r}")
    name, op, value = found.groups()
    return types_pb2.LabelMatcher(type=MATCH_TYPES[op], name=name.strip(), value=value)


def import_block_id(tenant: str, source: str, mint: int, maxt: int) -> str:
    """The block id of one window's import: the same inputs give the same id."""
    digest = hashlib.sha256(f"{tenant}\0{source}\0{mint}\0{maxt}".encode()).digest()
    return new_ulid(now_ms=mint, randomness=digest[:10])


def windows(mint: int, maxt: int) -> Iterator[tuple[int, int]]:
    """[start, end) of each 2 h window of [mint, maxt), clipped to it."""
    start = mint - mint % BLOCK_DURATION_MS
    while start < maxt:
        yield max(start, mint), min(start + BLOCK_DURATION_MS, maxt)
        start += BLOCK_DURATION_MS


class Importer:
    """Reads windows from one Prometheus and writes them as blocks of one tenant."""

    def __init__(
        self,
        store: ObjectStore,
        tenant: str,
        source_url: str,
        matchers: Sequence[types_pb2.LabelMatcher],
        *,
        headers: Mapping[str, str] | None = None,
        work_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.tenant = tenant
        self.source_url = source_url.rstrip("/")
        self.read_url = f"{self.source_url}/api/v1/read"
        self.matchers = list(matchers)
        self.client = httpx.Client(
            headers={**READ_HEADERS, **(headers or {})}, timeout=READ_TIMEOUT_S
        )
        self.work_dir = work_dir

    def close(self) -> None:
        """Close the HTTP client."""
        self.client.close()

    def run(self, mint: int, maxt: int, report: Callable[[str], None] = log.info) -> ImportSummary:
        """Import [mint, maxt) window by window; a summary of what was done."""
        summary = ImportSummary()
        started = time.monotonic()
        spans = list(windows(mint, maxt))
        summary.windows = len(spans)
        with tempfile.TemporaryDirectory(dir=self.work_dir, prefix="strata-import-") as tmp:
            for number, (lo, hi) in enumerate(spans, 1):
                block_id = import_block_id(self.tenant, self.source_url, lo, hi)
                where = f"[{number}/{len(spans)}] {_iso(lo)}..{_iso(hi)}"
                if self.store.exists(f"{self.tenant}/{block_id}/{META_FILENAME}"):
                    summary.skipped += 1
                    report(f"{where}: already imported as {block_id}")
                    continue
                counts = self._import_window(Path(tmp), block_id, lo, hi)
                if counts.series == 0:
                    summary.empty += 1
                    report(f"{where}: no data")
                    continue
                summary.imported += 1
                summary.series += counts.series
                summary.samples += counts.samples
                summary.histograms += counts.histograms
                elapsed = time.monotonic() - started
                report(
                    f"{where}: {counts.series} series, {counts.samples} samples, "
                    f"{counts.histograms} histograms -> {block_id} "
                    f"({elapsed:.1f} s so far, {summary.samples / max(elapsed, 1e-9):,.0f} "
                    "samples/s)"
                )
                failpoint("import.after_window")
        summary.seconds = time.monotonic() - started
        return summary

    def _import_window(self, tmp: Path, block_id: str, lo: int, hi: int) -> WindowCounts:
        """Read [lo, hi) and write it as block `block_id`; what it holds."""
        writer = BlockWriter(tmp, block_id)
        try:
            for series in self._read(lo, hi - 1):
                histograms = (series.histogram_ts, series.histograms)
                try:
                    writer.add_series(list(series.labels), series.ts, series.values, histograms)
                except OutOfOrder:
                    raise SourceError(
                        f"{self.read_url} streamed series out of label order"
                    ) from None
                except ValueError as exc:  # the histogram codec refuses a message
                    raise SourceError(
                        f"{self.read_url} sent a histogram of {format_labels(list(series.labels))} "
                        f"that cannot be stored: {exc}"
                    ) from None
            if not writer.samples and not writer.histograms:
                writer.abort()
                return WindowCounts(0, 0, 0)
            meta = writer.finish(tenant=self.tenant, level=1, mint=lo, maxt=hi)
        except BaseException:
            writer.abort()
            raise
        try:
            upload_block(self.store, writer.final_dir, self.tenant)
            add_blocks(self.store, self.tenant, [meta])
        finally:
            shutil.rmtree(writer.final_dir, ignore_errors=True)
        return WindowCounts(meta.stats.series, meta.stats.samples, writer.histograms)

    def _read(self, mint: int, maxt: int) -> Iterator[SourceSeries]:
        """Each series of [mint, maxt] (inclusive), in the order the source sends them."""
        request = remote_pb2.ReadRequest(
            queries=[
                remote_pb2.Query(
                    start_timestamp_ms=mint, end_timestamp_ms=maxt, matchers=self.matchers
                )
            ],
            accepted_response_types=[
                remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS,
                remote_pb2.ReadRequest.SAMPLES,
            ],
        )
        body = snappy.compress(request.SerializeToString())
        try:
            with self.client.stream("POST", self.read_url, content=body) as answer:
                if answer.status_code != 200:
                    answer.read()
                    raise SourceError(
                        f"{self.read_url} answered {answer.status_code}: "
                        f"{answer.text.strip()[:300]}"
                    )
                if answer.headers.get("content-type", "").startswith(STREAMED_TYPE):
                    yield from _streamed_series(answer.iter_bytes(), mint, maxt)
                else:
                    yield from _samples_series(answer.read(), mint, maxt)
        except httpx.HTTPError as exc:
            raise SourceError(f"{self.read_url}: {exc!r}") from None


def _streamed_series(pieces: Iterator[bytes], mint: int, maxt: int) -> Iterator[SourceSeries]:
    """Series from a streamed answer; a series split over frames comes out whole."""
    current: Labels | None = None
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    rows: HistogramRows = []
    try:
        for response in iter_responses(pieces, MAX_FRAME_BYTES):
            for chunked in response.chunked_series:
                labels = tuple((label.name, label.value) for label in chunked.labels)
                if labels != current:
                    if current is not None:
                        yield _series(current, parts, rows, mint, maxt)
                    current, parts, rows = labels, [], []
                for chunk in chunked.chunks:
                    if chunk.type == types_pb2.Chunk.XOR:
                        parts.append(decode_xor_chunk(chunk.data))
                    elif chunk.type in (HISTOGRAM, FLOAT_HISTOGRAM):
                        rows.extend(decode_histogram_chunk(chunk.data, chunk.type).samples)
                    else:
                        raise SourceError(f"chunk encoding {chunk.type} is not imported")
    except StrataError as exc:
        if isinstance(exc, SourceError):
            raise
        raise SourceError(f"bad streamed answer: {exc.reason}") from None
    if current is not None:
        yield _series(current, parts, rows, mint, maxt)


def _samples_series(data: bytes, mint: int, maxt: int) -> Iterator[SourceSeries]:
    """Series from a SAMPLES answer (servers that do not stream), sorted by labels."""
    try:
        response = remote_pb2.ReadResponse.FromString(snappy.uncompress(data))
        found = []
        for result in response.results:
            for series in result.timeseries:
                labels = tuple(sorted((label.name, label.value) for label in series.labels))
                ts = np.array([s.timestamp for s in series.samples], dtype=np.int64)
                values = np.array([s.value for s in series.samples], dtype=np.float64)
                # A 1.0 Histogram has the 2.0 message's field numbers: its bytes read as one.
                rows = [
                    (h.timestamp, canonical_histogram(h.SerializeToString()))
                    for h in series.histograms
                ]
                found.append((labels, ts, values, rows))
    except Exception as exc:  # snappy and protobuf raise their own kinds
        raise SourceError(f"bad SAMPLES answer: {exc!r}") from None
    for labels, ts, values, rows in sorted(found, key=lambda f: f[0]):
        yield _series(labels, [(ts, values)], rows, mint, maxt)


def _series(
    labels: Labels,
    parts: list[tuple[np.ndarray, np.ndarray]],
    rows: HistogramRows,
    mint: int,
    maxt: int,
) -> SourceSeries:
    """One series' floats and histograms, each joined and trimmed to [mint, maxt]."""
    ts, values = _joined(parts, mint, maxt)
    histogram_ts, histograms = _joined_histograms(rows, mint, maxt)
    return SourceSeries(labels, ts, values, histogram_ts, histograms)


def _joined(
    parts: list[tuple[np.ndarray, np.ndarray]], mint: int, maxt: int
) -> tuple[np.ndarray, np.ndarray]:
    """One series' chunks as time-sorted samples within [mint, maxt], each timestamp once."""
    if not parts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float64)
    ts = np.concatenate([p[0] for p in parts])
    values = np.concatenate([p[1] for p in parts])
    order, keep = _first_in_range(ts, mint, maxt)
    return ts[order][keep], values[order][keep]


def _joined_histograms(rows: HistogramRows, mint: int, maxt: int) -> tuple[np.ndarray, list[bytes]]:
    """One series' histograms as time-sorted samples within [mint, maxt], each timestamp
    once (the first sent, as for floats: chunks that overlap repeat a sample)."""
    ts = np.array([t for t, _ in rows], dtype=np.int64)
    order, keep = _first_in_range(ts, mint, maxt)
    picked = order[keep].tolist()
    return ts[picked], [rows[i][1] for i in picked]


def _first_in_range(ts: np.ndarray, mint: int, maxt: int) -> tuple[np.ndarray, np.ndarray]:
    """The stable time order of `ts`, and over that order a mask of what to keep: the
    first sample of each timestamp within [mint, maxt]."""
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    keep = (ts >= mint) & (ts <= maxt)
    keep[1:] &= ts[1:] != ts[:-1]
    return order, keep


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
