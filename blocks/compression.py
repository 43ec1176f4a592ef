"""zstandard frames with a bound on what they may decompress to.

A frame declares its content size; a corrupt declaration must be refused before the
decompressor allocates it, or one flipped byte becomes a MemoryError.
"""

from __future__ import annotations

import zstandard

from blocks.errors import CorruptBlock


def decompress(data: bytes, *, limit: int, what: str) -> bytes:
    """The content of one zstd frame of at most `limit` bytes; CorruptBlock otherwise."""
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        raise CorruptBlock(f"{what} is not a zstd frame: {exc}") from None
    if size < 0 or size > limit:
        raise CorruptBlock(f"{what} declares {size} bytes, more than {limit} or unknown")
    try:
        content: bytes = zstandard.ZstdDecompressor().decompress(data)
    except zstandard.ZstdError as exc:
        raise CorruptBlock(f"{what} does not decompress: {exc}") from None
    if len(content) != size:
        raise CorruptBlock(f"{what} holds {len(content)} bytes, declared {size}")
    return content
