"""The querier's caches: block indexes bounded in bytes, bucket indexes fresh after uploads."""

from __future__ import annotations

import builtins
from pathlib import Path

import numpy as np

from blocks.bucket_index import add_blocks
from blocks.meta import BlockMeta
from blocks.objstore.local import LocalStore
from blocks.ulid import new_ulid
from blocks.upload import upload_block
from blocks.writer import BlockWriter
from querier.index_cache import BlockIndexCache, BucketIndexCache, index_nbytes

HOUR_MS = 3_600_000


class CountingStore(LocalStore):
    """Counts whole-object reads and listings."""

    gets = 0
    lists = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)

    def list(self, prefix: str) -> builtins.list[str]:
        self.lists += 1
        return super().list(prefix)


def upload(store: LocalStore, work: Path, mint: int, series: int = 20) -> BlockMeta:
    block_id = new_ulid()
    writer = BlockWriter(work, block_id)
    for i in range(series):
        ts = mint + np.arange(50, dtype=np.int64) * 1000
        writer.add_series([("__name__", "m"), ("i", f"{i:04d}")], ts, np.arange(50.0))
    writer.finish(tenant="t")
    return upload_block(store, work / block_id, "t")


def test_block_indexes_are_fetched_once_and_evicted_least_recently_used(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "bucket")
    metas = [upload(store, tmp_path / "work", i * 2 * HOUR_MS) for i in range(3)]
    one = index_nbytes(BlockIndexCache(store, 1 << 30).get("t", metas[0].block_id))
    cache = BlockIndexCache(store, max_bytes=2 * one + one // 2)  # room for two
    store.gets = 0
    first = cache.get("t", metas[0].block_id)
    assert cache.get("t", metas[0].block_id) is first
    assert store.gets == 1
    cache.get("t", metas[1].block_id)
    cache.get("t", metas[0].block_id)  # now the most recently used
    cache.get("t", metas[2].block_id)  # evicts metas[1]
    assert len(cache) == 2
    assert cache.nbytes <= cache.max_bytes
    store.gets = 0
    cache.get("t", metas[0].block_id)
    assert store.gets == 0
    cache.get("t", metas[1].block_id)
    assert store.gets == 1
    assert (cache.hits, cache.misses) == (3, 4)


def test_bucket_index_is_reloaded_after_an_invalidation_not_before(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "bucket")
    first = upload(store, tmp_path / "work", 0)
    add_blocks(store, "t", [first])
    cache = BucketIndexCache(store, refresh_s=3600, max_age_ms=HOUR_MS)
    assert list(cache.get("t").blocks) == [first.block_id]
    second = upload(store, tmp_path / "work", 2 * HOUR_MS)
    add_blocks(store, "t", [second])
    assert list(cache.get("t").blocks) == [first.block_id], "cached until invalidated"
    cache.invalidate("t")
    store.lists = 0
    assert sorted(cache.get("t").blocks) == sorted([first.block_id, second.block_id])
    assert store.lists == 0, "the index, not a listing"


def test_a_load_that_began_before_an_invalidation_is_not_kept(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "bucket")
    first = upload(store, tmp_path / "work", 0)
    add_blocks(store, "t", [first])
    cache = BucketIndexCache(store, refresh_s=3600, max_age_ms=HOUR_MS)
    second = upload(store, tmp_path / "work", 2 * HOUR_MS)
    real_get = store.get

    def get_then_upload(key: str) -> bytes:
        # The index is read, then a gateway indexes a new block and invalidates: the
        # stale copy this load holds must not be cached.
        data = real_get(key)
        store.get = real_get  # type: ignore[method-assign]
        add_blocks(store, "t", [second])
        cache.invalidate("t")
        return data

    store.get = get_then_upload  # type: ignore[method-assign]
    assert list(cache.get("t").blocks) == [first.block_id]
    assert sorted(cache.get("t").blocks) == sorted([first.block_id, second.block_id])
