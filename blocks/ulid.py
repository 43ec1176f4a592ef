"""ULIDs: 48-bit millisecond time + 80 random bits, Crockford base32, 26 characters.

Block ids sort by creation time as strings, which is what object listings return.
"""

from __future__ import annotations

import os
import time

from blocks.errors import StrataError

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
DECODE = {c: i for i, c in enumerate(ALPHABET)}
LENGTH = 26


class InvalidULID(StrataError):
    """A string that is not a ULID."""


def new_ulid(now_ms: int | None = None, randomness: bytes | None = None) -> str:
    """A new ULID for the current time (or `now_ms`)."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    rand = os.urandom(10) if randomness is None else randomness
    value = (ms << 80) | int.from_bytes(rand, "big")
    chars = []
    for _ in range(LENGTH):
        chars.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def ulid_time_ms(ulid: str) -> int:
    """The millisecond timestamp inside a ULID."""
    return parse_ulid(ulid) >> 80


def parse_ulid(ulid: str) -> int:
    """The 128-bit value of a ULID; InvalidULID if it is not one."""
    if len(ulid) != LENGTH or ulid[0] not in "01234567":
        raise InvalidULID(f"not a ULID: {ulid[:40]!r}")
    value = 0
    for c in ulid:
        digit = DECODE.get(c)
        if digit is None:
            raise InvalidULID(f"not a ULID: {ulid[:40]!r}")
        value = (value << 5) | digit
    return value


def is_ulid(text: str) -> bool:
    """Whether `text` is a ULID."""
    try:
        parse_ulid(text)
    except InvalidULID:
        return False
    return True
