"""The steady-state fast path of remote write 1.0 decoding: series seen before, one
sample each, read straight from the request bytes.

A Prometheus sends the same series every scrape interval, each TimeSeries entry its
labels and, mostly, one sample. Protobuf's Python objects cost about 3 µs an entry;
here an entry is split into its labels region and a fixed-shape sample tail, and the
tails of a whole request are decoded with numpy at once.

An entry takes this path only if all of it is understood without a parse:
- it ends in one `samples` field of a Sample exactly as protobuf writes it: the value
  (left out when it is 0) and a timestamp of six varint bytes (1971 to 2109);
- everything before that tail is, byte for byte, the key of a series the tenant's head
  already knows. Keys are the canonical encoding of a list of label fields
  (`series_key`), so such a region holds those labels and nothing else: no sample,
  exemplar or histogram can hide in it.
A request with any other entry, or with metadata, goes the general way
(gateway/decode.py), which also gives every error its usual message.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import overload

import numpy as np
from google.protobuf.message import DecodeError

from proto.write_raw_pb2 import RawEntriesRequest

# Sample tails, counted back from an entry's end: samples tag 0x12, the Sample's length,
# then its fields. With a value: 0x09 + 8 bytes of double, 0x10 + 6 varint bytes.
_VALUE_TAIL = 18
_VALUE_HEAD = (0x12, 0x10, 0x09)  # at tail offsets 0, 1, 2
_VALUE_TS_TAG = 11  # offset of the timestamp's tag in a value tail
# A value of 0 is left out: 0x12 0x07 0x10 + 6 varint bytes, the last 9 bytes of a tail.
_ZERO_TAIL = 9
_TS_BYTES = 6
_VARINT_MORE = 0x80


def split_label_fields(key: bytes) -> list[bytes]:
    """The encoded Label messages of a canonical key (`series_key`), in order."""
    out = []
    at = 0
    while at < len(key):
        length = 0
        shift = 0
        at += 1  # the field tag, 0x0a
        while True:
            byte = key[at]
            at += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & _VARINT_MORE:
                break
        out.append(key[at : at + length])
        at += length
    return out


class LabelsOfKeys(Sequence[list[bytes]]):
    """`DecodedWrite.series_labels` of the fast path: each entry's label messages, split
    out of its key only when asked for."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        self._keys = keys

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> list[bytes]: ...

    @overload
    def __getitem__(self, index: slice) -> list[list[bytes]]: ...

    def __getitem__(self, index: int | slice) -> list[bytes] | list[list[bytes]]:
        if isinstance(index, slice):
            return [split_label_fields(k) for k in self._keys[index]]
        return split_label_fields(self._keys[index])


def decode_known(
    raw: bytes, known_keys: Container[object]
) -> tuple[list[bytes], np.ndarray, np.ndarray] | None:
    """(keys, timestamps, values) with one sample per entry, in entry order, if every
    entry of `raw` is a known series with one plain sample; None otherwise."""
    try:
        request = RawEntriesRequest.FromString(raw)
    except DecodeError:
        return None
    # Unknown or misplaced top-level fields: the general way reports or skips them.
    request.DiscardUnknownFields()
    entries = request.timeseries
    if request.metadata or not entries or request.ByteSize() != len(raw):
        return None
    if min(map(len, entries)) <= _VALUE_TAIL:
        return None
    tails = np.frombuffer(
        b"".join([entry[-_VALUE_TAIL:] for entry in entries]), dtype=np.uint8
    ).reshape(len(entries), _VALUE_TAIL)
    with_value = (
        (tails[:, 0] == _VALUE_HEAD[0])
        & (tails[:, 1] == _VALUE_HEAD[1])
        & (tails[:, 2] == _VALUE_HEAD[2])
        & (tails[:, _VALUE_TS_TAG] == 0x10)
    )
    zero = _VALUE_TAIL - _ZERO_TAIL
    without_value = (
        (tails[:, zero] == 0x12) & (tails[:, zero + 1] == 0x07) & (tails[:, zero + 2] == 0x10)
    )
    varint = tails[:, -_TS_BYTES:]
    six_bytes = np.all(varint[:, :-1] & _VARINT_MORE, axis=1) & (varint[:, -1] < _VARINT_MORE)
    # A value tail whose double happens to end in 0x12 0x07 0x10 is a value tail: test it
    # first.
    if not bool(np.all((with_value | without_value) & six_bytes)):
        return None
    cut = np.where(with_value, _VALUE_TAIL, _ZERO_TAIL).tolist()
    keys = [entry[:-n] for entry, n in zip(entries, cut, strict=True)]
    if not all(key in known_keys for key in keys):
        return None
    shifts = np.arange(0, 7 * _TS_BYTES, 7, dtype=np.uint64)
    timestamps = np.bitwise_or.reduce((varint & 0x7F).astype(np.uint64) << shifts, axis=1).astype(
        np.int64
    )
    values = np.zeros(len(entries), dtype=np.float64)
    doubles = np.ascontiguousarray(tails[with_value, 3:_VALUE_TS_TAG]).view("<f8")
    values[with_value] = doubles.ravel()
    return keys, timestamps, values
