"""Test helpers for native histograms over remote read: histograms to write (1.0 and 2.0
messages), and both answers decoded into comparable form.

A SAMPLES answer carries the stored messages, compared by canonical bytes. A streamed
answer carries Prometheus's chunks, which keep what Prometheus keeps of a histogram
(no start timestamp, reset hints derived from the chunk, buckets widened with empty ones):
those are compared field by field and bucket by bucket (`chunk_form`).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Iterable, Sequence

import numpy as np
import snappy

from blocks.histogram_codec import canonical_histogram
from proto import remote_pb2, types_pb2, write_v2_pb2
from querier.histogram_chunk import FLOAT_HISTOGRAM, HISTOGRAM, decode_histogram_chunk
from querier.stream_frames import iter_responses
from querier.xor_chunk import decode_xor_chunk

STALE_NAN_BITS = 0x7FF0000000000002
STALE_NAN = struct.unpack("<d", struct.pack("<Q", STALE_NAN_BITS))[0]
LabelSet = tuple[tuple[str, str], ...]
# labels -> [(timestamp, canonical message bytes)]
HistogramSeries = dict[LabelSet, list[tuple[int, bytes]]]
# labels -> [(timestamp, value bits)]
FloatSeries = dict[LabelSet, list[tuple[int, int]]]


def bits(x: float) -> int:
    """A float64's bits."""
    return int(struct.unpack("<Q", struct.pack("<d", x))[0])


def int_counter(i: int, ts: int) -> types_pb2.Histogram:
    """A 1.0 integer counter histogram: a bucket appears at step 5, the counter resets at
    12 (said by the hint), step 20 is the staleness marker."""
    if i == 20:
        return types_pb2.Histogram(sum=STALE_NAN, count_int=0, zero_count_int=0, timestamp=ts)
    base = i if i < 12 else i - 12
    counts = [1 + base, 2 * base + 1] + ([base + 3] if i >= 5 else [])
    spans = [types_pb2.BucketSpan(offset=-1, length=2)]
    if i >= 5:
        spans.append(types_pb2.BucketSpan(offset=3, length=1))
    deltas = [c - p for c, p in zip(counts, [0, *counts], strict=False)]
    h = types_pb2.Histogram(
        count_int=sum(counts) + base,
        sum=0.25 * base + 1e-9,
        schema=3,
        zero_threshold=2.0**-128,
        zero_count_int=base,
        positive_spans=spans,
        positive_deltas=deltas,
        negative_spans=[types_pb2.BucketSpan(offset=-3, length=1)],
        negative_deltas=[base],
        timestamp=ts,
    )
    if i == 12:
        h.reset_hint = types_pb2.Histogram.YES
    return h


def float_gauge(i: int, ts: int) -> write_v2_pb2.Histogram:
    """A 2.0 float gauge histogram with a start timestamp; counts go up and down."""
    counts = [0.5 + (i % 3), 1.25 * (i % 4), 0.1]
    return write_v2_pb2.Histogram(
        count_float=sum(counts) + 0.75,
        sum=-1.5 * (i % 5),
        schema=-2,
        zero_threshold=0.001,
        zero_count_float=0.75,
        positive_spans=[write_v2_pb2.BucketSpan(offset=0, length=3)],
        positive_counts=counts,
        reset_hint=write_v2_pb2.Histogram.RESET_HINT_GAUGE,
        timestamp=ts,
        start_timestamp=ts - 3_600_000,
    )


def custom_buckets(i: int, ts: int) -> write_v2_pb2.Histogram:
    """A 2.0 integer histogram with custom bounds (schema -53)."""
    counts = [1 + i, 2 + i, 1, 3 * i]
    return write_v2_pb2.Histogram(
        count_int=sum(counts),
        sum=0.05 * i,
        schema=-53,
        positive_spans=[write_v2_pb2.BucketSpan(offset=0, length=4)],
        positive_deltas=[c - p for c, p in zip(counts, [0, *counts], strict=False)],
        custom_values=[0.1, 0.5, 2.5, 10.0],
        timestamp=ts,
    )


def canonical(message: types_pb2.Histogram | write_v2_pb2.Histogram) -> bytes:
    """The bytes Strata keeps and gives back for a histogram of either protocol."""
    return canonical_histogram(message.SerializeToString())


