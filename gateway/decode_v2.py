"""Remote write 2.0 request bodies (io.prometheus.write.v2.Request) into DecodedWrite.

Every string of a 2.0 request is a ref into its symbol table; each ref is checked
against the table before it is used, and a request with a ref outside it, an odd
`labels_refs` or a first symbol other than "" is refused whole (400). Series labels are
encoded as the prometheus.Label messages a 1.0 sender sends, so one series written by
either protocol has one series key and one head series. Layout and rules:
docs/ingest.md#remote-write-20.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from blocks.errors import InvalidRequest
from gateway.decode import (
    METRIC_TYPES,
    V1_PROTO,
    V2_PROTO,
    DecodedWrite,
    MetricMetadata,
    series_key,
    wire_type_error,
)
from proto import write_v2_pb2

METRIC_NAME = "__name__"
# TimeSeries.created_timestamp (int64) of the 2.0 release candidates, reserved since the
# start time moved into each sample; senders of that time still send it.
CREATED_TIMESTAMP_FIELD = 6
# Request fields 1-3 are reserved so that a 1.0 WriteRequest does not parse as a 2.0 one.
V1_FIELDS = frozenset({1, 2, 3})
VARINT_WIRE_TYPE = 0
# prometheus.Label field tags: name (1) and value (2), both length-delimited.
LABEL_NAME_TAG = b"\x0a"
LABEL_VALUE_TAG = b"\x12"


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def label_message(name: bytes, value: bytes) -> bytes:
    """One prometheus.Label as protobuf encodes it canonically (empty strings left out),
    byte for byte what a 1.0 sender sends for the same label."""
    out = b""
    if name:
        out += LABEL_NAME_TAG + _uvarint(len(name)) + name
    if value:
        out += LABEL_VALUE_TAG + _uvarint(len(value)) + value
    return out


def parse_v2_request(raw: bytes) -> tuple[write_v2_pb2.Request, dict[int, int]]:
    """The Request in `raw` and the created timestamps its series carry in the older
    placement (entry index -> ms); InvalidRequest for bytes that are not one."""
    try:
        request = write_v2_pb2.Request.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"invalid protobuf {V2_PROTO}: {exc}") from None
    request.DiscardUnknownFields()
    if request.ByteSize() == len(raw):
        return request, {}
    # Unknown fields or a non-canonical encoding: only then is it worth walking every
    # message, for a misplaced wire type and for the older created_timestamp.
    full = write_v2_pb2.Request.FromString(raw)
    check_not_v1(full)
    error = wire_type_error(full)
    if error is not None:
        raise InvalidRequest(f"invalid protobuf {V2_PROTO}: {error}")
    return request, created_timestamps(full)


def check_not_v1(request: write_v2_pb2.Request) -> None:
    """InvalidRequest for a body with the Request's reserved fields 1-3: those are a 1.0
    WriteRequest's (timeseries, metadata), which would otherwise parse as an empty 2.0
    request and be answered 204 with nothing written."""
    unknowns = UnknownFieldSet(request)
    for unknown in (unknowns[i] for i in range(len(unknowns))):
        if unknown.field_number in V1_FIELDS:
            raise InvalidRequest(
                f"invalid {V2_PROTO}: it has field {unknown.field_number}, reserved for "
                f"{V1_PROTO} bodies; is a 1.0 request sent with the 2.0 Content-Type?"
            )


def created_timestamps(request: write_v2_pb2.Request) -> dict[int, int]:
    """Entry index -> TimeSeries.created_timestamp (field 6) where a series has one."""
    found: dict[int, int] = {}
    for index, series in enumerate(request.timeseries):
        unknowns = UnknownFieldSet(series)
        for unknown in (unknowns[i] for i in range(len(unknowns))):
            if unknown.field_number != CREATED_TIMESTAMP_FIELD:
                continue
            if unknown.wire_type != VARINT_WIRE_TYPE:
                raise InvalidRequest(
                    f"invalid protobuf {V2_PROTO}: field created_timestamp (6) of TimeSeries "
                    f"has wire type {unknown.wire_type}"
                )
            value = int(unknown.data)
            found[index] = value - (1 << 64) if value >= 1 << 63 else value
    return found


class SymbolTable:
    """A request's symbols with every ref checked before use."""

    def __init__(self, symbols: Sequence[str], has_series: bool) -> None:
        if symbols and symbols[0] != "":
            raise InvalidRequest(
                f"invalid {V2_PROTO}: symbols[0] must be the empty string, is {symbols[0][:64]!r}"
            )
        if has_series and not symbols:
            raise InvalidRequest(
                f'invalid {V2_PROTO}: empty symbols table (its first element must be "")'
            )
        self.strings = list(symbols)
        self.encoded = [s.encode() for s in self.strings]
        self._labels: dict[tuple[int, int], bytes] = {}

    def check(self, refs: Sequence[int], what: str) -> None:
        """InvalidRequest if any ref of `refs` is outside the table."""
        if refs and max(refs) >= len(self.strings):
            bad = next(r for r in refs if r >= len(self.strings))
            raise InvalidRequest(
                f"invalid {V2_PROTO}: {what} ref {bad} is outside the symbols table "
                f"({len(self.strings)} symbols)"
            )

    def check_pairs(self, refs: Sequence[int], what: str) -> None:
        """InvalidRequest for an odd number of refs or a ref outside the table."""
        if len(refs) % 2:
            raise InvalidRequest(f"invalid {V2_PROTO}: {what} has odd length {len(refs)}")
        self.check(refs, what)

    def label_messages(self, refs: Sequence[int]) -> list[bytes]:
        """Checked name/value ref pairs as encoded prometheus.Label messages."""
        out = []
        for i in range(0, len(refs), 2):
            pair = (refs[i], refs[i + 1])
            message = self._labels.get(pair)
            if message is None:
                message = self._labels[pair] = label_message(
                    self.encoded[pair[0]], self.encoded[pair[1]]
                )
            out.append(message)
        return out

    def pairs(self, refs: Sequence[int]) -> list[tuple[str, str]]:
        """Checked name/value ref pairs as strings."""
        return [(self.strings[refs[i]], self.strings[refs[i + 1]]) for i in range(0, len(refs), 2)]

    def metric_name(self, refs: Sequence[int]) -> str:
        """The value of __name__ among checked label refs ("" when absent)."""
        for i in range(0, len(refs), 2):
            if self.strings[refs[i]] == METRIC_NAME:
                return self.strings[refs[i + 1]]
        return ""


