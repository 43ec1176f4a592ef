"""Remote-write request bodies: content negotiation, bounded snappy, the 1.0 protobuf.

`Content-Type` picks the message: bare `application/x-protobuf` or
`proto=prometheus.WriteRequest` is remote write 1.0 (decoded here),
`proto=io.prometheus.write.v2.Request` is 2.0 (gateway/decode_v2.py); both give the same
`DecodedWrite` columns, so the write path cannot tell them apart.

The declared uncompressed length is read from the snappy preamble and checked against
the limit *before* decompressing: a six-byte body can declare 4 GiB. A known field sent
with another wire type is refused, as Prometheus refuses it: protobuf would skip it as
unknown and store a series without a label, or a sample with the value 0.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import snappy
from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from blocks.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from blocks.histogram_codec import canonical_histogram as codec_canonical_histogram
from gateway.decode_known import LabelsOfKeys, decode_known
from proto import types_pb2
from proto.write_raw_pb2 import RawWriteRequest
from querier.varint import uvarint

M = TypeVar("M", bound=Message)

V1_PROTO = "prometheus.WriteRequest"
V2_PROTO = "io.prometheus.write.v2.Request"
PROTOBUF_MEDIA_TYPE = "application/x-protobuf"
# The metadata API's names of the metric types; index = the enum number, the same in
# prometheus.MetricMetadata (1.0) and io.prometheus.write.v2.Metadata (2.0).
METRIC_TYPES = (
    "unknown",
    "counter",
    "gauge",
    "histogram",
    "gaugehistogram",
    "summary",
    "info",
    "stateset",
)


@dataclass(frozen=True, slots=True)
class MetricMetadata:
    """Type, unit and help of one metric, as a sender described it."""

    metric: str
    type: str
    unit: str
    help: str


def _int64s() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def _float64s() -> np.ndarray:
    return np.empty(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class DecodedWrite:
    """One remote-write request (1.0 or 2.0) with its samples as columns.

    `series_keys[i]` identifies the i-th TimeSeries entry's labels as sent (series_key);
    `series_labels[i]` are its labels as encoded prometheus.Label messages (2.0 labels
    are encoded the same way, so one series sent by either protocol has one key);
    `sample_entry[j]` says which entry sample j belongs to, `sample_start_timestamps[j]`
    when its counter started (0: unknown). Histograms come as `histogram_payloads`, each
    an io.prometheus.write.v2.Histogram serialized deterministically whichever protocol
    carried it; exemplars as columns with their own labels as canonical label bytes.
    """

    series_keys: list[bytes | tuple[bytes, ...]]
    series_labels: Sequence[list[bytes]]
    sample_entry: np.ndarray
    timestamps: np.ndarray
    values: np.ndarray
    sample_start_timestamps: np.ndarray = field(default_factory=_int64s)
    histogram_entry: np.ndarray = field(default_factory=_int64s)
    histogram_timestamps: np.ndarray = field(default_factory=_int64s)
    histogram_start_timestamps: np.ndarray = field(default_factory=_int64s)
    histogram_payloads: list[bytes] = field(default_factory=list)
    exemplar_entry: np.ndarray = field(default_factory=_int64s)
    exemplar_timestamps: np.ndarray = field(default_factory=_int64s)
    exemplar_values: np.ndarray = field(default_factory=_float64s)
    exemplar_labels: list[list[tuple[str, str]]] = field(default_factory=list)
    metadata_entries: list[MetricMetadata] = field(default_factory=list)
    # 2.0 metadata rides on a series: the entry whose __name__ names the metric (-1: 1.0's
    # per-family metadata, named by the entry itself).
    metadata_entry: list[int] = field(default_factory=list)
    protocol: str = V1_PROTO

    @property
    def histograms(self) -> int:
        """Histogram samples in the request."""
        return len(self.histogram_payloads)

    @property
    def exemplars(self) -> int:
        """Exemplars in the request."""
        return len(self.exemplar_entry)

    @property
    def metadata(self) -> int:
        """Metadata entries in the request."""
        return len(self.metadata_entries)

    @property
    def start_timestamps(self) -> int:
        """Samples and histograms that carry a start (created) timestamp."""
        return int(np.count_nonzero(self.sample_start_timestamps)) + int(
            np.count_nonzero(self.histogram_start_timestamps)
        )


def check_content_headers(headers: Mapping[str, str]) -> str:
    """The protobuf message a request's headers name (V1_PROTO or V2_PROTO); 415 for
    another encoding than snappy or another content type or message."""
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding != "snappy":
        raise UnsupportedMediaType(
            f"unsupported Content-Encoding {encoding or '(none)'!r}: remote write needs snappy"
        )
    content_type = headers.get("content-type", PROTOBUF_MEDIA_TYPE)
    media, _, params = content_type.partition(";")
    if media.strip().lower() != PROTOBUF_MEDIA_TYPE:
        raise UnsupportedMediaType(f"unsupported Content-Type {content_type!r}")
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() != "proto":
            continue
        # RFC 9110 allows a parameter value as a quoted string.
        message = value.strip().removeprefix('"').removesuffix('"')
        if message not in (V1_PROTO, V2_PROTO):
            raise UnsupportedMediaType(
                f"unsupported remote write message {message!r}: this Strata accepts "
                f"{V1_PROTO} and {V2_PROTO}"
            )
        return message
    return V1_PROTO


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


def series_key(pairs: list[bytes]) -> bytes:
    """A dict key for a series as a sender encoded its labels, before any validation: the
    label messages as the `labels` fields of a TimeSeries, each with its tag and length,
    exactly as protobuf writes them.

    The messages merely concatenated would not do: different lists of messages can make
    the same bytes, and an invalid list would then find a valid series unchecked. With
    tags and lengths the bytes parse back into exactly one list; and they are the bytes
    a sender puts in front of a series' samples, which is what lets the steady-state
    path (gateway/decode_known.py) find a known series without parsing its entry.
    """
    return b"".join([b"".join((b"\x0a", uvarint(len(p)), p)) for p in pairs])


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


def parse_nested(message_type: type[M], raw: bytes, what: str) -> M:
    """One message kept as bytes by the raw 1.0 view (a histogram, an exemplar, a
    metadata entry), parsed and checked like the request around it."""
    try:
        message = message_type.FromString(raw)
    except (DecodeError, ValueError) as exc:
        raise InvalidRequest(f"invalid protobuf WriteRequest: {what}: {exc}") from None
    error = wire_type_error(message)
    if error is not None:
        raise InvalidRequest(f"invalid protobuf WriteRequest: {error}")
    message.DiscardUnknownFields()
    return message


def canonical_histogram(histogram: Message) -> bytes:
    """A histogram of either protocol as the io.prometheus.write.v2.Histogram bytes the
    storage side keeps: 1.0's Histogram has the same field numbers and enum values for
    all it has (2.0 only adds start_timestamp), so its bytes parse as the 2.0 message."""
    histogram.DiscardUnknownFields()
    return codec_canonical_histogram(histogram.SerializeToString())


def _known_series_request(raw: bytes, known_keys: Container[object]) -> DecodedWrite | None:
    known = decode_known(raw, known_keys)
    if known is None:
        return None
    keys, timestamps, values = known
    series_keys: list[bytes | tuple[bytes, ...]] = list(keys)
    return DecodedWrite(
        series_keys=series_keys,
        series_labels=LabelsOfKeys(keys),
        sample_entry=np.arange(len(keys), dtype=np.int64),
        timestamps=timestamps,
        values=values,
        sample_start_timestamps=np.zeros(len(keys), dtype=np.int64),
    )


def decode_write_request(raw: bytes, known_keys: Container[object] = ()) -> DecodedWrite:
    """Parse a 1.0 WriteRequest into columns without decoding label strings.

    `known_keys`: the series keys the tenant's head knows; a request of known series
    with one plain sample each is read without protobuf objects (gateway/decode_known.py).
    """
    if known_keys:
        fast = _known_series_request(raw, known_keys)
        if fast is not None:
            return fast
    request = parse_write_request(raw)
    keys: list[bytes | tuple[bytes, ...]] = []
    labels: list[list[bytes]] = []
    entries: list[int] = []
    timestamps: list[int] = []
    values: list[float] = []
    histogram_entry: list[int] = []
    histogram_ts: list[int] = []
    payloads: list[bytes] = []
    exemplar_entry: list[int] = []
    exemplar_ts: list[int] = []
    exemplar_values: list[float] = []
    exemplar_labels: list[list[tuple[str, str]]] = []
    for index, series in enumerate(request.timeseries):
        pairs = list(series.labels)
        keys.append(series_key(pairs))
        labels.append(pairs)
        for sample in series.samples:
            entries.append(index)
            timestamps.append(sample.timestamp)
            values.append(sample.value)
        for raw_histogram in series.histograms:
            histogram = parse_nested(types_pb2.Histogram, raw_histogram, "histogram")
            histogram_entry.append(index)
            histogram_ts.append(histogram.timestamp)
            payloads.append(canonical_histogram(histogram))
        for raw_exemplar in series.exemplars:
            exemplar = parse_nested(types_pb2.Exemplar, raw_exemplar, "exemplar")
            exemplar_entry.append(index)
            exemplar_ts.append(exemplar.timestamp)
            exemplar_values.append(exemplar.value)
            exemplar_labels.append([(label.name, label.value) for label in exemplar.labels])
    metadata = []
    for raw_metadata in request.metadata:
        entry = parse_nested(types_pb2.MetricMetadata, raw_metadata, "metadata")
        metric_type = METRIC_TYPES[entry.type] if entry.type < len(METRIC_TYPES) else "unknown"
        metadata.append(
            MetricMetadata(entry.metric_family_name, metric_type, entry.unit, entry.help)
        )
    return DecodedWrite(
        series_keys=keys,
        series_labels=labels,
        sample_entry=np.array(entries, dtype=np.int64),
        timestamps=np.array(timestamps, dtype=np.int64),
        values=np.array(values, dtype=np.float64),
        sample_start_timestamps=np.zeros(len(entries), dtype=np.int64),
        histogram_entry=np.array(histogram_entry, dtype=np.int64),
        histogram_timestamps=np.array(histogram_ts, dtype=np.int64),
        histogram_start_timestamps=np.zeros(len(payloads), dtype=np.int64),
        histogram_payloads=payloads,
        exemplar_entry=np.array(exemplar_entry, dtype=np.int64),
        exemplar_timestamps=np.array(exemplar_ts, dtype=np.int64),
        exemplar_values=np.array(exemplar_values, dtype=np.float64),
        exemplar_labels=exemplar_labels,
        metadata_entries=metadata,
        metadata_entry=[-1] * len(metadata),
        protocol=V1_PROTO,
    )
