"""Selecting a query's series in one block, from its index alone, and reading them later.

The index gives, without touching chunk data: the matching series (postings), which of
their chunks overlap the query's range, and how many samples those chunks hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from blocks.chunk_cache import ChunkCache
from blocks.errors import NotFound
from blocks.index import BlockIndex
from blocks.meta import BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.reader import BlockReader
from querier.matchers import Matcher
from querier.postings import select_series
from querier.selection import Part, Selection

# Blocks rank below the head; among themselves by id, which sorts by creation time.
BLOCK_RANK = 0


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
) -> Selection:
    """The block's series matching `matchers` with samples in [mint, maxt].

    `fallback`: where to read the block if it vanishes from `store` (a queued block
    that was uploaded and removed from the queue meanwhile).
    """
    ids = select_series(index, matchers, checkpoint=checkpoint)
    samples = samples_in_range(index, ids, mint, maxt)
    keep = samples > 0  # every chunk holds at least one sample
    ids = ids[keep]

    def read(positions: Sequence[int]) -> list[Part]:
        wanted = [int(ids[p]) for p in positions]
        found = read_block_series(
            store, meta, index, wanted, mint, maxt, fallback=fallback, cache=cache
        )
        return [found[i] for i in wanted]

    return Selection(
        labels=[tuple(index.labels(int(i))) for i in ids],
        samples=int(samples[keep].sum()),
        rank=(BLOCK_RANK, meta.block_id),
        read=read,
    )


def samples_in_range(index: BlockIndex, ids: np.ndarray, mint: int, maxt: int) -> np.ndarray:
    """For each series in `ids`, the samples of its chunks overlapping [mint, maxt]: an
    upper bound of what a read returns, known from the index alone."""
    chunks = index.chunks
    overlap = (chunks.maxt >= mint) & (chunks.mint <= maxt)
    return _per_series_sum(
        np.where(overlap, chunks.samples.astype(np.int64), 0), index.chunk_offsets, ids
    )


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
    prefix = f"{meta.tenant}/{meta.block_id}"
    try:
        reader = BlockReader(store, prefix, meta=meta, index=index, cache=cache)
        return reader.read_series(ids, mint, maxt)
    except NotFound:
        if fallback is None:
            raise
        reader = BlockReader(fallback, prefix, meta=meta, index=index, cache=cache)
        return reader.read_series(ids, mint, maxt)


def _per_series_sum(
    per_chunk: np.ndarray, chunk_offsets: np.ndarray, ids: np.ndarray
) -> np.ndarray:
    """For each series in `ids`, the sum of `per_chunk` over its chunks."""
    running = np.zeros(len(per_chunk) + 1, dtype=np.int64)
    np.cumsum(per_chunk, out=running[1:])
    offsets = chunk_offsets.astype(np.int64)
    return running[offsets[ids.astype(np.int64) + 1]] - running[offsets[ids.astype(np.int64)]]
