"""`strata import` from a source that answers remote read with SAMPLES only and carries
native histograms in it (as Prometheus releases after 2.42 do): each window's block gets
the histograms of its window, as the source sent them, each timestamp once (issue 8).

The source is a small HTTP server on loopback that answers every read with one fixed
ReadResponse spanning two import windows; the import trims it to each.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import snappy

from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from gateway.backfill import Importer, parse_matcher
from gateway.head_cut import BLOCK_DURATION_MS
from proto import remote_pb2, types_pb2, write_v2_pb2
from tests.compactor.bucket_data import live_blocks
from tests.querier.histogram_reads import canonical, custom_buckets, float_gauge, int_counter

T0 = 1_790_000_000_000 // BLOCK_DURATION_MS * BLOCK_DURATION_MS
STEP_MS = 15 * 60_000
STEPS = 12  # three hours: two windows
TENANT = "history"
HISTOGRAMS = (("__name__", "h"), ("job", "a"))
MIXED = (("__name__", "m"), ("job", "a"))
# labels -> [(timestamp, canonical message bytes)]
Expected = dict[tuple[tuple[str, str], ...], list[tuple[int, bytes]]]


def as_v1(message: write_v2_pb2.Histogram) -> types_pb2.Histogram:
    """A 2.0 histogram as the 1.0 message a SAMPLES answer carries (same field numbers)."""
    return types_pb2.Histogram.FromString(message.SerializeToString())


def source_response() -> tuple[remote_pb2.ReadResponse, Expected]:
    """The answer, and per series the (timestamp, canonical bytes) the import must keep."""
    ts = [T0 + i * STEP_MS for i in range(STEPS)]
    counter = [int_counter(i, t) for i, t in enumerate(ts)]
    customs = [as_v1(custom_buckets(i, t)) for i, t in enumerate(ts)]
    gauge = [as_v1(float_gauge(i, t)) for i, t in enumerate(ts)]
    # Sent twice at one timestamp (overlapping chunks of a source): the first is kept.
    repeated = types_pb2.Histogram()
    repeated.CopyFrom(counter[3])
    repeated.sum += 1.0
    series = [
        types_pb2.TimeSeries(
            labels=[types_pb2.Label(name=n, value=v) for n, v in HISTOGRAMS],
            histograms=[*counter[:4], repeated, *counter[4:]],
        ),
        types_pb2.TimeSeries(
            labels=[types_pb2.Label(name=n, value=v) for n, v in MIXED],
            samples=[types_pb2.Sample(timestamp=t, value=float(i)) for i, t in enumerate(ts[:6])],
            histograms=gauge[6:],
        ),
        types_pb2.TimeSeries(
            labels=[types_pb2.Label(name="__name__", value="c")], histograms=customs
        ),
    ]
    expected = {
        HISTOGRAMS: [(m.timestamp, canonical(m)) for m in counter],
        MIXED: [(m.timestamp, canonical(m)) for m in gauge[6:]],
        (("__name__", "c"),): [(m.timestamp, canonical(m)) for m in customs],
    }
    response = remote_pb2.ReadResponse(results=[remote_pb2.QueryResult(timeseries=series)])
    return response, expected


@pytest.fixture
def samples_source() -> Iterator[tuple[str, Expected]]:
    response, expected = source_response()
    body = snappy.compress(response.SerializeToString())

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Encoding", "snappy")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", expected
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_histograms_of_a_samples_answer_are_imported_window_by_window(
    tmp_path: Path,
    samples_source: tuple[str, Expected],
) -> None:
    url, expected = samples_source
    lines: list[str] = []
    with LocalStore(tmp_path / "bucket") as store:
        importer = Importer(store, TENANT, url, [parse_matcher("__name__=~.+")])
        try:
            summary = importer.run(T0, T0 + 2 * BLOCK_DURATION_MS, report=lines.append)
        finally:
            importer.close()
        found: Expected = {}
        per_block = []
        for meta in sorted(live_blocks(store, TENANT), key=lambda m: m.mint):
            reader = BlockReader(store, f"{TENANT}/{meta.block_id}", meta=meta)
            lowest, highest = np.iinfo(np.int64).min, np.iinfo(np.int64).max
            read = reader.read_histograms(range(reader.index.series_count), lowest, highest)
            count = 0
            for series, (ts, payloads) in read.items():
                assert ((ts >= meta.mint) & (ts < meta.maxt)).all()
                key = tuple(reader.index.labels(series))
                found.setdefault(key, []).extend(zip(ts.tolist(), payloads, strict=True))
                count += len(ts)
            per_block.append(count)
    assert found == expected
    # Eight samples of 15 min in the first 2 h window, four in the second, per series.
    assert per_block == [8 + 2 + 8, 4 + 4 + 4]
    assert (summary.imported, summary.samples, summary.histograms) == (2, 6, 30)
    assert "6 samples, 18 histograms -> " in lines[0]
    assert "0 samples, 12 histograms -> " in lines[1]
