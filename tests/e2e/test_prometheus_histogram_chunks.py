"""A real Prometheus's histogram chunks against Strata's histogram chunk codec.

Prometheus 2.42 with native histograms on scrapes tests/support/histogram_target.py,
which plays a script of integer, float and gauge histograms (buckets appearing and
vanishing, a counter reset, schema and zero-threshold changes), then fails a scrape so
that the series go stale. Its own `/api/v1/read` then answers:

- SAMPLES: 2.42 sends histogram series without a single sample (its `ToQueryResult` reads
  float samples only), so the histograms are compared with what the target exposed.
- STREAMED_XOR_CHUNKS: HISTOGRAM / FLOAT_HISTOGRAM chunks. Strata's decoder must return
  exactly the exposed histograms (bucket by bucket; Prometheus widens a chunk's layout with
  empty buckets when buckets appear) and the staleness marker; its encoder, given the
  decoded samples of each chunk, must give Prometheus's bytes; and given the exposed
  histograms, must cut and widen chunks where Prometheus did, with the same bytes.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
import snappy

from proto import remote_pb2, types_pb2
from proto.write_v2_pb2 import Histogram
from querier.histogram_chunk import (
    FLOAT_HISTOGRAM,
    HISTOGRAM,
    STALE_NAN_BITS,
    CounterResetHeader,
    decode_histogram_chunk,
    encode_histogram_chunk,
    encode_histogram_chunks,
    spans_of,
)
from querier.stream_frames import CONTENT_TYPE, iter_responses
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    PROMETHEUS_READY_TIMEOUT_S,
    PrometheusServer,
    prometheus_binary,
    wait_until_ready,
)
from tests.support.histogram_target import ExposedHistogram, HistogramTarget

STEPS = 36
# Scrapes that time out would be lost to Prometheus but not to the script: leave room.
SCRAPE_INTERVAL = "200ms"
READ_TIMEOUT_S = 10.0
SCRIPT_TIMEOUT_S = 25.0
DEFAULT_THRESHOLD = 2.0**-128  # stored in one byte of the chunk layout
BLOCK_RANGE_S = 7200
ODD_THRESHOLD = 0.001  # not a power of two: stored as 8 raw bytes


class NativeHistogramPrometheus(PrometheusServer):
    """Prometheus with native histograms on (protobuf scrapes)."""

    def start(self, config: Mapping[str, Any]) -> None:
        """Write the config, start, and return once /-/ready answers 200."""
        self.write_config(config)
        self.process.spawn(
            [
                prometheus_binary(),
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.base_dir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                "--enable-feature=native-histograms",
                "--log.level=info",
            ]
        )
        wait_until_ready(self.process, f"{self.url}/-/ready", PROMETHEUS_READY_TIMEOUT_S)


def int_counter(step: int) -> ExposedHistogram:
    """Buckets appear (steps 3, 6), the counter resets (10), the schema (15) and the zero
    threshold (20) change, a bucket vanishes (25); one bucket grows by millions."""
    base = step if step < 10 else step - 10
    positive = {0: 1 + base, 1: 2 * base + 1, 7: 1_000_003 * (base + 1)}
    if step >= 3:
        positive[4] = base + 2
    negative = {-2: base + 1} if step >= 6 else {}
    if step >= 25:
        del positive[1]
    schema = 3 if step < 15 else 2
    threshold = DEFAULT_THRESHOLD if step < 20 else ODD_THRESHOLD
    zero = base * 3
    count = sum(positive.values()) + sum(negative.values()) + zero
    return ExposedHistogram(
        name="e2e_int_hist",
        gauge=False,
        is_float=False,
        count=count,
        sum=0.1 * step + count * 1.5,
        schema=schema,
        zero_threshold=threshold,
        zero_count=zero,
        positive={i: float(v) for i, v in positive.items() if v},
        negative={i: float(v) for i, v in negative.items()},
    )


def float_counter(step: int) -> ExposedHistogram:
    """Fractional counts; a bucket appears at step 5, the counter resets at 20."""
    base = (step if step < 20 else step - 20) + 1
    positive = {-3: 0.25 * base, -2: 1.5 * base}
    if step >= 5:
        positive[2] = 0.125 * base
    return ExposedHistogram(
        name="e2e_float_hist",
        gauge=False,
        is_float=True,
        count=sum(positive.values()) + 0.5 * base,
        sum=-2.75 * base,
        schema=-2,
        zero_threshold=DEFAULT_THRESHOLD,
        zero_count=0.5 * base,
        positive=positive,
        negative={},
    )


def int_gauge(step: int) -> ExposedHistogram:
    """Counts go up and down, buckets come and go (a gauge chunk takes them all)."""
    positive = {1: 5 + step % 4, 3 + step % 5: 2 + step % 3}
    negative = {-1: 1 + step % 2} if step % 3 else {}
    return ExposedHistogram(
        name="e2e_gauge_hist",
        gauge=True,
        is_float=False,
        count=sum(positive.values()) + sum(negative.values()) + 2,
        sum=float(step % 7) - 3.0,
        schema=0,
        zero_threshold=DEFAULT_THRESHOLD,
        zero_count=2,
        positive={i: float(v) for i, v in positive.items()},
        negative={i: float(v) for i, v in negative.items()},
    )


SERIES = ("e2e_int_hist", "e2e_float_hist", "e2e_gauge_hist")


def script() -> list[list[ExposedHistogram]]:
    """What the target answers, scrape by scrape."""
    return [[int_counter(step), float_counter(step), int_gauge(step)] for step in range(STEPS)]


def as_message(h: ExposedHistogram) -> Histogram:
    """The histogram as Prometheus stores it after its scrape."""
    m = Histogram(sum=h.sum, schema=h.schema, zero_threshold=h.zero_threshold)
    if h.gauge:
        m.reset_hint = Histogram.RESET_HINT_GAUGE
    for side, spans in ((h.positive, m.positive_spans), (h.negative, m.negative_spans)):
        for offset, length in spans_of(sorted(side)):
            spans.add(offset=offset, length=length)
    if h.is_float:
        m.count_float, m.zero_count_float = h.count, h.zero_count
        m.positive_counts.extend(h.positive[i] for i in sorted(h.positive))
        m.negative_counts.extend(h.negative[i] for i in sorted(h.negative))
        return m
    m.count_int, m.zero_count_int = int(h.count), int(h.zero_count)
    for side, deltas in ((h.positive, m.positive_deltas), (h.negative, m.negative_deltas)):
        values = [int(side[i]) for i in sorted(side)]
        deltas.extend(v - p for v, p in zip(values, [0, *values], strict=False))
    return m


def stale_marker(is_float: bool) -> Histogram:
    """The staleness marker Prometheus appends to a histogram series."""
    m = Histogram(sum=struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0])
    if is_float:
        m.count_float, m.zero_count_float = 0.0, 0.0
    else:
        m.count_int, m.zero_count_int = 0, 0
    return m


def bucket_map(m: Histogram, side: str) -> dict[int, float]:
    """Absolute count by bucket index, empty buckets left out."""
    spans = getattr(m, f"{side}_spans")
    values: list[float] = list(getattr(m, f"{side}_counts"))
    if m.WhichOneof("count") == "count_int":
        running, values = 0, []
        for d in getattr(m, f"{side}_deltas"):
            running += d
            values.append(running)
    indices: list[int] = []
    at = 0
    for span in spans:
        at += span.offset
        indices.extend(range(at, at + span.length))
        at += span.length
    return {i: v for i, v in zip(indices, values, strict=True) if v}


def same_histogram(got: Histogram, expected: Histogram) -> bool:
    """Equal in every field Prometheus keeps, buckets compared by index and count."""

    def bits(x: float) -> bytes:
        return struct.pack("<d", x)

    return (
        got.WhichOneof("count") == expected.WhichOneof("count")
        and (got.count_int, bits(got.count_float))
        == (expected.count_int, bits(expected.count_float))
        and (got.zero_count_int, bits(got.zero_count_float))
        == (expected.zero_count_int, bits(expected.zero_count_float))
        and bits(got.sum) == bits(expected.sum)
        and got.schema == expected.schema
        and bits(got.zero_threshold) == bits(expected.zero_threshold)
        and bucket_map(got, "positive") == bucket_map(expected, "positive")
        and bucket_map(got, "negative") == bucket_map(expected, "negative")
    )


def read_request(response_type: remote_pb2.ReadRequest.ResponseType) -> bytes:
    """A snappy'd ReadRequest for every e2e_* series, whole time range."""
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(
                start_timestamp_ms=0,
                end_timestamp_ms=2**62,
                matchers=[
                    types_pb2.LabelMatcher(
                        type=types_pb2.LabelMatcher.RE, name="__name__", value="e2e_.*"
                    )
                ],
            )
        ],
        accepted_response_types=[response_type],
    )
    compressed: bytes = snappy.compress(request.SerializeToString())
    return compressed


