"""A write that makes a window due wakes the shipper at once, not at its next look."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from pathlib import Path

from prometheus_client import CollectorRegistry

from blocks.objstore.local import LocalStore
from blocks.upload import list_blocks
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.cut_alarm import NEVER, CutAlarm, CutWatch
from gateway.decode import decode_write_request
from gateway.head_cut import BLOCK_DURATION_MS
from tests.gateway.test_shipper import START_MS, bits
from tests.gateway.writes import time_series, write_request

GRACE_MS = 10 * 60_000


def armed() -> tuple[CutAlarm, list[int]]:
    rings: list[int] = []
    alarm = CutAlarm()
    alarm.arm(lambda: rings.append(1), window_ms=BLOCK_DURATION_MS, grace_ms=GRACE_MS)
    return alarm, rings


def test_rings_once_when_a_sample_reaches_the_oldest_windows_due_time() -> None:
    alarm, rings = armed()
    watch = CutWatch(alarm)
    watch.stored(START_MS + 5, START_MS + 60_000)
    due = START_MS + BLOCK_DURATION_MS + GRACE_MS
    watch.stored(START_MS + 60_000, due - 1)
    assert rings == []
    watch.stored(due, due)
    assert rings == [1]
    watch.stored(due + 1, due + 60_000)
    assert rings == [1], "once, until the shipper has looked"


def test_an_older_sample_brings_the_due_time_forward() -> None:
    alarm, rings = armed()
    watch = CutWatch(alarm)
    watch.stored(START_MS + BLOCK_DURATION_MS, START_MS + BLOCK_DURATION_MS)
    watch.stored(START_MS, START_MS + BLOCK_DURATION_MS + GRACE_MS)
    assert rings == [1]


def test_after_a_look_a_window_still_due_stays_quiet() -> None:
    alarm, rings = armed()
    watch = CutWatch(alarm)
    # The shipper looked and left a due window in the head (its cut failed): ringing on
    # every write would retry the cut at the rate of requests.
    watch.reset((START_MS, START_MS + 3 * BLOCK_DURATION_MS))
    watch.stored(START_MS + 3 * BLOCK_DURATION_MS, START_MS + 3 * BLOCK_DURATION_MS + 1)
    assert rings == []
    # A look that found the head within its first window arms it again.
    watch.reset((START_MS, START_MS + 1))
    watch.stored(START_MS + 2, START_MS + BLOCK_DURATION_MS + GRACE_MS)
    assert rings == [1]
    watch.reset(None)
    assert (watch.oldest, watch.due) == (NEVER, NEVER)


def test_an_alarm_never_armed_never_rings() -> None:
    watch = CutWatch(CutAlarm())
    watch.stored(0, NEVER - 1)
    assert watch.due == NEVER


def test_a_backfill_is_cut_as_soon_as_its_first_window_is_due(tmp_path: Path) -> None:
    """The shipper looks only hourly here: a block within seconds of the write that made
    its window due can only come from the write waking it."""
    config = replace(GatewayConfig(data_dir=tmp_path), cut_interval_s=3600.0)
    gateway = Gateway(config, CollectorRegistry())
    gateway.recover()
    store = LocalStore(tmp_path / "bucket")

    async def submit(points: list[tuple[int, float]]) -> None:
        request = write_request(
            time_series([("__name__", "up"), ("job", "a")], [(t, bits(v)) for t, v in points])
        )
        outcome, durable = gateway.ingester.submit(
            "default",
            decode_write_request(request.SerializeToString()),
            now_ms=START_MS + 24 * 3_600_000,
        )
        assert not outcome.rejected
        assert durable is not None
        await asyncio.wrap_future(durable)

    async def scenario() -> list[str]:
        stop = asyncio.Event()
        shipping = asyncio.create_task(gateway.shipper.run(stop))
        try:
            await submit([(START_MS + i * 60_000, float(i)) for i in range(120)])
            await asyncio.sleep(0.2)  # the shipper's first look: nothing due yet
            assert list_blocks(store, "default") == []
            await submit([(START_MS + BLOCK_DURATION_MS + GRACE_MS, 1.0)])
            deadline = time.monotonic() + 20
            while not list_blocks(store, "default") and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            return list_blocks(store, "default")
        finally:
            stop.set()
            await shipping

    try:
        assert len(asyncio.run(scenario())) == 1
        assert gateway.head.tenant("default").sample_count == 1, "the due sample stays"
    finally:
        gateway.stop()
