"""Native histograms in remote-read answers: SAMPLES carries the stored messages as
`prometheus.Histogram`s, a streamed answer cuts a series of both kinds into XOR and
histogram chunks in time order, and places merge with the newest winning."""

from __future__ import annotations

import numpy as np

from proto import remote_pb2, types_pb2, write_v2_pb2
from querier.histogram_chunk import HISTOGRAM, decode_histogram_chunk
from querier.merge import merge_histogram_parts
from querier.samples_response import query_result_fields, read_response
from querier.stream_chunks import series_fields
from querier.xor_chunk import decode_xor_chunk
from tests.querier.histogram_reads import canonical, custom_buckets, int_counter, no_overlap


def test_a_stored_histogram_parses_as_prometheus_histogram_field_for_field() -> None:
    v2 = write_v2_pb2.Histogram.FromString(canonical(custom_buckets(3, 5000)))
    v2.start_timestamp = 1234
    stored = v2.SerializeToString(deterministic=True)
    fields = query_result_fields(
        [([("__name__", "h")], (np.array([1000]), np.array([2.0])), [stored, stored])]
    )
    series = remote_pb2.ReadResponse.FromString(read_response([fields])).results[0].timeseries[0]
    assert [s.value for s in series.samples] == [2.0]
    assert len(series.histograms) == 2
    h = series.histograms[0]
    assert (h.count_int, h.sum, h.schema, h.timestamp) == (v2.count_int, v2.sum, -53, 5000)
    assert list(h.positive_deltas) == list(v2.positive_deltas)
    # custom_values and start_timestamp are not prometheus.Histogram's: kept as unknown
    # fields, so the message's bytes are the stored ones.
    assert write_v2_pb2.Histogram.FromString(h.SerializeToString()) == v2


def test_a_series_of_both_kinds_streams_chunks_in_time_order_without_overlap() -> None:
    float_ts = np.array([0, 10, 20, 50, 60, 90], dtype=np.int64)
    values = np.arange(6, dtype=np.float64)
    hist_ts = np.array([30, 40, 50, 70, 80], dtype=np.int64)  # 50 holds both kinds
    messages = [canonical(int_counter(i, int(t))) for i, t in enumerate(hist_ts.tolist())]
    fields = series_fields((float_ts, values), (hist_ts, messages))
    series = types_pb2.ChunkedSeries.FromString(b"".join(fields))
    ranges = [(c.type, c.min_time_ms, c.max_time_ms) for c in series.chunks]
    assert no_overlap(ranges)
    assert [r[0] for r in ranges] == [
        types_pb2.Chunk.XOR,
        HISTOGRAM,
        types_pb2.Chunk.XOR,
        HISTOGRAM,
        types_pb2.Chunk.XOR,
    ]
    floats: list[int] = []
    histograms: list[int] = []
    for chunk in series.chunks:
        if chunk.type == types_pb2.Chunk.XOR:
            floats += decode_xor_chunk(chunk.data)[0].tolist()
        else:
            histograms += [t for t, _ in decode_histogram_chunk(chunk.data, chunk.type).samples]
    assert histograms == hist_ts.tolist()
    assert floats == [0, 10, 20, 60, 90]  # at 50 the histogram is sent


def test_histogram_parts_merge_each_timestamp_once_later_parts_winning() -> None:
    older = (np.array([1, 2, 3]), [b"a1", b"a2", b"a3"])
    newer = (np.array([2, 4]), [b"b2", b"b4"])
    ts, messages = merge_histogram_parts([older, newer], 2, 4)
    assert ts.tolist() == [2, 3, 4]
    assert messages == [b"b2", b"a3", b"b4"]
    ts, messages = merge_histogram_parts([older], 0, 2)
    assert (ts.tolist(), messages) == ([1, 2], [b"a1", b"a2"])
