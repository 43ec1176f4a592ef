"""Big block indexes: decoded once onto local disk, read in place, bounded, and answering
exactly what the index decoded in memory answers."""

from __future__ import annotations

import dataclasses
import logging
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.index import BlockIndex
from blocks.objstore.local import LocalStore
from gateway.config import GatewayConfig
from querier import index_files
from querier.app import create_query_app
from querier.index_cache import BlockIndexCache, index_nbytes, symbols_nbytes
from querier.index_files import IndexFiles
from tests.querier.test_index_cache import HOUR_MS, CountingStore, upload
from tests.querier.test_read_api import (
    START_MS,
    LabelSet,
    gateway_app,
    matcher,
    read_samples,
    run,
    workload,
    write,
)

SERIES = 3000  # label pairs and postings of this many series pass MAP_MIN_BYTES below


@pytest.fixture(autouse=True)
def small_maps(monkeypatch: pytest.MonkeyPatch) -> None:
    # Map columns from 4 KiB on, so that a block of a few thousand series has some.
    monkeypatch.setattr(index_files, "MAP_MIN_BYTES", 4096)


def columns(index: BlockIndex) -> dict[str, np.ndarray]:
    return dict(index_files._columns(index))


def test_a_big_index_is_read_from_mapped_files_with_the_same_columns(tmp_path: Path) -> None:
    store = CountingStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", 0, series=SERIES)
    decoded = BlockIndexCache(store, 1 << 30).get("t", meta.block_id)
    files = IndexFiles(tmp_path / "cache", max_bytes=1 << 30)
    # The memory budget is smaller than four times the index: it goes to disk.
    cache = BlockIndexCache(store, index_nbytes(decoded), files)
    store.gets = 0
    mapped = cache.get("t", meta.block_id)
    assert cache.get("t", meta.block_id) is mapped
    assert store.gets == 1
    assert (len(files), len(cache)) == (1, 0), "on disk, not in memory"
    assert (cache.hits, cache.misses, files.hits, files.misses) == (1, 1, 1, 1)
    mapped_columns = columns(mapped)
    assert mapped_columns.keys() == columns(decoded).keys()
    for name, column in columns(decoded).items():
        assert mapped_columns[name].dtype == column.dtype, name
        assert np.array_equal(mapped_columns[name], column), name
    for big in (mapped.label_pairs, mapped.posting_series):
        # Plain arrays over the mapped file: np.memmap's own indexing is slow Python.
        assert type(big) is np.ndarray
        assert isinstance(big.base, np.memmap)
    assert mapped.symbols == decoded.symbols
    # Lookups through the mapped columns answer as the decoded ones do.
    assert mapped.labels(1234) == decoded.labels(1234)
    assert np.array_equal(mapped.postings("i", "0777"), decoded.postings("i", "0777"))
    rows, owners = mapped.chunk_rows(np.array([5, 2999]), 0, HOUR_MS)
    want_rows, want_owners = decoded.chunk_rows(np.array([5, 2999]), 0, HOUR_MS)
    assert np.array_equal(rows, want_rows)
    assert np.array_equal(owners, want_owners)
    mapped_bytes = mapped.label_pairs.nbytes + mapped.posting_series.nbytes
    # What the process holds of it: the columns read into memory and the symbols.
    resident = symbols_nbytes(mapped) + sum(
        c.nbytes for c in mapped_columns.values() if not isinstance(c.base, np.memmap)
    )
    assert resident <= index_nbytes(decoded) - mapped_bytes
    assert files.nbytes == sum(p.stat().st_size for p in files.dir.rglob("*.npy"))


def test_small_indexes_stay_in_memory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", 0, series=20)
    files = IndexFiles(tmp_path / "cache", max_bytes=1 << 30)
    cache = BlockIndexCache(store, 64 << 20, files)
    cache.get("t", meta.block_id)
    assert (len(cache), len(files)) == (1, 0)
    assert not list(files.dir.iterdir())


