"""Field numbers and wire types of the generated messages, checked on the bytes by hand.

The expected numbers are upstream Prometheus's (prompb/types.proto, prompb/remote.proto,
prompb/io/prometheus/write/v2/types.proto); a wrong number would still round-trip
through our own classes, so these tests look at the encoded bytes.
"""

from __future__ import annotations

import math
import struct

from proto import remote_pb2, types_pb2, write_v2_pb2

VARINT, FIXED64, LEN = 0, 1, 2
STALE_NAN_BITS = 0x7FF0000000000002  # Prometheus's staleness marker


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, pos


def fields(data: bytes) -> list[tuple[int, int, bytes]]:
    """Top-level (field number, wire type, payload) triples of an encoded message."""
    out: list[tuple[int, int, bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        start = pos
        if wire_type == VARINT:
            _, pos = read_varint(data, pos)
        elif wire_type == FIXED64:
            pos += 8
        elif wire_type == LEN:
            size, start = read_varint(data, pos)
            pos = start + size
        else:
            raise AssertionError(f"unexpected wire type {wire_type}")
        out.append((number, wire_type, data[start:pos]))
    return out


def layout(data: bytes) -> list[tuple[int, int]]:
    """(field number, wire type) of each top-level field, in order."""
    return [(number, wire_type) for number, wire_type, _ in fields(data)]


def bits(value: float) -> int:
    return int.from_bytes(struct.pack("<d", value), "little")


def from_bits(value: int) -> float:
    return float(struct.unpack("<d", value.to_bytes(8, "little"))[0])


def test_sample_value_is_fixed64_field_1_and_timestamp_varint_field_2() -> None:
    data = types_pb2.Sample(value=1.5, timestamp=1000).SerializeToString()
    assert data == b"\x09" + struct.pack("<d", 1.5) + b"\x10\xe8\x07"


def test_timeseries_fields_1_to_4() -> None:
    series = types_pb2.TimeSeries(
        labels=[types_pb2.Label(name="__name__", value="up")],
        samples=[types_pb2.Sample(value=1.0, timestamp=1)],
        exemplars=[types_pb2.Exemplar(value=2.0, timestamp=1)],
        histograms=[types_pb2.Histogram(count_int=1, timestamp=1)],
    )
    assert layout(series.SerializeToString()) == [(1, LEN), (2, LEN), (3, LEN), (4, LEN)]


def test_label_name_is_field_1_and_value_field_2() -> None:
    data = types_pb2.Label(name="job", value="node").SerializeToString()
    assert data == b"\x0a\x03job\x12\x04node"


def test_write_request_timeseries_is_field_1_and_metadata_field_3() -> None:
    request = remote_pb2.WriteRequest(
        timeseries=[types_pb2.TimeSeries(labels=[types_pb2.Label(name="a", value="b")])],
        metadata=[types_pb2.MetricMetadata(type=types_pb2.MetricMetadata.COUNTER)],
    )
    assert layout(request.SerializeToString()) == [(1, LEN), (3, LEN)]


def test_metric_metadata_fields_1_2_4_5() -> None:
    metadata = types_pb2.MetricMetadata(
        type=types_pb2.MetricMetadata.GAUGE, metric_family_name="up", help="h", unit="u"
    )
    assert layout(metadata.SerializeToString()) == [(1, VARINT), (2, LEN), (4, LEN), (5, LEN)]
    assert types_pb2.MetricMetadata.STATESET == 7


def test_histogram_oneofs_and_zigzag_schema() -> None:
    histogram = types_pb2.Histogram(count_int=3, schema=-53, zero_count_float=0.5)
    histogram.count_float = 2.5  # replaces count_int: the two share a oneof
    assert histogram.WhichOneof("count") == "count_float"
    assert histogram.WhichOneof("zero_count") == "zero_count_float"
    data = histogram.SerializeToString()
    assert layout(data) == [(2, FIXED64), (4, VARINT), (7, FIXED64)]
    assert fields(data)[1][2] == b"\x69"  # sint32 -53 zigzags to 105


def test_histogram_bucket_fields_8_to_16() -> None:
    histogram = types_pb2.Histogram(
        negative_spans=[types_pb2.BucketSpan(offset=-1, length=2)],
        negative_deltas=[1, -1],
        positive_counts=[1.0],
        reset_hint=types_pb2.Histogram.GAUGE,
        custom_values=[0.5],
    )
    assert layout(histogram.SerializeToString()) == [
        (8, LEN),
        (9, LEN),
        (13, LEN),
        (14, VARINT),
        (16, LEN),
    ]
    span = types_pb2.BucketSpan(offset=-1, length=2).SerializeToString()
    assert span == b"\x08\x01\x10\x02"  # offset is sint32: -1 zigzags to 1


def test_read_request_accepted_response_types_is_packed_field_2() -> None:
    request = remote_pb2.ReadRequest(
        queries=[remote_pb2.Query(start_timestamp_ms=1)],
        accepted_response_types=[remote_pb2.ReadRequest.STREAMED_XOR_CHUNKS],
    )
    assert fields(request.SerializeToString()) == [(1, LEN, b"\x08\x01"), (2, LEN, b"\x01")]
    assert remote_pb2.ReadRequest.SAMPLES == 0


def test_query_fields_and_read_hints() -> None:
    query = remote_pb2.Query(
        start_timestamp_ms=1,
        end_timestamp_ms=2,
        matchers=[types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.NRE, name="a", value="b")],
        hints=types_pb2.ReadHints(step_ms=1, func="rate", grouping=["job"], by=True, range_ms=9),
    )
    data = query.SerializeToString()
    assert layout(data) == [(1, VARINT), (2, VARINT), (3, LEN), (4, LEN)]
    assert layout(fields(data)[2][2]) == [(1, VARINT), (2, LEN), (3, LEN)]
    assert layout(fields(data)[3][2]) == [(1, VARINT), (2, LEN), (5, LEN), (6, VARINT), (7, VARINT)]
    assert types_pb2.LabelMatcher.NRE == 3


def test_chunked_read_response_fields() -> None:
    chunk = types_pb2.Chunk(min_time_ms=1, max_time_ms=2, type=types_pb2.Chunk.XOR, data=b"x")
    response = remote_pb2.ChunkedReadResponse(
        chunked_series=[types_pb2.ChunkedSeries(chunks=[chunk])], query_index=1
    )
    assert layout(response.SerializeToString()) == [(1, LEN), (2, VARINT)]
    assert layout(chunk.SerializeToString()) == [(1, VARINT), (2, VARINT), (3, VARINT), (4, LEN)]
    assert (types_pb2.Chunk.XOR, types_pb2.Chunk.FLOAT_HISTOGRAM) == (1, 3)


def test_v2_request_symbols_is_field_4_and_timeseries_field_5() -> None:
    request = write_v2_pb2.Request(
        symbols=["", "__name__", "up"],
        timeseries=[write_v2_pb2.TimeSeries(labels_refs=[1, 2])],
    )
    data = request.SerializeToString()
    assert layout(data) == [(4, LEN)] * 3 + [(5, LEN)]
    assert fields(data)[3][2] == b"\x0a\x02\x01\x02"  # labels_refs: packed field 1


def test_v2_timeseries_fields_1_to_5() -> None:
    series = write_v2_pb2.TimeSeries(
        labels_refs=[1, 2],
        samples=[write_v2_pb2.Sample(value=1.0)],
        histograms=[write_v2_pb2.Histogram(count_int=1)],
        exemplars=[write_v2_pb2.Exemplar(value=1.0)],
        metadata=write_v2_pb2.Metadata(type=write_v2_pb2.Metadata.METRIC_TYPE_COUNTER),
    )
    layout_ = layout(series.SerializeToString())
    assert layout_ == [(1, LEN), (2, LEN), (3, LEN), (4, LEN), (5, LEN)]


def test_v2_start_timestamps_are_sample_field_3_and_histogram_field_17() -> None:
    sample = write_v2_pb2.Sample(value=1.0, timestamp=2, start_timestamp=1)
    assert layout(sample.SerializeToString()) == [(1, FIXED64), (2, VARINT), (3, VARINT)]
    histogram = write_v2_pb2.Histogram(start_timestamp=1).SerializeToString()
    assert histogram == b"\x88\x01\x01"  # key (17 << 3) | VARINT as a two-byte varint


def test_v2_metadata_help_ref_is_field_3_and_unit_ref_field_4() -> None:
    metadata = write_v2_pb2.Metadata(
        type=write_v2_pb2.Metadata.METRIC_TYPE_STATESET, help_ref=1, unit_ref=2
    )
    assert metadata.SerializeToString() == b"\x08\x07\x18\x01\x20\x02"


def test_v1_request_parsed_as_v2_comes_out_empty() -> None:
    v1 = remote_pb2.WriteRequest(
        timeseries=[types_pb2.TimeSeries(samples=[types_pb2.Sample(value=1.0)])],
        metadata=[types_pb2.MetricMetadata(help="h")],
    )
    v2 = write_v2_pb2.Request.FromString(v1.SerializeToString())
    assert (len(v2.symbols), len(v2.timeseries)) == (0, 0)


def test_stale_nan_payload_survives_a_round_trip() -> None:
    stale = from_bits(STALE_NAN_BITS)
    assert math.isnan(stale)
    data = types_pb2.Sample(value=stale, timestamp=1).SerializeToString()
    assert data[1:9] == STALE_NAN_BITS.to_bytes(8, "little")
    assert bits(types_pb2.Sample.FromString(data).value) == STALE_NAN_BITS
    v2 = write_v2_pb2.Sample.FromString(write_v2_pb2.Sample(value=stale).SerializeToString())
    assert bits(v2.value) == STALE_NAN_BITS