class _Columns:
    """The lists a request is gathered into before they become arrays."""

    def __init__(self) -> None:
        self.keys: list[bytes | tuple[bytes, ...]] = []
        self.labels: list[list[bytes]] = []
        self.sample_entry: list[int] = []
        self.timestamps: list[int] = []
        self.values: list[float] = []
        self.sample_starts: list[int] = []
        self.histogram_entry: list[int] = []
        self.histogram_ts: list[int] = []
        self.histogram_starts: list[int] = []
        self.payloads: list[bytes] = []
        self.exemplar_entry: list[int] = []
        self.exemplar_ts: list[int] = []
        self.exemplar_values: list[float] = []
        self.exemplar_labels: list[list[tuple[str, str]]] = []
        self.metadata: list[MetricMetadata] = []
        self.metadata_entry: list[int] = []

    def decoded(self) -> DecodedWrite:
        return DecodedWrite(
            series_keys=self.keys,
            series_labels=self.labels,
            sample_entry=np.array(self.sample_entry, dtype=np.int64),
            timestamps=np.array(self.timestamps, dtype=np.int64),
            values=np.array(self.values, dtype=np.float64),
            sample_start_timestamps=np.array(self.sample_starts, dtype=np.int64),
            histogram_entry=np.array(self.histogram_entry, dtype=np.int64),
            histogram_timestamps=np.array(self.histogram_ts, dtype=np.int64),
            histogram_start_timestamps=np.array(self.histogram_starts, dtype=np.int64),
            histogram_payloads=self.payloads,
            exemplar_entry=np.array(self.exemplar_entry, dtype=np.int64),
            exemplar_timestamps=np.array(self.exemplar_ts, dtype=np.int64),
            exemplar_values=np.array(self.exemplar_values, dtype=np.float64),
            exemplar_labels=self.exemplar_labels,
            metadata_entries=self.metadata,
            metadata_entry=self.metadata_entry,
            protocol=V2_PROTO,
        )


def decode_v2_request(raw: bytes) -> DecodedWrite:
    """Parse a 2.0 Request into the columns a 1.0 request gives."""
    request, created = parse_v2_request(raw)
    symbols = SymbolTable(request.symbols, bool(request.timeseries))
    out = _Columns()
    for index, series in enumerate(request.timeseries):
        refs = list(series.labels_refs)
        symbols.check_pairs(refs, f"timeseries[{index}].labels_refs")
        pairs = symbols.label_messages(refs)
        out.keys.append(series_key(pairs))
        out.labels.append(pairs)
        start = created.get(index, 0)
        for sample in series.samples:
            out.sample_entry.append(index)
            out.timestamps.append(sample.timestamp)
            out.values.append(sample.value)
            out.sample_starts.append(sample.start_timestamp or start)
        for histogram in series.histograms:
            _add_histogram(out, index, histogram, start)
        for number, exemplar in enumerate(series.exemplars):
            exemplar_refs = list(exemplar.labels_refs)
            symbols.check_pairs(exemplar_refs, f"timeseries[{index}].exemplars[{number}]")
            out.exemplar_entry.append(index)
            out.exemplar_ts.append(exemplar.timestamp)
            out.exemplar_values.append(exemplar.value)
            out.exemplar_labels.append(symbols.pairs(exemplar_refs))
        if series.HasField("metadata"):
            _add_metadata(out, index, series.metadata, symbols, symbols.metric_name(refs))
    return out.decoded()


def _add_histogram(
    out: _Columns, index: int, histogram: write_v2_pb2.Histogram, created: int
) -> None:
    start = histogram.start_timestamp or created
    if start != histogram.start_timestamp:
        # The older placement: carried into the canonical form, where it now belongs.
        histogram = write_v2_pb2.Histogram.FromString(histogram.SerializeToString())
        histogram.start_timestamp = start
    out.histogram_entry.append(index)
    out.histogram_ts.append(histogram.timestamp)
    out.histogram_starts.append(start)
    out.payloads.append(histogram.SerializeToString(deterministic=True))


def _add_metadata(
    out: _Columns,
    index: int,
    metadata: write_v2_pb2.Metadata,
    symbols: SymbolTable,
    metric: str,
) -> None:
    where = f"timeseries[{index}].metadata"
    symbols.check([metadata.help_ref], f"{where}.help_ref")
    symbols.check([metadata.unit_ref], f"{where}.unit_ref")
    if not (metadata.type or metadata.help_ref or metadata.unit_ref):
        return  # all unset: the sender knows nothing about this metric
    metric_type = METRIC_TYPES[metadata.type] if metadata.type < len(METRIC_TYPES) else "unknown"
    out.metadata.append(
        MetricMetadata(
            metric,
            metric_type,
            symbols.strings[metadata.unit_ref],
            symbols.strings[metadata.help_ref],
        )
    )
    out.metadata_entry.append(index)
