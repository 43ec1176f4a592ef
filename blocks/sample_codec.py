"""Column codec for runs of float samples sorted by (series, time).

Used for the head's compressed batches; layout in docs/head.md#compressed-batches.
Bytes in, bytes out: timestamps as per-series deltas, values XOR'd with the series'
previous value and byte-shuffled, all compressed with zstandard. Exact to the bit.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from blocks.compression import decompress
from blocks.errors import CorruptBlock

MAGIC = b"SSC1"
# magic, sample count, series count
HEADER = struct.Struct("<4sII")
# Level 1: the head compresses on the ingest path, where speed matters more than bytes.
ZSTD_LEVEL = 1


def series_starts(refs: np.ndarray) -> np.ndarray:
    """Mask of the first sample of each run of equal refs."""
    starts = np.ones(len(refs), dtype=bool)
    starts[1:] = refs[1:] != refs[:-1]
    return starts


def encode_samples(refs: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """Encode samples sorted by (ref, timestamp) as one compressed batch."""
    refs = np.ascontiguousarray(refs, dtype=np.uint32)
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    bits = np.ascontiguousarray(values, dtype=np.float64).view(np.uint64)
    starts = series_starts(refs)
    unique_refs = refs[starts]
    counts = np.diff(np.append(np.flatnonzero(starts), len(refs))).astype(np.uint32)
    # int64 subtraction wraps on overflow; the cumulative sum in decoding wraps back.
    deltas = ts.copy()
    deltas[1:] -= ts[:-1]
    deltas[starts] = ts[starts]
    xored = bits.copy()
    xored[1:] ^= bits[:-1]
    xored[starts] = bits[starts]
    shuffled = xored.view(np.uint8).reshape(-1, 8).T.copy()
    body = b"".join(
        (
            unique_refs.tobytes(),
            counts.tobytes(),
            deltas.view(np.uint8).reshape(-1, 8).T.tobytes(),
            shuffled.tobytes(),
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
    deltas = np.frombuffer(body, np.uint8, n * 8, offset).reshape(8, n).T.copy().view(np.int64)
    shuffled = np.frombuffer(body, np.uint8, n * 8, offset + n * 8).reshape(8, n)
    xored = shuffled.T.copy().view(np.uint64).ravel()
    refs = np.repeat(unique_refs, counts)
    first = np.zeros(n_series, dtype=np.int64)
    first[1:] = np.cumsum(counts[:-1], dtype=np.int64)
    ts = segmented_cumsum(deltas.ravel(), first)
    bits = segmented_xor_scan(xored, first, counts)
    return refs, ts, bits.view(np.float64)


def segmented_cumsum(deltas: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Running sum that restarts at every index in `first` (int64, wrapping)."""
    total = np.cumsum(deltas, dtype=np.int64)
    if len(first) == 0:
        return total
    before = np.zeros(len(first), dtype=np.int64)
    before[1:] = total[first[1:] - 1]
    counts = np.diff(np.append(first, len(deltas)))
    return total - np.repeat(before, counts)


def segmented_xor_scan(xored: np.ndarray, first: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Running XOR that restarts at every index in `first`.

    XOR is its own inverse, so a run's scan is the global scan XOR'd with the global scan
    just before the run starts, as a cumulative sum is corrected by subtraction.
    """
    total = np.bitwise_xor.accumulate(xored)
    if len(first) == 0:
        return total
    before = np.zeros(len(first), dtype=np.uint64)
    before[1:] = total[first[1:] - 1]
    return total ^ np.repeat(before, counts)
