"""The bucket index: updated by compare-and-swap, read instead of a listing, rebuilt on drift."""

from __future__ import annotations

import builtins
import json
import threading
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zstandard

from blocks.bucket_index import (
    BucketIndex,
    add_blocks,
    index_key,
    load_bucket_index,
    mark_for_deletion,
    read_bucket_index,
    rebuild_bucket_index,
    remove_blocks,
    scan_tenant,
)
from blocks.errors import CorruptBlock
from blocks.meta import BlockMeta
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.ulid import new_ulid
from blocks.upload import delete_block, list_blocks, upload_block
from blocks.writer import BlockWriter

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class ListCountingStore(LocalStore):
    """A local store that counts listings: what the index is there to avoid."""

    lists = 0

    def list(self, prefix: str) -> builtins.list[str]:
        self.lists += 1
        return super().list(prefix)


def upload(store: ObjectStore, work: Path, tenant: str, mint: int) -> BlockMeta:
    """Build a one-series block starting at `mint` and upload it, without indexing it."""
    block_id = new_ulid()
    ts = mint + np.arange(10, dtype=np.int64) * 1000
    writer = BlockWriter(work, block_id)
    writer.add_series([("__name__", "up")], ts, np.ones(10))
    writer.finish(tenant=tenant)
    return upload_block(store, work / block_id, tenant)


def test_uploads_recorded_in_the_index_are_found_without_listing(tmp_path: Path) -> None:
    store = ListCountingStore(tmp_path / "bucket")
    metas = [upload(store, tmp_path / "work", "t", i * 2 * HOUR_MS) for i in range(3)]
    for meta in metas:
        add_blocks(store, "t", [meta])
    store.lists = 0
    index = load_bucket_index(store, "t", max_age_ms=HOUR_MS)
    assert store.lists == 0
    assert index.blocks == {m.block_id: m for m in metas}
    assert index.deletion_marks == {}
    assert [m.block_id for m in index.overlapping(2 * HOUR_MS, 2 * HOUR_MS + 5)] == [
        metas[1].block_id
    ]


def test_missing_index_is_built_from_a_listing_on_first_update(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    unindexed = upload(bucket, tmp_path / "work", "t", 0)
    assert read_bucket_index(bucket, "t") is None
    assert load_bucket_index(bucket, "t", max_age_ms=HOUR_MS).blocks == {
        unindexed.block_id: unindexed
    }
    fresh = upload(bucket, tmp_path / "work", "t", 2 * HOUR_MS)
    add_blocks(bucket, "t", [fresh])
    stored = read_bucket_index(bucket, "t")
    assert stored is not None
    assert sorted(stored.blocks) == sorted([unindexed.block_id, fresh.block_id])


def test_racing_writers_lose_no_block(bucket: ObjectStore, tmp_path: Path) -> None:
    writers = 4
    uploaded = [upload(bucket, tmp_path / "work", "t", i * 2 * HOUR_MS) for i in range(8)]
    metas = [uploaded[w::writers] for w in range(writers)]
    errors: list[BaseException] = []

    def add_one_by_one(mine: list[BlockMeta]) -> None:
        try:
            for meta in mine:
                add_blocks(bucket, "t", [meta])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add_one_by_one, args=(m,)) for m in metas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    stored = read_bucket_index(bucket, "t")
    assert stored is not None
    assert sorted(stored.blocks) == sorted(m.block_id for mine in metas for m in mine)


def test_unreadable_index_is_listed_around_and_rebuilt(bucket: ObjectStore, tmp_path: Path) -> None:
    meta = upload(bucket, tmp_path / "work", "t", 0)
    bucket.put(index_key("t"), b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(CorruptBlock):
        read_bucket_index(bucket, "t")
    assert sorted(load_bucket_index(bucket, "t", max_age_ms=HOUR_MS).blocks) == [meta.block_id]
    other = upload(bucket, tmp_path / "work", "t", 2 * HOUR_MS)
    add_blocks(bucket, "t", [other])
    stored = read_bucket_index(bucket, "t")
    assert stored is not None
    assert sorted(stored.blocks) == sorted([meta.block_id, other.block_id])


def test_index_of_an_unknown_version_is_refused() -> None:
    index = BucketIndex("t", 0)
    data = index.encode()
    assert BucketIndex.decode(data) == index
    doc = json.loads(zstandard.ZstdDecompressor().decompress(data))
    doc["version"] = 99
    with pytest.raises(CorruptBlock, match="version 99"):
        BucketIndex.decode(zstandard.ZstdCompressor().compress(json.dumps(doc).encode()))


def test_stale_index_is_not_trusted(tmp_path: Path) -> None:
    store = ListCountingStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", "t", 0)
    index = add_blocks(store, "t", [meta])
    # A block uploaded by a writer that died before indexing it, and an index last
    # written a day ago: readers list instead.
    late = upload(store, tmp_path / "work", "t", 2 * HOUR_MS)
    store.put(index_key("t"), replace(index, updated_ms=index.updated_ms - DAY_MS).encode())
    store.lists = 0
    found = load_bucket_index(store, "t", max_age_ms=HOUR_MS)
    assert store.lists == 1
    assert sorted(found.blocks) == sorted([meta.block_id, late.block_id])


def test_rebuild_repairs_drift_both_ways(bucket: ObjectStore, tmp_path: Path) -> None:
    kept = upload(bucket, tmp_path / "work", "t", 0)
    deleted = upload(bucket, tmp_path / "work", "t", 2 * HOUR_MS)
    add_blocks(bucket, "t", [kept, deleted])
    unindexed = upload(bucket, tmp_path / "work", "t", 4 * HOUR_MS)
    delete_block(bucket, "t", deleted.block_id)
    rebuilt = rebuild_bucket_index(bucket, "t")
    assert sorted(rebuilt.blocks) == sorted([kept.block_id, unindexed.block_id])
    assert read_bucket_index(bucket, "t") == rebuilt
    assert scan_tenant(bucket, "t").blocks == rebuilt.blocks


def test_deletion_marks_are_indexed_once_and_removal_forgets_them(
    bucket: ObjectStore, tmp_path: Path
) -> None:
    meta = upload(bucket, tmp_path / "work", "t", 0)
    add_blocks(bucket, "t", [meta])
    first = mark_for_deletion(bucket, "t", meta.block_id).deletion_marks[meta.block_id]
    again = mark_for_deletion(bucket, "t", meta.block_id).deletion_marks[meta.block_id]
    assert again == first, "the first mark's time counts"
    assert scan_tenant(bucket, "t").deletion_marks == {meta.block_id: first}
    delete_block(bucket, "t", meta.block_id)
    after = remove_blocks(bucket, "t", [meta.block_id])
    assert after.blocks == {}
    assert after.deletion_marks == {}
    assert list_blocks(bucket, "t") == []


def test_tenants_have_separate_indexes(bucket: ObjectStore, tmp_path: Path) -> None:
    a = upload(bucket, tmp_path / "work", "a", 0)
    b = upload(bucket, tmp_path / "work", "b", 0)
    add_blocks(bucket, "a", [a])
    add_blocks(bucket, "b", [b])
    assert sorted(load_bucket_index(bucket, "a", max_age_ms=HOUR_MS).blocks) == [a.block_id]
    assert sorted(load_bucket_index(bucket, "b", max_age_ms=HOUR_MS).blocks) == [b.block_id]
