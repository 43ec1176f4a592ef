"""Column codec for runs of float samples sorted by (series, time).

Used for the head's compressed batches; layouts in docs/head.md#compressed-batches.
Bytes in, bytes out, exact to the bit, in one of two layouts:

- fast ("SSC1"): timestamps as per-series deltas, values XOR'd with the series' previous
  value, byte-shuffled, zstandard level 1. What a freeze writes, on the ingest path.
- compact ("SSC2"): timestamps as deltas of deltas, values as decimal mantissas where
  exact (blocks/value_words.py, as chunk pages store them), zstandard level 3. About half
  the bytes of the fast layout on exporters' counters and gauges, for three times the
  CPU: what the head keeps longest, its top-level merged runs.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from blocks.columns import (
    delta,
    delta_of_delta,
    from_planes,
    start_mask,
    to_planes,
    undelta,
    undelta_of_delta,
    unxor_delta,
    unzigzag,
    xor_delta,
    zigzag,
)
from blocks.compression import decompress
from blocks.errors import CorruptBlock
from blocks.value_words import decode_values, encode_values

MAGIC = b"SSC1"
COMPACT_MAGIC = b"SSC2"
# magic, sample count, series count
HEADER = struct.Struct("<4sII")
# Level 1: the head compresses on the ingest path, where speed matters more than bytes.
ZSTD_LEVEL = 1
# Level 3 for the compact layout: 10-15 % fewer bytes than level 1 on its planes.
COMPACT_ZSTD_LEVEL = 3


def encode_samples(
    refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray, *, compact: bool = False
) -> bytes:
    """Encode samples sorted by (ref, timestamp) as one compressed batch (the compact
    layout if `compact`)."""
    refs = np.ascontiguousarray(refs, dtype=np.uint32)
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    starts = np.ones(len(refs), dtype=bool)
    starts[1:] = refs[1:] != refs[:-1]
    unique_refs = refs[starts]
    counts = np.diff(np.append(np.flatnonzero(starts), len(refs))).astype(np.uint32)
    if compact:
        runs = counts.astype(np.int64)
        scales, words = encode_values(values, runs)
        parts: tuple[bytes, ...] = (
            scales.tobytes(),
            to_planes(zigzag(delta_of_delta(ts, runs))),
            to_planes(words),
        )
        magic, level = COMPACT_MAGIC, COMPACT_ZSTD_LEVEL
    else:
        parts = (to_planes(delta(ts, starts)), to_planes(xor_delta(values.view(np.uint64), counts)))
        magic, level = MAGIC, ZSTD_LEVEL
    body = b"".join((unique_refs.tobytes(), counts.tobytes(), *parts))
    compressed = zstandard.ZstdCompressor(level=level).compress(body)
    return HEADER.pack(magic, len(refs), len(unique_refs)) + compressed


def decode_samples(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode_samples, either layout: (refs uint32, timestamps int64, values
    float64)."""
    if len(data) < HEADER.size:
        raise CorruptBlock("sample batch shorter than its header")
    magic, n, n_series = HEADER.unpack_from(data)
    if magic not in (MAGIC, COMPACT_MAGIC):
        raise CorruptBlock(f"sample batch has magic {magic!r}")
    compact = magic == COMPACT_MAGIC
    offset = n_series * (9 if compact else 8)
    expected = offset + n * 16
    body = decompress(data[HEADER.size :], limit=expected, what="sample batch")
    if len(body) != expected:
        raise CorruptBlock(f"sample batch holds {len(body)} bytes, expected {expected}")
    unique_refs = np.frombuffer(body, np.uint32, n_series, 0)
    counts = np.frombuffer(body, np.uint32, n_series, n_series * 4)
    if (counts == 0).any():
        raise CorruptBlock("sample batch has an empty series run")
    if int(counts.sum(dtype=np.int64)) != n:
        raise CorruptBlock("sample batch series counts do not add up")
    runs = counts.astype(np.int64)
    ts_words = from_planes(body, n, offset)
    words = from_planes(body, n, offset + n * 8)
    if compact:
        scales = np.frombuffer(body, np.uint8, n_series, n_series * 8)
        ts = undelta_of_delta(unzigzag(ts_words), runs)
        values = decode_values(words, scales, runs, what="sample batch")
    else:
        ts = undelta(ts_words.view(np.int64), start_mask(runs, n))
        values = unxor_delta(words, runs).view(np.float64)
    return np.repeat(unique_refs, counts), ts, values
