"""Column codec for runs of float samples sorted by (series, time).

Used for the head's compressed batches; layout in docs/head.md#compressed-batches.
Bytes in, bytes out: timestamps as per-series deltas, values XOR'd with the series'
previous value and byte-shuffled, all compressed with zstandard. Exact to the bit.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from blocks.columns import (
    delta,
    from_planes,
    start_mask,
    to_planes,
    undelta,
    unxor_delta,
    xor_delta,
)
from blocks.compression import decompress
from blocks.errors import CorruptBlock

MAGIC = b"SSC1"
# magic, sample count, series count
HEADER = struct.Struct("<4sII")
# Level 1: the head compresses on the ingest path, where speed matters more than bytes.
ZSTD_LEVEL = 1


def encode_samples(refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """Encode samples sorted by (ref, timestamp) as one compressed batch."""
    refs = np.ascontiguousarray(refs, dtype=np.uint32)
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    starts = np.ones(len(refs), dtype=bool)
    starts[1:] = refs[1:] != refs[:-1]
    unique_refs = refs[starts]
    counts = np.diff(np.append(np.flatnonzero(starts), len(refs))).astype(np.uint32)
    body = b"".join(
        (
            unique_refs.tobytes(),
            counts.tobytes(),
            to_planes(delta(ts, starts)),
            to_planes(xor_delta(bits, counts)),
        )
    )
    compressed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(body)
    return HEADER.pack(MAGIC, len(refs), len(unique_refs)) + compressed


def decode_samples(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode_samples: (refs uint32, timestamps int64, values float64)."""
    if len(data) < HEADER.size:
        raise CorruptBlock("sample batch shorter than its header")
    magic, n, n_series = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CorruptBlock(f"sample batch has magic {magic!r}")
    expected = n_series * 8 + n * 16
    body = decompress(data[HEADER.size :], limit=expected, what="sample batch")
    if len(body) != expected:
        raise CorruptBlock(f"sample batch holds {len(body)} bytes, expected {expected}")
    unique_refs = np.frombuffer(body, np.uint32, n_series, 0)
    counts = np.frombuffer(body, np.uint32, n_series, n_series * 4)
    if (counts == 0).any():
        raise CorruptBlock("sample batch has an empty series run")
    if int(counts.sum(dtype=np.int64)) != n:
        raise CorruptBlock("sample batch series counts do not add up")
    offset = n_series * 8
    runs = counts.astype(np.int64)
    ts = undelta(from_planes(body, n, offset).view(np.int64), start_mask(runs, n))
    bits = unxor_delta(from_planes(body, n, offset + n * 8), runs)
    return np.repeat(unique_refs, counts), ts, bits.view(np.float64)
