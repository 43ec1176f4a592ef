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

import functools
import itertools
from collections.abc import Sequence

import numpy as np

from querier.varint import uvarint

Labels = Sequence[tuple[str, str]]
# A piece of an answer: bytes, or a view of a buffer holding many series' samples.
Bytes = bytes | memoryview

# Field tags: (field number << 3) | wire type.
_FIELD_1 = b"\x0a"  # ReadResponse.results, QueryResult.timeseries: field 1, bytes
_TAG_SAMPLE = 0x12  # TimeSeries.samples: field 2, bytes
_TAG_HISTOGRAM = b"\x22"  # TimeSeries.histograms: field 4, bytes
_TAG_VALUE = 0x09  # Sample.value: field 1, 64-bit
_TAG_TIMESTAMP = 0x10  # Sample.timestamp: field 2, varint
_TAG_LABEL = 0x0A  # TimeSeries.labels, ChunkedSeries.labels, Label.name: field 1, bytes
_V1 = b"\x12"  # Label.value: field 2, bytes
# Sample bytes before the timestamp's varint: tag, length, value tag, 8 value bytes, tag.
_FIXED = 12
_MAX_VARINT = 10


def encode_samples_of_many(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[Bytes]:
    """The repeated `samples` field of each of several TimeSeries, every sample written
    out: one pass of array operations over all their samples, then a slice per series. A
    hundred series of a few samples each cost about what one series of their total does,
    instead of a hundred times the setup.

    Zero values and timestamps are written too (proto3 would omit them); every decoder
    reads them the same, and -0.0 keeps its sign bit this way. Each series' share is a
    view of one buffer, copied once, into the answer.
    """
    counts = [len(ts) for ts, _ in parts]
    total = sum(counts)
    if not total:
        return [b""] * len(parts)
    # int64 timestamps go on the wire as their two's complement (10 bytes if negative).
    ts = np.concatenate([t for t, _ in parts], dtype=np.int64, casting="same_kind")
    ts = ts.view(np.uint64)
    values = np.concatenate([v for _, v in parts], dtype="<f8", casting="same_kind")
    shortest, longest = _varint_lengths(np.array([ts.min(), ts.max()])).tolist()
    if shortest == longest:  # the usual answer: every record one size
        data = memoryview(_records(ts, values, shortest))
        ends = [0, *itertools.accumulate(n * (_FIXED + shortest) for n in counts)]
        return [data[lo:hi] for lo, hi in itertools.pairwise(ends)]
    lengths = _varint_lengths(ts)
    # Samples of one varint length are records of one size. Sorted timestamps make these
    # runs few.
    cuts = np.flatnonzero(np.diff(lengths)) + 1
    bounds = [0, *cuts.tolist(), total]
    data = memoryview(
        b"".join(
            _records(ts[lo:hi], values[lo:hi], int(lengths[lo]))
            for lo, hi in itertools.pairwise(bounds)
        )
    )
    # Byte offset of each sample's record, and of the end of the last.
    offsets = np.zeros(total + 1, dtype=np.int64)
    np.cumsum(lengths + _FIXED, out=offsets[1:])
    byte_ends = offsets[[0, *itertools.accumulate(counts)]].tolist()
    return [data[lo:hi] for lo, hi in itertools.pairwise(byte_ends)]


# The smallest value of each varint length past one byte.
_VARINT_LIMITS = np.array([1 << (7 * k) for k in range(1, _MAX_VARINT)], dtype=np.uint64)


def _varint_lengths(values: np.ndarray) -> np.ndarray:
    """The varint length of each uint64 value."""
    lengths: np.ndarray = np.searchsorted(_VARINT_LIMITS, values, side="right") + 1
    return lengths


@functools.cache
def _record_layout(length: int) -> np.dtype:
    """A Sample record whose timestamp takes `length` varint bytes, as a packed structure:
    one field per byte, so that each is written by a single array assignment."""
    head = [("tag", "u1"), ("size", "u1"), ("value_tag", "u1"), ("value", "<f8")]
    return np.dtype([*head, ("ts_tag", "u1"), *((f"ts{k}", "u1") for k in range(length))])


def _records(ts: np.ndarray, values: np.ndarray, length: int) -> bytes:
    """Samples whose timestamps all take `length` varint bytes."""
    rows = np.empty(len(ts), dtype=_record_layout(length))
    rows["tag"] = _TAG_SAMPLE
    rows["size"] = _FIXED - 2 + length
    rows["value_tag"] = _TAG_VALUE
    rows["value"] = values
    rows["ts_tag"] = _TAG_TIMESTAMP
    # Each varint byte is the low 8 bits of what is left of the timestamp, with the high
    # bit set where more bytes follow.
    rest = ts.copy()
    marked = np.empty_like(ts)
    for k in range(length - 1):
        np.bitwise_or(rest, np.uint64(0x80), out=marked)
        np.copyto(rows[f"ts{k}"], marked, casting="unsafe")
        rest >>= np.uint64(7)
    np.copyto(rows[f"ts{length - 1}"], rest, casting="unsafe")
    return rows.tobytes()


def query_result_fields(
    series: Sequence[tuple[Labels, tuple[np.ndarray, np.ndarray], Sequence[bytes]]],
) -> list[Bytes]:
    """Series (labels, samples, serialized histograms in time order) as the repeated field
    of a QueryResult, their samples laid out together. Returned in pieces, to be joined
    once with the rest of the answer by `read_response`: every join of a whole answer is
    another copy of it."""
    samples = encode_samples_of_many([part for _, part, _ in series])
    out: list[Bytes] = []
    for (labels, _, histograms), own in zip(series, samples, strict=True):
        own_labels = label_fields(labels)
        own_histograms = encode_histograms(histograms) if histograms else b""
        size = len(own_labels) + len(own) + len(own_histograms)
        out += (_FIELD_1 + uvarint(size), own_labels, own, own_histograms)
    return out


def read_response(results: Sequence[Sequence[Bytes]]) -> bytes:
    """A ReadResponse from each query's `query_result_fields`, in query order."""
    out: list[Bytes] = []
    for fields in results:
        out += (_FIELD_1, uvarint(sum(map(len, fields))), *fields)
    return b"".join(out)


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
            if len(field) <= PAIR_FIELD_MAX_BYTES:
                if len(fields) >= PAIR_FIELDS_KEPT:
                    fields.clear()
                fields[pair] = field
        out.append(field)
    return b"".join(out)


# Encoded label pairs by (name, value), emptied when full, and the pairs a dashboard asks
# for are found from its second read. Only short pairs are kept: about 650 kB when full of
# ordinary labels, 2 MB at most.
PAIR_FIELDS_KEPT = 4096
PAIR_FIELD_MAX_BYTES = 128
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
