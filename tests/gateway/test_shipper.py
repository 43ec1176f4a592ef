"""Cutting the head into blocks, uploading them, and removing the WAL behind them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.bucket_index import read_bucket_index
from blocks.errors import StorageError
from blocks.objstore.local import LocalStore
from blocks.upload import list_blocks
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.decode import decode_write_request
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.inspect import read_samples
from gateway.shipper import queued_blocks
from gateway.wal import list_segments
from tests.gateway.writes import time_series, write_request
from tests.support.values import STALE_NAN

HOUR_MS = 3_600_000
START_MS = 1_795_564_800_000  # aligned to 2 h


def bits(value: float) -> int:
    return int(np.array([value]).view(np.uint64)[0])


def write(gateway: Gateway, name: str, points: list[tuple[int, float]]) -> None:
    samples = [(t, bits(v)) for t, v in points]
    request = write_request(time_series([("__name__", name), ("job", "a")], samples))
    outcome, durable = gateway.ingester.submit(
        "default", decode_write_request(request.SerializeToString()), now_ms=START_MS + 10 * HOUR_MS
    )
    assert not outcome.rejected
    assert durable is not None
    durable.result(timeout=10)


def started(tmp_path: Path, registry: CollectorRegistry | None = None) -> Gateway:
    gateway = Gateway(GatewayConfig(data_dir=tmp_path), registry or CollectorRegistry())
    gateway.recover()
    return gateway


def test_due_window_is_cut_uploaded_and_its_wal_removed(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    old = [(START_MS + i * 60_000, float(i)) for i in range(120)]  # the first window
    recent = [(START_MS + BLOCK_DURATION_MS + HOUR_MS, 7.0)]  # an hour into the next
    write(gateway, "up", old + recent)
    first_segment = list_segments(gateway.config.wal_dir)[0][0]

    asyncio.run(gateway.shipper.step())

    store = LocalStore(tmp_path / "bucket")
    blocks = list_blocks(store, "default")
    assert len(blocks) == 1
    index = read_bucket_index(store, "default")
    assert index is not None
    assert sorted(index.blocks) == blocks
    assert gateway.shipper.queue_size() == 0
    # Only the recent sample stays in the head, re-logged in the new segment.
    assert gateway.head.tenant("default").sample_count == 1
    assert list_segments(gateway.config.wal_dir)[0][0] > first_segment, "old WAL removed"
    gateway.stop()
    stored = read_samples(tmp_path)["default"][(("__name__", "up"), ("job", "a"))]
    assert stored[0].tolist() == [t for t, _ in old + recent]
    assert stored[1].tolist() == [v for _, v in old + recent]


def test_nothing_is_cut_before_the_grace_passes(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    write(gateway, "up", [(START_MS, 1.0), (START_MS + BLOCK_DURATION_MS + 60_000, 2.0)])
    asyncio.run(gateway.shipper.step())
    assert list_blocks(LocalStore(tmp_path / "bucket"), "default") == []
    assert gateway.head.tenant("default").sample_count == 2
    gateway.stop()


def test_failed_upload_keeps_block_queued_and_wal_until_retry(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    gateway = started(tmp_path, registry)
    write(gateway, "up", [(START_MS, 1.0), (START_MS + 3 * HOUR_MS, 2.0)])
    real_put = gateway.store.put
    calls: list[str] = []

    def failing_put(key: str, data: bytes) -> None:
        calls.append(key)
        raise StorageError("put", key, "injected outage")

    gateway.store.put = failing_put  # type: ignore[method-assign]
    asyncio.run(gateway.shipper.step())
    assert calls, "an upload was attempted"
    assert gateway.shipper.queue_size() == 1
    first_segment = list_segments(gateway.config.wal_dir)[0][0]
    assert registry.get_sample_value("strata_block_upload_failures_total") == 1

    gateway.store.put = real_put  # type: ignore[method-assign]
    gateway.shipper._next_upload = 0.0  # the backoff has passed
    asyncio.run(gateway.shipper.step())
    assert gateway.shipper.queue_size() == 0
    assert list_segments(gateway.config.wal_dir)[0][0] > first_segment
    gateway.stop()
    stored = read_samples(tmp_path)["default"][(("__name__", "up"), ("job", "a"))]
    assert stored[0].tolist() == [START_MS, START_MS + 3 * HOUR_MS]


def test_block_stays_queued_until_the_bucket_index_has_it(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    write(gateway, "up", [(START_MS, 1.0), (START_MS + 3 * HOUR_MS, 2.0)])
    first_segment = list_segments(gateway.config.wal_dir)[0][0]

    def refused(key: str, data: bytes, *etag: str) -> bool:
        raise StorageError("put", key, "injected outage")

    real_put_if_absent = gateway.store.put_if_absent
    gateway.store.put_if_absent = refused  # type: ignore[method-assign]
    asyncio.run(gateway.shipper.step())
    store = LocalStore(tmp_path / "bucket")
    assert len(list_blocks(store, "default")) == 1, "the block itself is uploaded"
    assert read_bucket_index(store, "default") is None
    assert gateway.shipper.queue_size() == 1
    assert list_segments(gateway.config.wal_dir)[0][0] == first_segment, "WAL kept"

    gateway.store.put_if_absent = real_put_if_absent  # type: ignore[method-assign]
    gateway.shipper._next_upload = 0.0  # the backoff has passed
    asyncio.run(gateway.shipper.step())
    index = read_bucket_index(store, "default")
    assert index is not None
    assert sorted(index.blocks) == list_blocks(store, "default")
    assert gateway.shipper.queue_size() == 0
    assert list_segments(gateway.config.wal_dir)[0][0] > first_segment
    gateway.stop()


def test_restart_uploads_queue_and_keeps_every_sample_bit_exact(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    values = np.array([1.5, -0.0, 3.25])
    values.view(np.uint64)[1] = STALE_NAN
    points = [(START_MS + i, float(v)) for i, v in enumerate(values)]
    points.append((START_MS + 5 * HOUR_MS, 4.0))
    write(gateway, "up", points)
    gateway.store.put = lambda key, data: (_ for _ in ()).throw(  # type: ignore[method-assign]
        StorageError("put", key, "down")
    )
    asyncio.run(gateway.shipper.step())
    assert gateway.shipper.queue_size() == 1
    gateway.stop()  # the queued block and the whole WAL are still on disk

    again = started(tmp_path)
    asyncio.run(again.shipper.step())
    assert again.shipper.queue_size() == 0
    again.stop()
    ts, got = read_samples(tmp_path)["default"][(("__name__", "up"), ("job", "a"))]
    assert ts.tolist() == [t for t, _ in points]
    assert got.view(np.uint64)[:3].tolist() == values.view(np.uint64).tolist()


def test_block_left_half_removed_from_the_queue_is_neither_uploaded_nor_kept(
    tmp_path: Path,
) -> None:
    gateway = started(tmp_path)
    write(gateway, "up", [(START_MS, 1.0), (START_MS + 3 * HOUR_MS, 2.0)])
    gateway.store.put = lambda key, data: (_ for _ in ()).throw(  # type: ignore[method-assign]
        StorageError("put", key, "down")
    )
    asyncio.run(gateway.shipper.step())
    [(_, block_dir)] = queued_blocks(gateway.config.upload_dir)
    gateway.stop()
    # What a kill in the middle of removing an uploaded block leaves behind.
    half_removed = block_dir.with_name(block_dir.name + ".tmp")
    block_dir.rename(half_removed)
    (half_removed / "index").unlink()
    assert queued_blocks(gateway.config.upload_dir) == []
    again = started(tmp_path)
    assert not half_removed.exists()
    again.stop()


def test_readers_list_the_queue_again_only_after_the_shipper_changed_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gateway = started(tmp_path)
    listings = []

    def counted(upload_dir: Path) -> list[tuple[str, Path]]:
        listings.append(upload_dir)
        return queued_blocks(upload_dir)

    monkeypatch.setattr("gateway.app.queued_blocks", counted)
    write(gateway, "up", [(START_MS, 1.0), (START_MS + 3 * HOUR_MS, 2.0)])
    assert gateway.local_view("default").queued == []
    assert gateway.local_view("default").queued == []
    assert len(listings) == 1, "nothing changed the queue"

    def refused(key: str, data: bytes) -> None:
        raise StorageError("put", key, "injected outage")

    real_put = gateway.store.put
    gateway.store.put = refused  # type: ignore[method-assign]
    asyncio.run(gateway.shipper.step())  # cut: one block queued, its upload refused
    queued = gateway.local_view("default").queued
    assert [m.mint for m in queued] == [START_MS]
    gateway.local_view("default")
    assert len(listings) == 2, "listed again once, after the cut"

    gateway.store.put = real_put  # type: ignore[method-assign]
    gateway.shipper._next_upload = 0.0  # the backoff has passed
    asyncio.run(gateway.shipper.step())  # uploaded, and gone from the queue
    assert gateway.local_view("default").queued == []
    assert len(listings) == 3
    gateway.stop()
