"""Histogram chunks of a block: one series' histogram samples as one zstd frame of
blocks/histogram_codec.py's columns; layout in docs/block-format.md#histogram-chunks.

Bytes in, bytes out, like a page; the writer puts them in chunk segment files and the
index's histogram section says where (blocks/index.py: HistogramRefs).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import zstandard

from blocks.compression import decompress
from blocks.errors import CorruptBlock
from blocks.histogram_codec import decode_histograms, encode_histograms

# Samples per histogram chunk: the unit a query trims to its range. Histograms are some
# ten times a float sample's size, so a chunk holds fewer than a float chunk's 2,048.
HISTOGRAM_CHUNK_MAX_SAMPLES = 1024
ZSTD_LEVEL = 9
# A histogram chunk decompressing to more than this is taken for corruption: 1,024
# samples of the widest histograms Prometheus allows stay far below it.
MAX_HISTOGRAM_CHUNK_BYTES = 256 << 20


def encode_histogram_chunk(timestamps: np.ndarray, payloads: Sequence[bytes]) -> bytes:
    """One chunk: time-sorted, duplicate-free samples of one series, compressed."""
    columns = encode_histograms(timestamps, payloads)
    return zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_checksum=True).compress(columns)


def decode_histogram_chunk(data: bytes, samples: int) -> tuple[np.ndarray, list[bytes]]:
    """Inverse of encode_histogram_chunk; CorruptBlock unless it holds `samples` samples."""
    columns = decompress(data, limit=MAX_HISTOGRAM_CHUNK_BYTES, what="histogram chunk")
    ts, payloads = decode_histograms(columns)
    if len(ts) != samples:
        raise CorruptBlock(f"histogram chunk holds {len(ts)} samples, the index says {samples}")
    return ts, payloads
