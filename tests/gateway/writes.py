"""Building remote-write requests for the gateway tests: series, bodies, decoded requests."""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import snappy

from gateway.decode import DecodedWrite, decode_write_request
from gateway.validate import encode_labels
from proto import remote_pb2, types_pb2
from proto.write_raw_pb2 import LabelPair
from tests.support.values import STALE_NAN as STALE_NAN  # re-exported for the gateway tests

# Value bit patterns a float comparison would get wrong: NaN payloads, signed zero, infinities.
SPECIAL_BITS = (
    STALE_NAN,
    0x7FF8000000000000,  # the quiet NaN numpy produces
    0xFFF8DEADBEEF0001,  # a negative NaN with a payload
    0x7FF0000000000001,  # the smallest signalling NaN
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,  # +0.0
    0x0000000000000001,  # the smallest subnormal
    0x000FFFFFFFFFFFFF,  # the largest subnormal
)
WRITE_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}

Labels = Sequence[tuple[str, str]]
Samples = Sequence[tuple[int, int]]  # (timestamp ms, value bits)


def as_float(bits: int) -> float:
    """The float64 with exactly these bits (NaN payloads included)."""
    value: float = struct.unpack("<d", struct.pack("<Q", bits))[0]
    return value


def bits_of(value: float) -> int:
    """The 64 bits of a float."""
    word: int = struct.unpack("<Q", struct.pack("<d", value))[0]
    return word


def time_series(labels: Labels, samples: Samples) -> types_pb2.TimeSeries:
    """A TimeSeries with labels in the given order and samples given as value bits."""
    return types_pb2.TimeSeries(
        labels=[types_pb2.Label(name=n, value=v) for n, v in labels],
        samples=[types_pb2.Sample(value=as_float(b), timestamp=t) for t, b in samples],
    )


def write_request(
    *series: types_pb2.TimeSeries, metadata: Sequence[str] = ()
) -> remote_pb2.WriteRequest:
    """A WriteRequest of these series and metadata entries for these metric families."""
    return remote_pb2.WriteRequest(
        timeseries=list(series),
        metadata=[
            types_pb2.MetricMetadata(
                type=types_pb2.MetricMetadata.COUNTER, metric_family_name=name, help="help"
            )
            for name in metadata
        ],
    )


def body_of(*series: types_pb2.TimeSeries, metadata: Sequence[str] = ()) -> bytes:
    """A snappy-compressed WriteRequest, as Prometheus posts it."""
    compressed: bytes = snappy.compress(
        write_request(*series, metadata=metadata).SerializeToString()
    )
    return compressed


def decoded(*series: types_pb2.TimeSeries) -> DecodedWrite:
    """A request as the write path receives it after decoding."""
    return decode_write_request(write_request(*series).SerializeToString())


def label_bytes(name: str, value: str) -> bytes:
    """One prometheus.Label message, canonically encoded."""
    return LabelPair(name=name, value=value).SerializeToString()


def canonical(labels: Labels) -> bytes:
    """Canonical label bytes of a label set (sorted by name)."""
    return encode_labels(sorted(labels, key=lambda p: p[0].encode()))


def bits_array(words: Sequence[int]) -> np.ndarray:
    """uint64 words as a float64 column with exactly those bits."""
    return np.array(words, dtype=np.uint64).view(np.float64)
