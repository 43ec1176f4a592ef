"""Unsigned LEB128 varints, as protobuf, Go's encoding/binary and the stream frames use."""

from __future__ import annotations


def uvarint(n: int) -> bytes:
    """7 bits a byte, low first, the high bit set on all but the last; n >= 0."""
    if n < 0x80:  # the usual lengths written without a loop: one byte, or two
        return bytes((n,))
    if n < 0x4000:
        return bytes(((n & 0x7F) | 0x80, n >> 7))
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)
