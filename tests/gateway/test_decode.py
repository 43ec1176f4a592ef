"""Decoding remote-write bodies: content negotiation, bounded snappy, protobuf into columns."""

from __future__ import annotations

import numpy as np
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st

from blocks.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from gateway.decode import (
    V1_PROTO,
    V2_PROTO,
    check_content_headers,
    decode_write_request,
    decompress_snappy,
    series_key,
    snappy_declared_length,
)
from proto import types_pb2
from proto.write_raw_pb2 import RawSample, RawTimeSeries, RawWriteRequest
from tests.gateway.writes import (
    SPECIAL_BITS,
    STALE_NAN,
    label_bytes,
    time_series,
    write_request,
)

FOUR_GIB = 1 << 32
# uvarint 2**32 followed by a single literal-tag byte: six bytes claiming 4 GiB.
FOUR_GIB_BOMB = b"\x80\x80\x80\x80\x10\x00"
LIMIT = 1 << 20


def test_declared_length_is_read_from_the_snappy_preamble() -> None:
    assert snappy_declared_length(FOUR_GIB_BOMB) == FOUR_GIB
    assert snappy_declared_length(snappy.compress(b"x" * 300)) == 300
    assert snappy_declared_length(snappy.compress(b"")) == 0


def test_declared_length_over_the_limit_is_refused_without_decompressing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[bytes] = []
    monkeypatch.setattr("gateway.decode.snappy.decompress", calls.append)
    with pytest.raises(RequestTooLarge, match=str(FOUR_GIB)):
        decompress_snappy(FOUR_GIB_BOMB, LIMIT)
    assert calls == []


def test_declared_length_at_the_limit_is_accepted() -> None:
    raw = bytes(range(256)) * (LIMIT // 256)
    assert decompress_snappy(snappy.compress(raw), LIMIT) == raw
    with pytest.raises(RequestTooLarge):
        decompress_snappy(snappy.compress(raw + b"!"), LIMIT)


def test_empty_body_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="empty"):
        decompress_snappy(b"", LIMIT)


def test_unterminated_length_preamble_is_invalid() -> None:
    with pytest.raises(InvalidRequest, match="preamble"):
        decompress_snappy(b"\xff\xff\xff\xff\xff\xff", LIMIT)


def test_every_truncation_of_a_snappy_block_is_invalid() -> None:
    raw = write_request(
        time_series([("__name__", "up"), ("job", "node")], [(i, i) for i in range(50)])
    ).SerializeToString()
    compressed = snappy.compress(raw)
    for size in range(1, len(compressed)):
        with pytest.raises(InvalidRequest) as caught:
            decompress_snappy(compressed[:size], LIMIT)
        assert type(caught.value) is InvalidRequest


@pytest.mark.parametrize(
    "garbage",
    [
        b"garbage",
        b"\x05\xff\xff\xff\xff\xff",
        b"\x0a" + b"\xfe" * 20,
        b"\x10\x00\x00\x00",
        b"\x00\x00",
    ],
)
def test_garbage_snappy_is_invalid(garbage: bytes) -> None:
    with pytest.raises(InvalidRequest) as caught:
        decompress_snappy(garbage, LIMIT)
    assert type(caught.value) is InvalidRequest


@given(st.binary(max_size=64))
@settings(max_examples=500, deadline=None)
def test_any_body_decompresses_to_its_declared_length_or_is_invalid(body: bytes) -> None:
    try:
        raw = decompress_snappy(body, LIMIT)
    except InvalidRequest:
        return
    assert len(raw) == snappy_declared_length(body)


@pytest.mark.parametrize(
    "garbage",
    [
        b"\xff\xff\xff",
        b"\x0a\x05ab",  # a timeseries entry cut short
        b"\x0a\x03\x0a\x01",  # a label cut short inside a timeseries
        b"\x0b",  # a group start tag
        b"\x0a\x0b\x12\x09\x09\x00\x00",  # a sample's fixed64 value cut short
    ],
)
def test_garbage_protobuf_is_invalid(garbage: bytes) -> None:
    with pytest.raises(InvalidRequest, match="protobuf"):
        decode_write_request(garbage)


@given(st.binary(max_size=128))
@settings(max_examples=500, deadline=None)
def test_any_protobuf_bytes_decode_or_are_invalid(raw: bytes) -> None:
    try:
        request = decode_write_request(raw)
    except InvalidRequest:
        return
    assert len(request.timestamps) == len(request.values) == len(request.sample_entry)
    assert len(request.series_keys) == len(request.series_labels)