def test_the_disk_is_bounded_and_an_evicted_index_still_reads(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket")
    metas = [upload(store, tmp_path / "work", i * 2 * HOUR_MS, series=SERIES) for i in range(3)]
    probe = IndexFiles(tmp_path / "probe", max_bytes=1 << 30)
    BlockIndexCache(store, 1, probe).get("t", metas[0].block_id)
    one = probe.nbytes
    files = IndexFiles(tmp_path / "cache", max_bytes=2 * one + one // 2)  # room for two
    cache = BlockIndexCache(store, 1, files)
    first = cache.get("t", metas[0].block_id)
    cache.get("t", metas[1].block_id)
    cache.get("t", metas[2].block_id)  # evicts the first
    assert len(files) == 2
    assert files.nbytes <= files.max_bytes
    assert len(list(files.dir.iterdir())) == 2, "the evicted index's files are removed"
    # A query that still holds the evicted index reads it through its maps.
    assert first.labels(2999) == [("__name__", "m"), ("i", "2999")]
    assert int(first.postings("i", "0042")[0]) == 42


def test_an_index_larger_than_the_disk_bound_is_answered_and_not_kept(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", 0, series=SERIES)
    files = IndexFiles(tmp_path / "cache", max_bytes=1000)
    index = BlockIndexCache(store, 1, files).get("t", meta.block_id)
    assert index.labels(7) == [("__name__", "m"), ("i", "0007")]
    assert (len(files), files.nbytes) == (0, 0)
    assert not list(files.dir.iterdir())


def test_a_disk_that_refuses_writes_leaves_the_query_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = LocalStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", 0, series=SERIES)
    files = IndexFiles(tmp_path / "cache", max_bytes=1 << 30)

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "save", full)
    with caplog.at_level(logging.WARNING):
        index = BlockIndexCache(store, 1, files).get("t", meta.block_id)
    assert index.labels(3) == [("__name__", "m"), ("i", "0003")]
    assert "block index not kept on disk" in caplog.text
    assert "No space left" in caplog.text
    assert not list(files.dir.iterdir()), "the partial staging directory is removed"


def test_directories_of_processes_gone_are_removed_at_start(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = root / f"p{gone.stdout.strip()}"
    (dead / "00000001").mkdir(parents=True)
    alive = root / f"p{os.getppid()}"  # the test runner's parent lives on
    alive.mkdir()
    own = root / f"p{os.getpid()}"
    (own / "00000009").mkdir(parents=True)  # an earlier process with this pid
    files = IndexFiles(root, max_bytes=1 << 20)
    assert files.dir == own
    assert not dead.exists()
    assert alive.exists()
    assert list(own.iterdir()) == []


def test_replace_keeps_every_field_of_the_index(tmp_path: Path) -> None:
    # The mapped copy is built field by field: a field added to the index must come through.
    store = LocalStore(tmp_path / "bucket")
    meta = upload(store, tmp_path / "work", 0, series=SERIES)
    decoded = BlockIndexCache(store, 1 << 30).get("t", meta.block_id)
    mapped = BlockIndexCache(store, 1, IndexFiles(tmp_path / "c", 1 << 30)).get("t", meta.block_id)
    for field in dataclasses.fields(BlockIndex):
        want, got = getattr(decoded, field.name), getattr(mapped, field.name)
        assert type(want) is type(got) or isinstance(got, np.ndarray), field.name


def test_a_querier_with_a_tiny_index_memory_answers_from_the_disk_cache(tmp_path: Path) -> None:
    expected = workload()
    app = gateway_app(tmp_path)

    async def fill(client: httpx.AsyncClient) -> None:
        await write(client, expected)
        assert (await client.post("/api/v1/admin/flush")).status_code == 200

    run(app, fill)
    everything = (START_MS, START_MS + 10 * HOUR_MS, [matcher("__name__", "load")])

    async def read(client: httpx.AsyncClient) -> list[dict[LabelSet, list[tuple[int, int]]]]:
        return [
            *await read_samples(client, [everything]),
            *await read_samples(client, [everything]),
        ]

    # index_cache_bytes of 1: every index is more than a quarter of it.
    config = GatewayConfig(data_dir=tmp_path, index_cache_bytes=1)
    assert run(create_query_app(config, CollectorRegistry()), read) == [expected, expected]
    kept = list((tmp_path / "index-cache" / f"p{os.getpid()}").glob("*/label_pairs.npy"))
    assert len(kept) >= 3, "one per block the query read"
    elsewhere = tmp_path / "elsewhere"
    config = GatewayConfig(data_dir=tmp_path, index_cache_bytes=1, index_cache_dir=str(elsewhere))
    assert run(create_query_app(config, CollectorRegistry()), read) == [expected, expected]
    assert list(elsewhere.glob("p*/*/label_pairs.npy"))
    off = GatewayConfig(
        data_dir=tmp_path / "off",
        bucket_url=f"file://{tmp_path}/bucket",
        index_cache_bytes=1,
        index_cache_disk_bytes=0,
    )
    assert run(create_query_app(off, CollectorRegistry()), read) == [expected, expected]
    assert not (tmp_path / "off" / "index-cache").exists()
