"""Decoded chunks kept between reads: a repeated read is served from memory, answers the
same, and the cache stays within its bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blocks.chunk_cache import ENTRY_OVERHEAD_BYTES, ChunkCache
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from tests.compactor.bucket_data import T0, WINDOW_MS, labels, put_block, synthetic

NAMES = [labels("up", job=f"j{i}") for i in range(40)]


class CountingStore(LocalStore):
    """A local store that counts range reads."""

    range_reads = 0

    def get_range(self, key: str, start: int, end: int) -> bytes:
        self.range_reads += 1
        return super().get_range(key, start, end)


def test_a_repeated_read_is_served_from_the_cache_bit_for_bit(tmp_path: Path) -> None:
    data = synthetic(T0, T0 + WINDOW_MS, 15_000, NAMES)
    with CountingStore(tmp_path / "bucket") as store:
        meta = put_block(store, tmp_path, "t", data, T0, T0 + WINDOW_MS)
        cache = ChunkCache(64 << 20)
        reader = BlockReader(store, f"t/{meta.block_id}", meta=meta, cache=cache)
        wanted = [3, 17, 30]
        first = reader.read_series(wanted, T0, T0 + WINDOW_MS)
        reads = store.range_reads
        assert cache.misses == len(cache) > 0
        again = reader.read_series(wanted, T0, T0 + WINDOW_MS)
        assert store.range_reads == reads  # nothing fetched
        assert cache.hits == len(cache)
        uncached = BlockReader(store, f"t/{meta.block_id}", meta=meta).read_series(
            wanted, T0, T0 + WINDOW_MS
        )
        for series in wanted:
            for got in (first[series], again[series]):
                assert got[0].tolist() == uncached[series][0].tolist()
                assert (
                    got[1].view(np.uint64).tolist() == uncached[series][1].view(np.uint64).tolist()
                )


def test_the_cache_drops_the_least_recently_used_beyond_its_bytes() -> None:
    chunk = (np.arange(100, dtype=np.int64), np.zeros(100))
    size = chunk[0].nbytes + chunk[1].nbytes + ENTRY_OVERHEAD_BYTES
    cache = ChunkCache(3 * size)
    for slot in range(3):
        cache.put(("b", 0, slot), chunk)
    assert cache.get(("b", 0, 0)) is not None  # now the most recent
    cache.put(("b", 0, 3), chunk)
    assert cache.nbytes <= 3 * size
    assert cache.get(("b", 0, 1)) is None  # the least recent went
    assert cache.get(("b", 0, 0)) is not None
    assert cache.get(("b", 0, 3)) is not None
