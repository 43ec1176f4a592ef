"""Remote write 1.0 request bodies: content negotiation, bounded snappy, protobuf.

The declared uncompressed length is read from the snappy preamble and checked against
the limit *before* decompressing: a six-byte body can declare 4 GiB. A known field sent
with another wire type is refused, as Prometheus refuses it: protobuf would skip it as
unknown and store a series without a label, or a sample with the value 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import snappy
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

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
        # python-snappy's UncompressError is empty; the decoder's words are its cause.
        detail = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
        raise InvalidRequest(f"invalid snappy block: {detail}") from None
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


def wire_type_error(message: Message) -> str | None:
    """The first field of `message` (or of a message inside it) that was sent with a wire
    type other than its declared one, described; None if there is none.

    protobuf keeps such a field among the unknown ones; fields with numbers the message
    does not declare (Cortex's `source`, later additions) are not errors.
    """
    fields = message.DESCRIPTOR.fields_by_number
    unknowns = UnknownFieldSet(message)
    for unknown in (unknowns[i] for i in range(len(unknowns))):
        if unknown.field_number in fields:
            name = fields[unknown.field_number].name
            return (
                f"field {name} ({unknown.field_number}) of {message.DESCRIPTOR.name} has "
                f"wire type {unknown.wire_type}"
            )
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for child in value if descriptor.is_repeated else [value]:
            found = wire_type_error(child)
            if found is not None:
                return found
    return None


def parse_write_request(raw: bytes) -> RawWriteRequest:
    """The WriteRequest in `raw`; InvalidRequest for bytes that are not one."""
    try:
        request = RawWriteRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"invalid protobuf WriteRequest: {exc}") from None
    request.DiscardUnknownFields()
    if request.ByteSize() != len(raw):
        # Unknown fields, or an encoding other than protobuf's own (explicit zeros, long
        # varints): only then is it worth walking every message for a misplaced field.
        error = wire_type_error(RawWriteRequest.FromString(raw))
        if error is not None:
            raise InvalidRequest(f"invalid protobuf WriteRequest: {error}")
    return request


def decode_write_request(raw: bytes) -> DecodedWrite:
    """Parse a WriteRequest into columns without decoding label strings."""
    request = parse_write_request(raw)
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
