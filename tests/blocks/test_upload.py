"""Blocks go to a bucket meta.json last; a block without meta.json does not exist."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from blocks.meta import META_FILENAME
from blocks.objstore.base import ObjectStore
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.ulid import new_ulid
from blocks.upload import delete_block, list_blocks, upload_block
from blocks.writer import BlockWriter
from tests.support.values import STALE_NAN


class RecordingStore(LocalStore):
    """A local store that remembers the order of puts and can fail on one key."""

    def __init__(self, root: Path, fail_on: str = "") -> None:
        super().__init__(root)
        self.puts: list[str] = []
        self.fail_on = fail_on

    def put(self, key: str, data: bytes) -> None:
        self._record(key)
        super().put(key, data)

    def put_file(self, key: str, path: Path) -> None:
        self._record(key)
        super().put_file(key, path)

    def _record(self, key: str) -> None:
        if self.fail_on and key.endswith(self.fail_on):
            raise OSError("injected: connection lost mid-upload")
        self.puts.append(key)


def build(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    ts = np.arange(5000, dtype=np.int64) * 1000
    values = np.cumsum(np.ones(5000))
    values.view(np.uint64)[7] = STALE_NAN
    block_id = new_ulid()
    writer = BlockWriter(tmp_path / "local", block_id)
    writer.add_series([("__name__", "up"), ("job", "a")], ts, values)
    writer.finish(tenant="t")
    return tmp_path / "local" / block_id, ts, values


def test_uploaded_block_reads_back_bit_exact(tmp_path: Path, bucket: ObjectStore) -> None:
    block_dir, ts, values = build(tmp_path)
    meta = upload_block(bucket, block_dir, "t")
    assert list_blocks(bucket, "t") == [meta.block_id]
    reader = BlockReader(bucket, f"t/{meta.block_id}")
    got_ts, got_values = reader.read_series([0], 0, 10**12)[0]
    assert np.array_equal(got_ts, ts)
    assert np.array_equal(got_values.view(np.uint64), values.view(np.uint64))
    delete_block(bucket, "t", meta.block_id)
    assert list_blocks(bucket, "t") == []
    assert bucket.list("t/") == []


def test_meta_json_is_uploaded_last(tmp_path: Path) -> None:
    block_dir, _, _ = build(tmp_path)
    store = RecordingStore(tmp_path / "bucket")
    upload_block(store, block_dir, "t")
    assert store.puts[-1].endswith("/" + META_FILENAME)
    assert store.puts[-2].endswith("/index")
    assert all("/chunks/" in key for key in store.puts[:-2])


def test_upload_cut_short_leaves_no_visible_block(tmp_path: Path) -> None:
    block_dir, _, _ = build(tmp_path)
    store = RecordingStore(tmp_path / "bucket", fail_on=META_FILENAME)
    with pytest.raises(OSError, match="injected"):
        upload_block(store, block_dir, "t")
    assert store.puts, "chunks and index were put before the failure"
    assert list_blocks(store, "t") == []
    # The retry completes the same block: uploads are idempotent.
    store.fail_on = ""
    meta = upload_block(store, block_dir, "t")
    assert list_blocks(store, "t") == [meta.block_id]


def test_listing_ignores_keys_that_are_not_blocks(tmp_path: Path) -> None:
    with LocalStore(tmp_path / "bucket") as store:
        store.put("t/not-a-ulid/meta.json", b"{}")
        store.put("t/bucket-index.json", b"{}")
        assert list_blocks(store, "t") == []
