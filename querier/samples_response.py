"""The SAMPLES answer of remote read: a ReadResponse written straight from numpy columns.

Building a protobuf `Sample` object per sample costs about a microsecond each; a year of
one series at 15 s is two million of them. So the samples are laid out as wire bytes by
array operations (every `Sample` is 0x12, its length, 0x09, the 8 value bytes, 0x10,
the timestamp as a varint), and only labels and the nesting go through the protobuf
library. Native histograms are stored as serialized messages whose fields 1-15 are
`prometheus.Histogram`'s (types.proto), so they are copied into `histograms` as they are.
Layout of the messages: proto/remote.proto, proto/types.proto.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence

import numpy as np

from querier.varint import uvarint

Labels = Sequence[tuple[str, str]]

# Field tags: (field number << 3) | wire type.
_TAG_RESULTS = 0x0A  # ReadResponse.results, QueryResult.timeseries: field 1, bytes
_TAG_SAMPLE = 0x12  # TimeSeries.samples: field 2, bytes
_TAG_HISTOGRAM = b"\x22"  # TimeSeries.histograms: field 4, bytes
_TAG_VALUE = 0x09  # Sample.value: field 1, 64-bit
_TAG_TIMESTAMP = 0x10  # Sample.timestamp: field 2, varint
_TAG_LABEL = 0x0A  # TimeSeries.labels, ChunkedSeries.labels, Label.name: field 1, bytes
_V1 = b"\x12"  # Label.value: field 2, bytes
# Sample bytes before the timestamp's varint: tag, length, value tag, 8 value bytes, tag.
_FIXED = 12
_MAX_VARINT = 10


def encode_samples_of_many(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[bytes]:
    """The repeated `samples` field of each of several TimeSeries, every sample written
    out: one pass of array operations over all their samples, then a slice per series. A
    hundred series of a few samples each cost about what one series of their total does,
    instead of a hundred times the setup.

    Zero values and timestamps are written too (proto3 would omit them); every decoder
    reads them the same, and -0.0 keeps its sign bit this way.
    """
    counts = [len(ts) for ts, _ in parts]
    total = sum(counts)
    if not total:
        return [b""] * len(parts)
    # int64 timestamps go on the wire as their two's complement (10 bytes if negative).
    ts = np.concatenate([np.asarray(t, dtype=np.int64) for t, _ in parts]).view(np.uint64)
    values = np.concatenate([np.asarray(v, dtype="<f8") for _, v in parts])
    value_bytes = values.view(np.uint8).reshape(-1, 8)
    lengths = np.ones(total, dtype=np.int64)
    for k in range(1, _MAX_VARINT):
        lengths += ts >= np.uint64(1 << (7 * k))
    # Samples of one varint length are records of one size: a 2D array filled column by
    # column. Sorted timestamps make these runs few (usually one).
    cuts = np.flatnonzero(np.diff(lengths)) + 1
    bounds = [0, *cuts.tolist(), total]
    data = b"".join(
        _records(ts[lo:hi], value_bytes[lo:hi], int(lengths[lo]))
        for lo, hi in itertools.pairwise(bounds)
    )
    # Byte offset of each sample's record, and of the end of the last.
    offsets = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths + _FIXED, out=offsets[1:])
    byte_ends = offsets[[0, *itertools.accumulate(counts)]].tolist()
    return [data[lo:hi] for lo, hi in itertools.pairwise(byte_ends)]


def _records(ts: np.ndarray, value_bytes: np.ndarray, length: int) -> bytes:
    """Samples whose timestamps all take `length` varint bytes."""
    rows = np.empty((len(ts), _FIXED + length), dtype=np.uint8)
    rows[:, 0] = _TAG_SAMPLE
    rows[:, 1] = _FIXED - 2 + length
    rows[:, 2] = _TAG_VALUE
    rows[:, 3:11] = value_bytes
    rows[:, 11] = _TAG_TIMESTAMP
    for k in range(length):
        group = ((ts >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        rows[:, _FIXED + k] = group | 0x80 if k + 1 < length else group
    return rows.tobytes()


def encode_time_series(
    labels: Labels,
    timestamps: np.ndarray,
    values: np.ndarray,
    histograms: Sequence[bytes] = (),
) -> bytes:
    """One TimeSeries message: labels through protobuf, samples through
    encode_samples_of_many, then the serialized histograms (time-sorted) as they are."""
    return encode_many_time_series([(labels, (timestamps, values), histograms)])[0]


def encode_many_time_series(
    series: Sequence[tuple[Labels, tuple[np.ndarray, np.ndarray], Sequence[bytes]]],
) -> list[bytes]:
    """`encode_time_series` of each of several series, their samples laid out together."""
    samples = encode_samples_of_many([part for _, part, _ in series])
    return [
        label_fields(labels) + own + (encode_histograms(histograms) if histograms else b"")
        for (labels, _, histograms), own in zip(series, samples, strict=True)
    ]


def label_fields(labels: Labels) -> bytes:
    """The labels as the repeated field 1 of a TimeSeries or a ChunkedSeries, the bytes
    protobuf writes (an empty name or value left out).

    Each pair's field is kept once written (`_PAIR_FIELDS`): the series of a read share
    most of their pairs (job, instance, the metric's name), and finding a pair costs an
    eighth of encoding it, which was a fifth of a hundred-series read."""
    fields = _PAIR_FIELDS
    try:
        return b"".join([fields[pair] for pair in labels])
    except KeyError:
        pass
    out = []
    for pair in labels:
        field = fields.get(pair)
        if field is None:
            field = _pair_field(*pair)
            if len(fields) >= PAIR_FIELDS_KEPT:
                fields.clear()
            fields[pair] = field
        out.append(field)
    return b"".join(out)


# Encoded label pairs by (name, value), emptied when full: under a megabyte with the
# strings they keep, and the pairs a dashboard asks for are found from its second read.
PAIR_FIELDS_KEPT = 4096
_PAIR_FIELDS: dict[tuple[str, str], bytes] = {}


def _pair_field(name: str, value: str) -> bytes:
    """One label as field 1 of its series: tag, length, Label (its empty strings left out)."""
    n, v = name.encode(), value.encode()
    size = len(n) + len(v) + 4
    if len(n) > 0 and len(v) > 0 and size < 0x80:  # every length one byte
        head = bytes((_TAG_LABEL, size, _TAG_LABEL, len(n)))
        return b"".join((head, n, _V1, bytes((len(v),)), v))
    body = b"".join(
        (
            bytes((_TAG_LABEL,)) + uvarint(len(n)) + n if n else b"",
            _V1 + uvarint(len(v)) + v if v else b"",
        )
    )
    return bytes((_TAG_LABEL,)) + uvarint(len(body)) + body


def encode_histograms(histograms: Sequence[bytes]) -> bytes:
    """The repeated `histograms` field of one TimeSeries."""
    return b"".join(_TAG_HISTOGRAM + uvarint(len(h)) + h for h in histograms)


def encode_query_result(series: Iterable[bytes]) -> bytes:
    """A QueryResult from encoded TimeSeries messages."""
    return _repeated_field_1(series)


def encode_read_response(results: Iterable[bytes]) -> bytes:
    """A ReadResponse from encoded QueryResult messages, one per query, in query order."""
    return _repeated_field_1(results)


def _repeated_field_1(messages: Iterable[bytes]) -> bytes:
    """Encoded messages as field 1 of their parent, both parents' only field."""
    return b"".join(_TAG_RESULTS.to_bytes(1) + uvarint(len(m)) + m for m in messages)
