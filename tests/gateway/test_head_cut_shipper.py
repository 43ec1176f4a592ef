"""What the shipper does around a cut that goes group by group (issue 10): the samples it
keeps go back as several batches and into the WAL batch by batch, and a failed cut puts
back every batch it took, as it took them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

import gateway.head_cut
import gateway.shipper
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.decode import decode_write_request
from gateway.head import HeadSnapshot, TenantHead
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.shipper import queued_blocks
from gateway.wal import list_segments
from tests.gateway.writes import SPECIAL_BITS, time_series, write_request

T0 = 1_795_564_800_000  # aligned to 2 h
SERIES = 20
STEP_MS = 60_000


def started(tmp_path: Path, registry: CollectorRegistry | None = None) -> Gateway:
    gateway = Gateway(
        GatewayConfig(data_dir=tmp_path, head_freeze_samples=100), registry or CollectorRegistry()
    )
    gateway.recover()
    return gateway


def write_minutes(gateway: Gateway, first: int, minutes: int) -> None:
    """A sample a minute for every series, values with special bits among them."""
    series = []
    for i in range(SERIES):
        points = [
            (T0 + m * STEP_MS, SPECIAL_BITS[(i + m) % len(SPECIAL_BITS)] if m % 7 == 0 else m + i)
            for m in range(first, first + minutes)
        ]
        series.append(time_series([("__name__", "up"), ("i", f"{i:02d}")], points))
    body = write_request(*series).SerializeToString()
    outcome, durable = gateway.ingester.submit(
        "default", decode_write_request(body), now_ms=T0 + 10 * BLOCK_DURATION_MS
    )
    assert not outcome.rejected
    assert durable is not None
    durable.result(timeout=10)


def held(tenant_head: TenantHead) -> list[tuple[str, int, int]]:
    """Every sample in the head as (labels, timestamp, value bits), sorted."""
    refs, ts, values = HeadSnapshot(tenant_head.frozen, tenant_head.recent).sorted_samples()
    return sorted(
        (repr(tenant_head.label_pairs(r)), t, v)
        for r, t, v in zip(refs.tolist(), ts.tolist(), values.view(np.uint64).tolist(), strict=True)
    )


def test_kept_samples_go_back_in_batches_and_replay_from_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gateway.head_cut, "FROZEN_BATCH_SAMPLES", 64)
    first = started(tmp_path)
    write_minutes(first, 0, 120)  # the first window, cut
    write_minutes(first, 120, 45)  # 45 minutes of the next, kept
    asyncio.run(first.shipper.cut_due())

    tenant_head = first.head.tenant("default")
    kept = held(tenant_head)
    assert len(kept) == SERIES * 45
    assert {t for _, t, _ in kept} == {T0 + m * STEP_MS for m in range(120, 165)}
    assert len(tenant_head.frozen) >= SERIES * 45 // 64
    assert all(b.samples <= 64 for b in tenant_head.frozen)
    assert len(queued_blocks(first.config.upload_dir)) == 1
    asyncio.run(first.shipper.upload_queued())
    # The segments before the cut are gone: a restart has the checkpoint alone.
    assert len(list_segments(first.config.wal_dir)) == 1
    first.stop()

    again = started(tmp_path)
    assert held(again.head.tenant("default")) == kept
    again.stop()


def test_a_failed_cut_puts_back_every_batch_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = CollectorRegistry()
    gw = started(tmp_path, registry)
    for minute in range(0, 130, 3):  # many requests: many batches, and some not frozen
        write_minutes(gw, minute, min(3, 130 - minute))
    tenant_head = gw.head.tenant("default")
    before = held(tenant_head)
    batches = list(tenant_head.frozen)
    assert len(batches) > 1
    assert len(tenant_head.recent)

    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(gateway.shipper, "cut_snapshot", broken)
    asyncio.run(gw.shipper.cut_due(force=True))

    assert registry.get_sample_value("strata_head_cut_failures_total") == 1
    assert queued_blocks(gw.config.upload_dir) == []
    assert tenant_head.frozen[: len(batches)] == batches  # the same objects, in order
    assert held(tenant_head) == before
    assert tenant_head.sample_count == len(before)
    gw.stop()