READ_HEADERS = {
    "Content-Type": "application/x-protobuf",
    "Content-Encoding": "snappy",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}


def read_samples(client: httpx.Client) -> remote_pb2.ReadResponse:
    """Prometheus's SAMPLES answer."""
    answer = client.post(
        "/api/v1/read",
        content=read_request(remote_pb2.ReadRequest.SAMPLES),
        headers=READ_HEADERS,
        timeout=READ_TIMEOUT_S,
    )
    if answer.status_code != 200:
        pytest.fail(f"remote read: {answer.status_code} {answer.text}")
    return remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.content))


def read_chunks(client: httpx.Client) -> dict[str, list[types_pb2.Chunk]]:
    """Prometheus's STREAMED_XOR_CHUNKS answer: every series' chunks, by metric name."""
    with client.stream(
        "POST",
        "/api/v1/read",
        content=read_request(remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS),
        headers=READ_HEADERS,
        timeout=READ_TIMEOUT_S,
    ) as answer:
        if answer.status_code != 200:
            pytest.fail(f"remote read: {answer.status_code} {answer.read()!r}")
        assert answer.headers["Content-Type"] == CONTENT_TYPE
        chunks: dict[str, list[types_pb2.Chunk]] = {}
        for frame in iter_responses(answer.iter_bytes()):
            for series in frame.chunked_series:
                name = {label.name: label.value for label in series.labels}["__name__"]
                chunks.setdefault(name, []).extend(series.chunks)
        return chunks


