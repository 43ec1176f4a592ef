"""Selecting a query's series in one block, from its index alone, and reading them later.

The index gives, without touching chunk data: the matching series (postings), which of
their chunks overlap the query's range, and how many samples those chunks hold; the same
for native histogram chunks, in blocks that have them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TypeVar

import numpy as np

from blocks.chunk_cache import ChunkCache
from blocks.errors import NotFound
from blocks.index import BlockIndex, per_owner_sum
from blocks.meta import BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.reader import BlockReader
from querier.matchers import Matcher
from querier.postings import select_series
from querier.selection import EncodedChunks, HistogramPart, Part, Piece, Selection
from querier.stream_chunks import EncodedChunkCache, clipped_pieces, encode_stored_chunks
from querier.xor_chunk import SAMPLES_PER_CHUNK

# Blocks rank below the head; among themselves by id, which sorts by creation time.
BLOCK_RANK = 0

T = TypeVar("T")


def select_block(
    store: ObjectStore,
    meta: BlockMeta,
    index: BlockIndex,
    matchers: Sequence[Matcher],
    mint: int,
    maxt: int,
    *,
    checkpoint: Callable[[], None],
    fallback: ObjectStore | None = None,
    cache: ChunkCache | None = None,
    encoded_cache: EncodedChunkCache | None = None,
) -> Selection:
    """The block's series matching `matchers` with samples in [mint, maxt].

    `fallback`: where to read the block if it vanishes from `store` (a queued block
    that was uploaded and removed from the queue meanwhile). `cache` keeps decoded
    chunks, `encoded_cache` XOR-encoded ones for streamed answers.
    """
    ids = select_series(index, matchers, checkpoint=checkpoint)
    samples = samples_in_range(index, ids, mint, maxt)
    histograms = index.histogram_refs().samples_in_range(ids, mint, maxt)
    keep = (samples > 0) | (histograms > 0)  # every chunk holds at least one sample
    ids = ids[keep]

    def read(positions: Sequence[int]) -> list[Part]:
        wanted = [int(ids[p]) for p in positions]
        found = read_block_series(
            store, meta, index, wanted, mint, maxt, fallback=fallback, cache=cache
        )
        return [found[i] for i in wanted]

    def read_pieces(positions: Sequence[int]) -> list[list[Piece]]:
        wanted = [int(ids[p]) for p in positions]
        pieces = partial(block_pieces, mint=mint, maxt=maxt, encoded_cache=encoded_cache)
        found = _with_fallback(store, fallback, meta, index, cache, wanted, pieces)
        return [found[i] for i in wanted]

    def read_histograms(positions: Sequence[int]) -> list[HistogramPart]:
        wanted = [int(ids[p]) for p in positions]
        found = read_block_histograms(
            store, meta, index, wanted, mint, maxt, fallback=fallback, cache=cache
        )
        return [found[i] for i in wanted]

    histogram_count = int(histograms[keep].sum())
    return Selection(
        labels=index.label_sets(ids),
        samples=int(samples[keep].sum()),
        rank=(BLOCK_RANK, meta.block_id),
        read=read,
        span=(meta.mint, meta.maxt),
        read_pieces=read_pieces,
        histograms=histogram_count,
        read_histograms=read_histograms if histogram_count else None,
    )


def samples_in_range(index: BlockIndex, ids: np.ndarray, mint: int, maxt: int) -> np.ndarray:
    """For each series in `ids`, the samples of its chunks overlapping [mint, maxt]: an
    upper bound of what a read returns, known from the index alone. Only the rows of
    `ids` are looked at: a query of 100 series in a block of a million costs 100 rows."""
    rows, owners = index.chunk_rows(ids, mint, maxt)
    return per_owner_sum(index.chunks.samples[rows], owners, len(ids))


def read_block_series(
    store: ObjectStore,
    meta: BlockMeta,
    index: BlockIndex,
    ids: Sequence[int],
    mint: int,
    maxt: int,
    *,
    fallback: ObjectStore | None = None,
    cache: ChunkCache | None = None,
) -> dict[int, Part]:
    """Samples in [mint, maxt] of the block's series `ids`, from `store`, else `fallback`;
    decoded chunks come from and go to `cache`."""

    def samples(reader: BlockReader, ids: Sequence[int]) -> dict[int, Part]:
        return reader.read_series(ids, mint, maxt)

    return _with_fallback(store, fallback, meta, index, cache, ids, samples)


def read_block_histograms(
    store: ObjectStore,
    meta: BlockMeta,
    index: BlockIndex,
    ids: Sequence[int],
    mint: int,
    maxt: int,
    *,
    fallback: ObjectStore | None = None,
    cache: ChunkCache | None = None,
) -> dict[int, HistogramPart]:
    """Histograms in [mint, maxt] of the block's series `ids`, as read_block_series."""

    def histograms(reader: BlockReader, ids: Sequence[int]) -> dict[int, HistogramPart]:
        return reader.read_histograms(ids, mint, maxt)

    return _with_fallback(store, fallback, meta, index, cache, ids, histograms)


