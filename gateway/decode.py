"""Remote write 1.0 request bodies: content negotiation, bounded snappy, protobuf.

The declared uncompressed length is read from the snappy preamble and checked against
the limit *before* decompressing: a six-byte body can declare 4 GiB.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import snappy
from google.protobuf.message import DecodeError

from blocks.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from proto.write_raw_pb2 import RawWriteRequest

V1_PROTO = "prometheus.WriteRequest"
V2_PROTO = "io.prometheus.write.v2.Request"


@dataclass(frozen=True, slots=True)
class DecodedWrite:
    """One remote-write request with its samples as columns.

    `series_keys[i]` identifies the i-th TimeSeries entry's labels as sent (series_key);
    `sample_entry[j]` says which entry sample j belongs to.
    """

    series_keys: list[bytes | tuple[bytes, ...]]
    series_labels: list[list[bytes]]
    sample_entry: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    histograms: int
    exemplars: int
    metadata: int


def check_content_headers(headers: Mapping[str, str]) -> None:
    """Accept remote write 1.0 only: snappy encoding and a 1.0 protobuf content type."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding != "snappy":
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding or '(none)'!r}: remote write needs snappy"
        )
    content_type = headers.get("content-type", "application/x-protobuf")
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/x-protobuf":
        raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "proto" and value.strip() != V1_PROTO:
            raise UnsupportedMediaType(
                f"unsupported remote write message {value.strip()!r}: this Strata accepts "
                f"{V1_PROTO}"
            )


def snappy_declared_length(body: bytes) -> int:
    """The uncompressed length a snappy block declares in its uvarint preamble."""
    length = 0
    for i in range(min(len(body), 5)):
        byte = body[i]
        length |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return length
    raise InvalidRequest("invalid snappy block: bad length preamble")


def decompress_snappy(body: bytes, max_decompressed_bytes: int) -> bytes:
    """Snappy block decompression with the declared size checked first."""
    if not body:
        raise InvalidRequest("empty request body")
    declared = snappy_declared_length(body)
    if declared > max_decompressed_bytes:
        raise RequestTooLarge(
            f"body declares {declared} bytes uncompressed, limit is {max_decompressed_bytes}"
        )
    try:
        raw = snappy.decompress(body)
    except Exception as exc:  # the binding raises several unrelated types
        raise InvalidRequest(f"invalid snappy block: {exc}") from None
    if not isinstance(raw, bytes) or len(raw) != declared:
        raise InvalidRequest("invalid snappy block: length does not match its preamble")
    return raw


def series_key(pairs: list[bytes]) -> bytes | tuple[bytes, ...]:
    """A dict key for a series as a sender encoded its labels, before any validation.

    The label messages concatenated would not do: different lists of messages can make
    the same bytes, and an invalid list would then find a valid series unchecked. Joined
    with 0xff (never in UTF-8 text, only in a rare length varint), the key names one list
    as long as no message holds 0xff itself; for those rare lists the tuple is the key.
    """
    key = b"\xff".join(pairs)
    if key.count(b"\xff") == len(pairs) - 1:
        return key
    return tuple(pairs)


def decode_write_request(raw: bytes) -> DecodedWrite:
    """Parse a WriteRequest into columns without decoding label strings."""
    try:
        request = RawWriteRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"invalid protobuf WriteRequest: {exc}") from None
    keys: list[bytes | tuple[bytes, ...]] = []
    labels: list[list[bytes]] = []
    entries: list[int] = []
    timestamps: list[int] = []
    values: list[float] = []
    histograms = exemplars = 0
    for index, series in enumerate(request.timeseries):
        pairs = list(series.labels)
        keys.append(series_key(pairs))
        labels.append(pairs)
        for sample in series.samples:
            entries.append(index)
            timestamps.append(sample.timestamp)
            values.append(sample.value)
        histograms += len(series.histograms)
        exemplars += len(series.exemplars)
    return DecodedWrite(
        series_keys=keys,
        series_labels=labels,
        sample_entry=np.array(entries, dtype=np.int64),
        timestamps=np.array(timestamps, dtype=np.int64),
        values=np.array(values, dtype=np.float64),
        histograms=histograms,
        exemplars=exemplars,
        metadata=len(request.metadata),
    )