def test_request_decodes_into_columns_with_exact_bits() -> None:
    first = time_series([("__name__", "up"), ("job", "a")], [(1000, STALE_NAN), (2000, 1)])
    second = time_series(
        [("job", "b"), ("__name__", "up")], [(t, b) for t, b in enumerate(SPECIAL_BITS)]
    )
    second.exemplars.append(types_pb2.Exemplar(value=1.0, timestamp=5))
    second.histograms.append(types_pb2.Histogram(count_int=1, timestamp=5))
    request = decode_write_request(
        write_request(first, second, metadata=["up", "other"]).SerializeToString()
    )
    assert request.series_keys == [
        series_key([label_bytes("__name__", "up"), label_bytes("job", "a")]),
        series_key([label_bytes("job", "b"), label_bytes("__name__", "up")]),
    ]
    assert request.series_labels[1] == [label_bytes("job", "b"), label_bytes("__name__", "up")]
    assert request.sample_entry.tolist() == [0, 0] + [1] * len(SPECIAL_BITS)
    assert request.timestamps.tolist() == [1000, 2000, *range(len(SPECIAL_BITS))]
    assert request.values.view(np.uint64).tolist() == [STALE_NAN, 1, *SPECIAL_BITS]
    assert (request.histograms, request.exemplars, request.metadata) == (1, 1, 2)


def test_raw_view_is_wire_compatible_with_write_request() -> None:
    real = write_request(time_series([("__name__", "up")], [(-5, STALE_NAN)]))
    raw = RawWriteRequest(
        timeseries=[
            RawTimeSeries(
                labels=[label_bytes("__name__", "up")],
                samples=[RawSample(value=real.timeseries[0].samples[0].value, timestamp=-5)],
            )
        ]
    )
    assert raw.SerializeToString() == real.SerializeToString()


def test_empty_request_decodes_to_nothing() -> None:
    request = decode_write_request(b"")
    assert request.series_keys == []
    assert len(request.timestamps) == 0
    assert request.timestamps.dtype == np.int64
    assert request.values.dtype == np.float64


@pytest.mark.parametrize(
    "headers",
    [
        {"content-encoding": "snappy", "content-type": "application/x-protobuf"},
        {"content-encoding": "snappy"},
        {"content-encoding": "SNAPPY", "content-type": "Application/X-Protobuf"},
        {
            "content-encoding": "snappy",
            "content-type": "application/x-protobuf;proto=prometheus.WriteRequest",
        },
        {
            "content-encoding": "snappy",
            "content-type": "application/x-protobuf; proto=prometheus.WriteRequest; charset=x",
        },
    ],
)
def test_remote_write_1_content_headers_are_accepted(headers: dict[str, str]) -> None:
    assert check_content_headers(headers) == V1_PROTO


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
        "application/x-protobuf; proto=io.prometheus.write.v2.Request",
        'application/x-protobuf;proto="io.prometheus.write.v2.Request"',
        "Application/X-Protobuf;PROTO=io.prometheus.write.v2.Request",
    ],
)
def test_remote_write_2_content_type_names_the_2_0_message(content_type: str) -> None:
    headers = {"content-encoding": "snappy", "content-type": content_type}
    assert check_content_headers(headers) == V2_PROTO


@pytest.mark.parametrize(
    ("headers", "named"),
    [
        ({"content-type": "application/x-protobuf"}, "Content-Encoding"),
        ({"content-encoding": "gzip"}, "gzip"),
        ({"content-encoding": "identity"}, "identity"),
        ({"content-encoding": "snappy", "content-type": "application/json"}, "application/json"),
        (
            {
                "content-encoding": "snappy",
                "content-type": "application/x-protobuf;proto=io.prometheus.write.v3.Request",
            },
            "io.prometheus.write.v3.Request",
        ),
        (
            {"content-encoding": "snappy", "content-type": "application/x-protobuf;proto=junk"},
            "junk",
        ),
    ],
)
def test_other_content_headers_are_unsupported_media(headers: dict[str, str], named: str) -> None:
    with pytest.raises(UnsupportedMediaType, match=named) as caught:
        check_content_headers(headers)
    assert caught.value.http_status == 415


def test_series_key_tells_apart_label_lists_with_the_same_bytes() -> None:
    whole = [label_bytes("__name__", "m"), label_bytes("a", "b")]
    joined = b"".join(whole)
    resplit = [joined[:5], joined[5:]]
    assert b"".join(resplit) == joined
    assert series_key(whole) != series_key(resplit)
    long_label = [label_bytes("__name__", "m"), label_bytes("a", "x" * 300)]
    assert series_key(long_label) != series_key([b"".join(long_label)])