# Stored chunks longer than this that a range cuts through are encoded whole and cached
# (querier/stream_chunks.clipped_pieces); two XOR chunks' worth.
CUT_WHOLE_SAMPLES = 2 * SAMPLES_PER_CHUNK


def block_pieces(
    reader: BlockReader,
    ids: Sequence[int],
    *,
    mint: int,
    maxt: int,
    encoded_cache: EncodedChunkCache | None,
) -> dict[int, list[Piece]]:
    """The series `ids` as streamed-answer pieces: each stored chunk inside [mint, maxt]
    XOR-encoded whole (from `encoded_cache`, or encoded and put there), the chunks the
    range cuts through as their samples within it."""
    chunks = reader.index.chunks
    block_id = reader.meta.block_id
    rows, owners = reader.index.chunk_rows(ids, mint, maxt)
    inside = (chunks.mint[rows] >= mint) & (chunks.maxt[rows] <= maxt)
    # A long stored chunk the range cuts through is encoded whole too, so that the XOR
    # chunks inside the range are copied; a short one is cheaper to cut and encode.
    encode_whole = inside | (chunks.samples[rows] > CUT_WHOLE_SAMPLES)
    pages, slots = chunks.page[rows].tolist(), chunks.slot[rows].tolist()
    # Per chunk row: its whole encoding (found in the cache, or to make) or None.
    encoded: list[EncodedChunks | None] = [None] * len(rows)
    misses = []
    for at, whole in enumerate(encode_whole.tolist()):
        if whole:
            key = (block_id, pages[at], slots[at])
            found = encoded_cache.get(key) if encoded_cache is not None else None
            if found is None:
                misses.append(at)
            encoded[at] = found
    row_list = rows.tolist()
    inside_list = inside.tolist()
    decode = [row_list[at] for at, e in enumerate(encoded) if e is None or not inside_list[at]]
    decoded = reader.chunks_at(np.array(decode, dtype=np.int64))
    fresh = encode_stored_chunks([decoded[row_list[at]] for at in misses])
    for at, chunk in zip(misses, fresh, strict=True):
        encoded[at] = chunk
        if encoded_cache is not None:
            encoded_cache.put((block_id, pages[at], slots[at]), chunk)
    out: dict[int, list[Piece]] = {series: [] for series in ids}
    for at, (row, owner) in enumerate(zip(row_list, owners.tolist(), strict=True)):
        piece = encoded[at]
        if inside_list[at]:
            assert piece is not None
            out[ids[owner]].append(piece)
        elif piece is not None:
            out[ids[owner]].extend(clipped_pieces(piece, decoded[row], mint, maxt))
        else:
            ts, values = decoded[row]
            keep = (ts >= mint) & (ts <= maxt)
            if keep.any():
                out[ids[owner]].append((ts[keep], values[keep]))
    return out


def _with_fallback(
    store: ObjectStore,
    fallback: ObjectStore | None,
    meta: BlockMeta,
    index: BlockIndex,
    cache: ChunkCache | None,
    ids: Sequence[int],
    read: Callable[[BlockReader, Sequence[int]], dict[int, T]],
) -> dict[int, T]:
    """`read` from the block in `store`, else (vanished from there) in `fallback`."""
    prefix = f"{meta.tenant}/{meta.block_id}"
    try:
        return read(BlockReader(store, prefix, meta=meta, index=index, cache=cache), ids)
    except NotFound:
        if fallback is None:
            raise
        return read(BlockReader(fallback, prefix, meta=meta, index=index, cache=cache), ids)
