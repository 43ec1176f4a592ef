"""Protobuf wire format and snappy blocks written by hand, for bytes no encoder would make.

The generated classes refuse to write invalid UTF-8, a field with the wrong wire type or
a length that lies; hostile-input tests need exactly those. Layouts: protobuf's encoding
guide (tag = field number << 3 | wire type; varints 7 bits a byte, low bits first) and
snappy's block format (uvarint uncompressed length, then literal and copy elements).
"""

from __future__ import annotations

import struct

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
START_GROUP = 3
END_GROUP = 4
FIXED32 = 5


def uvarint(value: int) -> bytes:
    """`value` (0 ≤ value < 2**64) as a protobuf varint."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    """A field's key."""
    return uvarint(number << 3 | wire_type)


def varint_field(number: int, value: int) -> bytes:
    """A varint field; negative int64 values take ten bytes, as on the wire."""
    return tag(number, VARINT) + uvarint(value & 0xFFFF_FFFF_FFFF_FFFF)


def fixed64_field(number: int, bits: int) -> bytes:
    """A 64-bit field (a double given by its bits)."""
    return tag(number, FIXED64) + struct.pack("<Q", bits)


def bytes_field(number: int, data: bytes) -> bytes:
    """A length-delimited field: bytes, string or embedded message."""
    return tag(number, LENGTH_DELIMITED) + uvarint(len(data)) + data


def label(name: bytes, value: bytes) -> bytes:
    """A prometheus.Label message with any bytes as name and value (UTF-8 or not), in
    protobuf's own encoding: fields in order, empty ones left out."""
    return (bytes_field(1, name) if name else b"") + (bytes_field(2, value) if value else b"")


def sample(timestamp: int, bits: int) -> bytes:
    """A prometheus.Sample message: value as raw bits, timestamp as int64."""
    return fixed64_field(1, bits) + varint_field(2, timestamp)


def time_series(labels: list[bytes], samples: list[bytes]) -> bytes:
    """A prometheus.TimeSeries of encoded Label and Sample messages."""
    return b"".join(bytes_field(1, x) for x in labels) + b"".join(
        bytes_field(2, x) for x in samples
    )


def write_request(series: list[bytes]) -> bytes:
    """A prometheus.WriteRequest of encoded TimeSeries messages."""
    return b"".join(bytes_field(1, s) for s in series)


def snappy_literal(data: bytes, declared: int | None = None) -> bytes:
    """A snappy block holding `data` as literals, declaring `declared` bytes (default: the
    truth): a block whose preamble can lie."""
    out = bytearray(uvarint(len(data) if declared is None else declared))
    for start in range(0, len(data), 1 << 16):
        piece = data[start : start + (1 << 16)]
        size = len(piece) - 1
        if size < 60:
            out.append(size << 2)
        else:
            out.append(61 << 2)  # two bytes of length follow
            out += size.to_bytes(2, "little")
        out += piece
    return bytes(out)


def split_fields(data: bytes) -> list[bytes] | None:
    """The top-level fields of a message, each with its key (a group from its start to its
    end tag); None if `data` is not a sequence of whole fields. Mutations use it to drop,
    repeat and reorder fields."""
    fields: list[bytes] = []
    pos = 0
    while pos < len(data):
        end = _field_end(data, pos)
        if end is None:
            return None
        fields.append(data[pos:end])
        pos = end
    return fields


def _field_end(data: bytes, pos: int, depth: int = 0) -> int | None:
    key, pos = _read_uvarint(data, pos)
    if key is None or key >> 3 == 0:
        return None
    wire_type = key & 7
    if wire_type == VARINT:
        _, pos = _read_uvarint(data, pos)
    elif wire_type == FIXED64:
        pos += 8
    elif wire_type == FIXED32:
        pos += 4
    elif wire_type == LENGTH_DELIMITED:
        length, pos = _read_uvarint(data, pos)
        if length is None:
            return None
        pos += length
    elif wire_type == START_GROUP and depth < 64:
        end_tag = tag(key >> 3, END_GROUP)
        while not data.startswith(end_tag, pos):
            if pos >= len(data):
                return None
            inner = _field_end(data, pos, depth + 1)
            if inner is None:
                return None
            pos = inner
        pos += len(end_tag)
    else:
        return None
    return pos if pos <= len(data) else None


# What a message's known fields must look like on the wire: field number -> (the wire
# types protobuf accepts for it, the schema of the message inside, if checked).
Schema = dict[int, tuple[frozenset[int], "Schema | None"]]
_LEN = frozenset({LENGTH_DELIMITED})
_VARINT = frozenset({VARINT})
SAMPLE_SCHEMA: Schema = {1: (frozenset({FIXED64}), None), 2: (_VARINT, None)}
LABEL_SCHEMA: Schema = {1: (_LEN, None), 2: (_LEN, None)}
TIME_SERIES_SCHEMA: Schema = {
    1: (_LEN, LABEL_SCHEMA),
    2: (_LEN, SAMPLE_SCHEMA),
    3: (_LEN, None),
    4: (_LEN, None),
}
WRITE_REQUEST_SCHEMA: Schema = {1: (_LEN, TIME_SERIES_SCHEMA), 3: (_LEN, None)}
MATCHER_SCHEMA: Schema = {1: (_VARINT, None), 2: (_LEN, None), 3: (_LEN, None)}
HINTS_SCHEMA: Schema = {
    1: (_VARINT, None),
    2: (_LEN, None),
    3: (_VARINT, None),
    4: (_VARINT, None),
    5: (_LEN, None),
    6: (_VARINT, None),
    7: (_VARINT, None),
}
QUERY_SCHEMA: Schema = {
    1: (_VARINT, None),
    2: (_VARINT, None),
    3: (_LEN, MATCHER_SCHEMA),
    4: (_LEN, HINTS_SCHEMA),
}
READ_REQUEST_SCHEMA: Schema = {
    1: (_LEN, QUERY_SCHEMA),
    2: (frozenset({VARINT, LENGTH_DELIMITED}), None),  # a repeated enum, packed or not
}


def fits_schema(data: bytes, schema: Schema) -> bool:
    """Whether every known field, at every level the schema describes, has a wire type
    protobuf accepts for it. Fields the schema does not know are skipped, as protobuf
    skips them."""
    fields = split_fields(data)
    if fields is None:
        return False
    for field in fields:
        key, _ = _read_uvarint(field, 0)
        assert key is not None
        known = schema.get(key >> 3)
        if known is None:
            continue
        wire_types, inner = known
        if key & 7 not in wire_types:
            return False
        if inner is not None:
            payload = length_delimited_payload(field)
            if payload is None or not fits_schema(payload[1], inner):
                return False
    return True


def length_delimited_payload(field: bytes) -> tuple[int, bytes] | None:
    """(number, payload) of one whole length-delimited field; None for other wire types."""
    key, pos = _read_uvarint(field, 0)
    if key is None or key & 7 != LENGTH_DELIMITED:
        return None
    length, pos = _read_uvarint(field, pos)
    if length is None or pos + length != len(field):
        return None
    return key >> 3, field[pos:]


def _read_uvarint(data: bytes, pos: int) -> tuple[int | None, int]:
    value = shift = 0
    while pos < len(data) and shift < 70:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None, len(data) + 1
