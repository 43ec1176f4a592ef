"""A block whose upload was cut short is invisible, and cleaned up once it is old enough."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from blocks.bucket_index import load_bucket_index, scan_tenant
from blocks.errors import StorageError
from blocks.meta import INDEX_FILENAME, META_FILENAME
from blocks.objstore.local import LocalStore
from blocks.partial_uploads import clean_partial_uploads, partial_blocks
from blocks.ulid import new_ulid
from blocks.upload import list_blocks, upload_block
from blocks.writer import BlockWriter

DAY_MS = 86_400_000


class CutShortStore(LocalStore):
    """Fails the put of meta.json (a crash mid-upload), or deletes the index right
    after it (a cleaner at work on an earlier attempt of the same block)."""

    fail_meta = False
    delete_index_after_meta = False

    def put(self, key: str, data: bytes) -> None:
        if key.endswith(META_FILENAME) and self.fail_meta:
            raise OSError("injected: connection lost before meta.json")
        super().put(key, data)
        if key.endswith(META_FILENAME) and self.delete_index_after_meta:
            self.delete(key.rsplit("/", 1)[0] + "/" + INDEX_FILENAME)


def build(work: Path, block_id: str) -> Path:
    writer = BlockWriter(work, block_id)
    ts = np.arange(100, dtype=np.int64) * 15_000
    writer.add_series([("__name__", "up"), ("job", "x")], ts, np.arange(100.0))
    writer.finish(tenant="t")
    return work / block_id


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_block_without_meta_is_invisible_and_cleaned_once_old(tmp_path: Path) -> None:
    store = CutShortStore(tmp_path / "bucket")
    complete = upload_block(store, build(tmp_path / "w", new_ulid()), "t")
    store.fail_meta = True
    partial = build(tmp_path / "w", new_ulid())
    with pytest.raises(OSError, match="injected"):
        upload_block(store, partial, "t")

    assert list_blocks(store, "t") == [complete.block_id]
    assert sorted(scan_tenant(store, "t").blocks) == [complete.block_id]
    assert sorted(load_bucket_index(store, "t", max_age_ms=DAY_MS).blocks) == [complete.block_id]
    assert list(partial_blocks(store, "t")) == [partial.name]

    assert clean_partial_uploads(store, "t", min_age_ms=DAY_MS) == [], "too young to judge"
    assert partial.name in partial_blocks(store, "t")
    later = now_ms() + DAY_MS + 1000
    assert clean_partial_uploads(store, "t", min_age_ms=DAY_MS, now_ms=later) == [partial.name]
    assert partial_blocks(store, "t") == {}
    assert not [k for k in store.list("t/") if k.startswith(f"t/{partial.name}/")]
    assert list_blocks(store, "t") == [complete.block_id], "complete blocks are never touched"


def test_old_block_being_uploaded_again_is_left_alone(tmp_path: Path) -> None:
    # A block cut two days ago that waited in a gateway's queue through an outage: its
    # id is old, but its objects are being written now.
    store = CutShortStore(tmp_path / "bucket")
    store.fail_meta = True
    old_id = new_ulid(now_ms=now_ms() - 2 * DAY_MS)
    with pytest.raises(OSError, match="injected"):
        upload_block(store, build(tmp_path / "w", old_id), "t")
    assert clean_partial_uploads(store, "t", min_age_ms=DAY_MS) == []
    assert old_id in partial_blocks(store, "t")
    store.fail_meta = False
    upload_block(store, tmp_path / "w" / old_id, "t")
    assert list_blocks(store, "t") == [old_id]


def test_upload_notices_objects_removed_under_it_and_a_retry_repairs(tmp_path: Path) -> None:
    store = CutShortStore(tmp_path / "bucket")
    store.delete_index_after_meta = True
    block = build(tmp_path / "w", new_ulid())
    with pytest.raises(StorageError, match="vanished"):
        upload_block(store, block, "t")
    store.delete_index_after_meta = False
    meta = upload_block(store, block, "t")
    assert store.exists(f"t/{meta.block_id}/{INDEX_FILENAME}")
