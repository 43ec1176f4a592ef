"""Byte mutations for fuzzing: what a broken sender, a bad proxy or an attacker makes of a
valid request. Each mutation is a pure function of the bytes and a random.Random, so a
failing mutation is reproduced from the seed hypothesis reports.

Byte-level mutations work on anything; field-level ones parse the top level of a
protobuf message (tests/support/wire.py) and drop, repeat, reorder or retag whole fields;
the snappy ones rewrite the block's length preamble.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from tests.support import wire

Mutation = Callable[[bytes, random.Random], bytes]


def flip_bit(data: bytes, rng: random.Random) -> bytes:
    """One bit inverted."""
    if not data:
        return b"\x01"
    out = bytearray(data)
    out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def set_byte(data: bytes, rng: random.Random) -> bytes:
    """One byte replaced, often by a boundary value."""
    if not data:
        return bytes([rng.randrange(256)])
    out = bytearray(data)
    out[rng.randrange(len(out))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xFF, rng.randrange(256)))
    return bytes(out)


def truncate(data: bytes, rng: random.Random) -> bytes:
    """Cut short anywhere (a dropped connection, a too small buffer)."""
    return data[: rng.randrange(len(data) + 1)]


def insert_bytes(data: bytes, rng: random.Random) -> bytes:
    """A few random bytes inserted."""
    at = rng.randrange(len(data) + 1)
    return data[:at] + rng.randbytes(rng.randrange(1, 9)) + data[at:]


def delete_range(data: bytes, rng: random.Random) -> bytes:
    """A run of bytes taken out."""
    if not data:
        return data
    start = rng.randrange(len(data))
    return data[:start] + data[start + rng.randrange(1, 17) :]


def duplicate_range(data: bytes, rng: random.Random) -> bytes:
    """A run of bytes repeated in place."""
    if not data:
        return data
    start = rng.randrange(len(data))
    end = min(len(data), start + rng.randrange(1, 33))
    return data[:end] + data[start:end] + data[end:]


def splice_self(data: bytes, rng: random.Random) -> bytes:
    """The head of the bytes joined to a tail taken from elsewhere in them."""
    if len(data) < 2:
        return data + data
    return data[: rng.randrange(len(data))] + data[rng.randrange(len(data)) :]


def _fields_or_bytes(
    data: bytes, rng: random.Random, change: Callable[[list[bytes]], None]
) -> bytes:
    fields = wire.split_fields(data)
    if not fields:
        return flip_bit(data, rng)
    change(fields)
    return b"".join(fields)


def duplicate_field(data: bytes, rng: random.Random) -> bytes:
    """A whole top-level field sent twice (repeated fields grow; a scalar's last wins)."""

    def change(fields: list[bytes]) -> None:
        fields.insert(rng.randrange(len(fields) + 1), rng.choice(fields))

    return _fields_or_bytes(data, rng, change)


def drop_field(data: bytes, rng: random.Random) -> bytes:
    """A whole top-level field left out."""

    def change(fields: list[bytes]) -> None:
        del fields[rng.randrange(len(fields))]

    return _fields_or_bytes(data, rng, change)


def shuffle_fields(data: bytes, rng: random.Random) -> bytes:
    """Top-level fields in another order."""
    return _fields_or_bytes(data, rng, rng.shuffle)


def add_field(data: bytes, rng: random.Random) -> bytes:
    """A field of any number and wire type added: unknown, or known with the wrong type."""
    number = rng.choice((1, 2, 3, 4, 5, rng.randrange(1, 1 << 29)))
    kind = rng.choice((wire.VARINT, wire.FIXED64, wire.LENGTH_DELIMITED, wire.FIXED32))
    if kind == wire.VARINT:
        field = wire.varint_field(number, rng.getrandbits(64))
    elif kind == wire.FIXED64:
        field = wire.fixed64_field(number, rng.getrandbits(64))
    elif kind == wire.FIXED32:
        field = wire.tag(number, wire.FIXED32) + rng.randbytes(4)
    else:
        field = wire.bytes_field(number, rng.randbytes(rng.randrange(12)))
    at = rng.choice((0, len(data)))
    return data[:at] + field + data[at:]


def retag_field(data: bytes, rng: random.Random) -> bytes:
    """A top-level field's key replaced, payload kept: another number or wire type."""

    def change(fields: list[bytes]) -> None:
        i = rng.randrange(len(fields))
        key = fields[i][0]
        fields[i] = bytes([key ^ (1 << rng.randrange(7))]) + fields[i][1:]

    return _fields_or_bytes(data, rng, change)


def rewrite_preamble(data: bytes, rng: random.Random) -> bytes:
    """A snappy block's declared length changed: off by a little, huge, or endless."""
    rest = data
    while rest and rest[0] & 0x80:
        rest = rest[1:]
    rest = rest[1:]
    declared = rng.choice(
        (
            max(0, len(data) + rng.randrange(-3, 4)),
            rng.randrange(1 << 32),
            (1 << 35) - 1,
        )
    )
    preamble = wire.uvarint(declared) if rng.random() < 0.9 else b"\xff" * 5
    return preamble + rest


BYTE_MUTATIONS: tuple[Mutation, ...] = (
    flip_bit,
    set_byte,
    truncate,
    insert_bytes,
    delete_range,
    duplicate_range,
    splice_self,
)
FIELD_MUTATIONS: tuple[Mutation, ...] = (
    duplicate_field,
    drop_field,
    shuffle_fields,
    add_field,
    retag_field,
)


def mutate_nested(data: bytes, rng: random.Random, mutations: tuple[Mutation, ...]) -> bytes:
    """Mutations inside an embedded message (a series, a label, a sample; a query, a
    matcher), its field framed again with the right length: the parser gets past the
    outer levels and meets the damage deep down."""
    fields = wire.split_fields(data)
    embedded = [i for i, f in enumerate(fields or []) if wire.length_delimited_payload(f)]
    if not fields or not embedded:
        return mutate(data, rng, mutations)
    i = rng.choice(embedded)
    found = wire.length_delimited_payload(fields[i])
    assert found is not None
    number, payload = found
    if rng.random() < 0.5:
        payload = mutate_nested(payload, rng, mutations)
    else:
        payload = mutate(payload, rng, mutations)
    fields[i] = wire.bytes_field(number, payload)
    return b"".join(fields)


def mutate(data: bytes, rng: random.Random, mutations: tuple[Mutation, ...]) -> bytes:
    """One to three mutations, drawn from `mutations`, applied in turn."""
    for _ in range(rng.randrange(1, 4)):
        data = rng.choice(mutations)(data, rng)
    return data