def wait_past_block_boundary() -> None:
    """Prometheus's head also cuts chunks at 2-hour boundaries: keep the scrapes off one."""
    to_boundary_s = -time.time() % BLOCK_RANGE_S
    if to_boundary_s < SCRIPT_TIMEOUT_S:
        time.sleep(to_boundary_s + 0.5)


def scraped_script(
    request: pytest.FixtureRequest, tmp_path: Path, extra: Mapping[str, Any]
) -> Iterator[NativeHistogramPrometheus]:
    """A Prometheus (configured with `extra` besides its scrape) that has scraped the
    whole script and marked the series stale; stopped with the target afterwards."""
    target = HistogramTarget(script())
    target.start()
    base_dir = tmp_path / "prometheus"
    base_dir.mkdir()
    server = NativeHistogramPrometheus(base_dir)
    attach_log(request.node, "prometheus", server.log_path)
    config = {
        "global": {"scrape_interval": SCRAPE_INTERVAL, "scrape_timeout": SCRAPE_INTERVAL},
        "scrape_configs": [{"job_name": "hist", "static_configs": [{"targets": [target.address]}]}],
        **extra,
    }
    wait_past_block_boundary()
    try:
        server.start(config)
        if not target.wait_until_refused(SCRIPT_TIMEOUT_S):
            pytest.fail(f"prometheus scraped {target.served} of {STEPS} steps in time")
        yield server
    finally:
        server.close()
        target.close()


