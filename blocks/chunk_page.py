"""Chunk pages: many series' chunks compressed together; layout in docs/block-format.md#pages.

A chunk is one series' samples over part of a block's time range. Chunks of neighbouring
series (in index order, so mostly the same metric) share one zstandard frame, which is
where most of the compression comes from; a query reads and decodes whole pages.
"""

from __future__ import annotations

import struct

import numpy as np
import zstandard

from blocks.columns import (
    delta_of_delta,
    from_planes,
    run_positions,
    to_planes,
    undelta_of_delta,
    unzigzag,
    zigzag,
)
from blocks.compression import decompress
from blocks.errors import CorruptBlock
from blocks.value_words import decode_values, encode_values

PAGE_MAGIC = b"SP"
PAGE_VERSION = 1
# magic, version, chunk count, sample count
PAGE_HEADER = struct.Struct("<2sHII")
ZSTD_LEVEL = 9
# Far above what the writer makes (about 18k samples, 300 KiB): a bound for corrupt pages.
MAX_PAGE_BYTES = 64 << 20


def encode_page(counts: np.ndarray, timestamps: np.ndarray, values: np.ndarray) -> bytes:
    """Compress consecutive chunks (`counts` samples each) into one page."""
    counts = np.ascontiguousarray(counts, dtype=np.uint32)
    ts = np.ascontiguousarray(timestamps, dtype=np.int64)
    values = np.ascontiguousarray(values, dtype=np.float64)
    runs = counts.astype(np.int64)
    scales, words = encode_values(values, runs)
    body = b"".join(
        (
            PAGE_HEADER.pack(PAGE_MAGIC, PAGE_VERSION, len(counts), len(ts)),
            counts.tobytes(),
            scales.tobytes(),
            to_planes(zigzag(delta_of_delta(ts, runs))),
            to_planes(words),
        )
    )
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(body)


def decode_page(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of encode_page: (counts, timestamps, values) of all chunks of the page."""
    return decode_page_chunks(data, None)


def decode_page_chunks(
    data: bytes, slots: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, timestamps, values) of the chunks at `slots` of the page (sorted, unique
    positions; None: all), in slot order.

    The whole page is decompressed (one zstd frame), but only the wanted chunks' bytes
    are taken from the planes and decoded: a query wanting a few series of a page pays
    for those, not for the page's other chunks.
    """
    body = decompress(data, limit=MAX_PAGE_BYTES, what="chunk page")
    if len(body) < PAGE_HEADER.size:
        raise CorruptBlock("page shorter than its header")
    magic, version, n_chunks, n = PAGE_HEADER.unpack_from(body)
    if magic != PAGE_MAGIC:
        raise CorruptBlock(f"page magic {magic!r}")
    if version != PAGE_VERSION:
        raise CorruptBlock(f"page version {version} is not supported")
    if len(body) != PAGE_HEADER.size + n_chunks * 5 + n * 16:
        raise CorruptBlock("page size does not match its header")
    pos = PAGE_HEADER.size
    counts = np.frombuffer(body, np.uint32, n_chunks, pos).copy()
    scales = np.frombuffer(body, np.uint8, n_chunks, pos + 4 * n_chunks)
    pos += 5 * n_chunks
    runs = counts.astype(np.int64)
    if int(runs.sum()) != n:
        raise CorruptBlock("page chunk sizes do not add up")
    if slots is None:
        ts_words = from_planes(body, n, pos)
        words = from_planes(body, n, pos + 8 * n)
    else:
        if len(slots) and (int(slots[-1]) >= n_chunks or int(slots[0]) < 0):
            raise CorruptBlock(f"chunk slot out of the page's {n_chunks} chunks")
        picked = _sample_positions(runs, slots)
        ts_words = _planes_at(body, n, pos, picked)
        words = _planes_at(body, n, pos + 8 * n, picked)
        counts, scales, runs = counts[slots], scales[slots], runs[slots]
    ts = undelta_of_delta(unzigzag(ts_words), runs)
    return counts, ts, decode_values(words, scales, runs, what="page")


def _sample_positions(runs: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """Positions in the page of every sample of the chunks at `slots`."""
    starts = np.zeros(len(runs) + 1, dtype=np.int64)
    np.cumsum(runs, out=starts[1:])
    return run_positions(starts[slots], runs[slots])


def _planes_at(body: bytes, n: int, offset: int, picked: np.ndarray) -> np.ndarray:
    """The words at positions `picked` of the n words stored as byte planes at `offset`."""
    planes = np.frombuffer(body, np.uint8, n * 8, offset).reshape(8, n)
    return planes[:, picked].T.copy().view("<u8").ravel().astype(np.uint64, copy=False)