def read_request(
    start: int, end: int, matchers: Sequence[types_pb2.LabelMatcher], streamed: bool
) -> bytes:
    """A snappy'd ReadRequest of one query."""
    request = remote_pb2.ReadRequest(
        queries=[
            remote_pb2.Query(start_timestamp_ms=start, end_timestamp_ms=end, matchers=matchers)
        ]
    )
    if streamed:
        request.accepted_response_types.append(remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS)
    return bytes(snappy.compress(request.SerializeToString()))


def samples_answer(body: bytes) -> tuple[FloatSeries, HistogramSeries]:
    """A SAMPLES answer's floats (bits) and histograms (canonical bytes), by labels."""
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(body))
    floats: FloatSeries = {}
    histograms: HistogramSeries = {}
    for series in response.results[0].timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        if series.samples:
            values = np.array([s.value for s in series.samples], dtype=np.float64)
            stamps = [s.timestamp for s in series.samples]
            floats[labels] = list(zip(stamps, values.view(np.uint64).tolist(), strict=True))
        if series.histograms:
            # prometheus.Histogram parses the stored 2.0 bytes (fields 16, 17 kept unknown).
            histograms[labels] = [
                (h.timestamp, canonical_histogram(h.SerializeToString())) for h in series.histograms
            ]
    return floats, histograms


def streamed_answer(
    body: bytes,
) -> tuple[FloatSeries, HistogramSeries, dict[LabelSet, list[tuple[int, int, int]]]]:
    """A streamed answer decoded: floats (bits), histograms (as decoded from their chunks,
    the chunk's own messages), and each series' chunks as (type, mint, maxt)."""
    floats: FloatSeries = {}
    histograms: HistogramSeries = {}
    chunks: dict[LabelSet, list[tuple[int, int, int]]] = {}
    for response in iter_responses([body]):
        for series in response.chunked_series:
            labels = tuple((label.name, label.value) for label in series.labels)
            for chunk in series.chunks:
                chunks.setdefault(labels, []).append(
                    (chunk.type, chunk.min_time_ms, chunk.max_time_ms)
                )
                if chunk.type in (HISTOGRAM, FLOAT_HISTOGRAM):
                    decoded = decode_histogram_chunk(chunk.data, chunk.type).samples
                    histograms.setdefault(labels, []).extend(decoded)
                else:
                    ts, values = decode_xor_chunk(chunk.data)
                    floats.setdefault(labels, []).extend(
                        zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True)
                    )
    return floats, histograms, chunks


def bucket_map(m: write_v2_pb2.Histogram, side: str) -> dict[int, int]:
    """Absolute count (as bits) by bucket index, empty buckets left out."""
    spans = getattr(m, f"{side}_spans")
    values: list[float] = list(getattr(m, f"{side}_counts"))
    if m.WhichOneof("count") == "count_int":
        running, values = 0, []
        for d in getattr(m, f"{side}_deltas"):
            running += d
            values.append(float(running))
    indices: list[int] = []
    at = 0
    for span in spans:
        at += span.offset
        indices.extend(range(at, at + span.length))
        at += span.length
    return {i: bits(v) for i, v in zip(indices, values, strict=True) if v}


def chunk_form(t: int, data: bytes) -> tuple[object, ...]:
    """What a histogram chunk keeps of a histogram: comparable across both forms."""
    m = write_v2_pb2.Histogram.FromString(data)
    if bits(m.sum) == STALE_NAN_BITS:
        return (t, "stale")
    return (
        t,
        m.WhichOneof("count"),
        m.count_int,
        bits(m.count_float),
        m.zero_count_int,
        bits(m.zero_count_float),
        bits(m.sum),
        m.schema,
        bits(m.zero_threshold + 0.0),  # a chunk keeps -0.0 as +0.0
        tuple(bits(v) for v in m.custom_values),
        bucket_map(m, "positive"),
        bucket_map(m, "negative"),
        m.reset_hint == write_v2_pb2.Histogram.RESET_HINT_GAUGE,
    )


def chunk_forms(samples: Iterable[tuple[int, bytes]]) -> list[tuple[object, ...]]:
    """`chunk_form` of every sample."""
    return [chunk_form(t, data) for t, data in samples]


def no_overlap(chunks: Sequence[tuple[int, int, int]]) -> bool:
    """Chunks time-sorted and not overlapping."""
    return all(a[2] < b[1] for a, b in itertools.pairwise(chunks)) and all(
        c[1] <= c[2] for c in chunks
    )