@pytest.fixture
def scraped(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NativeHistogramPrometheus]:
    """A Prometheus that has scraped the whole script and marked the series stale."""
    yield from scraped_script(request, tmp_path, {})


@pytest.mark.e2e
def test_prometheus_histogram_chunks_decode_and_reencode_byte_identical(
    scraped: NativeHistogramPrometheus,
) -> None:
    # 2.42's SAMPLES answer lists the series, without their histograms.
    names = set()
    for series in read_samples(scraped.client).results[0].timeseries:
        names.add({label.name: label.value for label in series.labels}["__name__"])
        assert (len(series.samples), len(series.histograms)) == (0, 0)
    assert names == set(SERIES)

    chunks = read_chunks(scraped.client)
    steps = script()
    report = {}
    for column, name in enumerate(SERIES):
        exposed = [as_message(step[column]) for step in steps]
        exposed.append(stale_marker(steps[0][column].is_float))
        report[name] = check_series(chunks[name], exposed)
    unknown, reset, gauge = (
        CounterResetHeader.UNKNOWN,
        CounterResetHeader.COUNTER_RESET,
        CounterResetHeader.GAUGE,
    )
    # Cuts: counter reset (step 10), schema (15), zero threshold (20), vanished bucket (25);
    # new buckets (3, 6) widen the open chunk instead. The staleness marker stays in the
    # counters' last chunk but starts a chunk of its own after gauge histograms.
    assert report == {
        "e2e_int_hist": [unknown, reset, unknown, unknown, reset],
        "e2e_float_hist": [unknown, reset],
        "e2e_gauge_hist": [gauge, unknown],
    }


def check_series(
    chunks: list[types_pb2.Chunk], exposed: list[Histogram]
) -> list[CounterResetHeader]:
    """Check one series' chunks against what was exposed; returns the chunks' headers."""
    decoded = []
    for chunk in chunks:
        assert chunk.type in (HISTOGRAM, FLOAT_HISTOGRAM)
        got = decode_histogram_chunk(chunk.data, chunk.type)
        assert (chunk.min_time_ms, chunk.max_time_ms) == (got.samples[0][0], got.samples[-1][0])
        # (b) at Prometheus's boundaries: the decoded samples give back its bytes.
        again = encode_histogram_chunk(got.samples, got.header)
        assert (again.encoding, again.data) == (chunk.type, chunk.data)
        decoded.extend(got.samples)
    # (a) the decoded histograms are the exposed ones, the staleness marker last.
    assert len(decoded) == len(exposed)
    for (_, data), expected in zip(decoded[:-1], exposed[:-1], strict=True):
        assert same_histogram(Histogram.FromString(data), expected)
    stale = Histogram.FromString(decoded[-1][1])
    assert stale.timestamp == decoded[-1][0]
    stale.ClearField("timestamp")
    assert stale == exposed[-1]
    # (b) from the exposed histograms, with Prometheus's scrape times: its very chunks.
    timestamps = [t for t, _ in decoded]
    ours = encode_histogram_chunks(
        [(t, m.SerializeToString()) for t, m in zip(timestamps, exposed, strict=True)]
    )
    theirs = [(c.min_time_ms, c.max_time_ms, c.type, c.data) for c in chunks]
    mine = [(c.mint, c.maxt, c.encoding, c.data) for c in ours]
    # The open head chunk comes re-encoded by 2.42's querier, which loses its counter-reset
    # header (it looks for it on the head's chunk type, and finds the head's wrapper).
    *closed, (mint, maxt, encoding, data) = mine
    assert closed == theirs[:-1]
    open_chunk = (mint, maxt, encoding, data[:2] + bytes([data[2] & 0x3F]) + data[3:])
    assert open_chunk == theirs[-1]
    return [decode_histogram_chunk(c.data, c.encoding).header for c in ours]
