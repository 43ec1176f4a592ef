"""The write-ahead log: group commit, segments, replay into a head, repair, write failures."""

from __future__ import annotations

import errno
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.errors import CorruptWAL, StorageError, Unavailable
from gateway.config import GatewayConfig
from gateway.head import Head
from gateway.metrics import GatewayMetrics
from gateway.validate import decode_labels
from gateway.wal import FRAME, SEGMENT_HEADER, WAL, frame, list_segments
from gateway.wal_record import SamplesRecord, SeriesRecord, decode, encode_samples, encode_series
from gateway.wal_replay import ReplayReport, read_segment, replay
from gateway.write import Ingester
from tests.gateway.writes import SPECIAL_BITS, STALE_NAN, canonical, decoded, time_series

NOW_MS = 1_700_000_000_000
REAL_FSYNC = os.fsync
REAL_WRITE = os.write

# tenant -> labels -> [(timestamp, value bits)], time-sorted
Contents = dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, int]]]]


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> GatewayMetrics:
    return GatewayMetrics(registry)


@pytest.fixture
def wal_dir(tmp_path: Path) -> Path:
    return tmp_path / "wal"


@pytest.fixture
def wal(wal_dir: Path, metrics: GatewayMetrics) -> Iterator[WAL]:
    log = WAL(wal_dir, segment_bytes=1 << 20, fsync=True, metrics=metrics)
    log.start()
    yield log
    log.close()


def labels_of(series: int) -> bytes:
    return canonical([("__name__", "m"), ("series", str(series))])


def record(tenant: str, samples: list[tuple[int, int, int]]) -> bytes:
    """Framed records defining the series they use, then their samples (ref, ts, bits)."""
    refs = sorted({s[0] for s in samples})
    return frame(encode_series(tenant, refs, [labels_of(r) for r in refs])) + frame(
        encode_samples(
            tenant,
            np.array([s[0] for s in samples], dtype=np.uint32),
            np.array([s[1] for s in samples], dtype=np.int64),
            np.array([s[2] for s in samples], dtype=np.uint64).view(np.float64),
        )
    )


def submit(wal: WAL, tenant: str, samples: list[tuple[int, int, int]]) -> Future[None]:
    data = record(tenant, samples)
    return wal.submit(wal.begin(len(data)), data)


def contents(head: Head) -> Contents:
    out: Contents = {}
    for tenant, tenant_head in head.tenants.items():
        series = out.setdefault(tenant, {})
        for labels, ts, values in tenant_head.series_samples():
            points = zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True)
            series[tuple(decode_labels(labels))] = list(points)
    return out


def expected(samples: list[tuple[str, int, int, int]]) -> Contents:
    """What a head holds after these (tenant, series, ts, bits) samples."""
    out: Contents = {}
    for tenant, series, ts, bits in sorted(samples):
        key = (("__name__", "m"), ("series", str(series)))
        out.setdefault(tenant, {}).setdefault(key, []).append((ts, bits))
    return out


def replayed(
    wal_dir: Path, registry: CollectorRegistry | None = None
) -> tuple[Contents, ReplayReport]:
    head = Head(max_bytes=1 << 40, freeze_samples=16)
    metrics = GatewayMetrics(registry) if registry is not None else None
    report = replay(wal_dir, head, metrics)
    return contents(head), report


def write_samples(wal: WAL, count: int, tenant: str = "t") -> list[tuple[str, int, int, int]]:
    """`count` durable requests of two samples each; the samples, as `expected` takes them."""
    written: list[tuple[str, int, int, int]] = []
    for i in range(count):
        bits = SPECIAL_BITS[i % len(SPECIAL_BITS)]
        batch = [(i % 3, 1000 * i, bits), (3, 1000 * i, STALE_NAN)]
        submit(wal, tenant, batch).result(timeout=10)
        written += [(tenant, ref, ts, b) for ref, ts, b in batch]
    return written


def frame_starts(data: bytes) -> list[int]:
    """Offsets of the frames of a well-formed segment."""
    starts: list[int] = []
    pos = SEGMENT_HEADER.size
    while pos < len(data):
        starts.append(pos)
        (length, _) = FRAME.unpack_from(data, pos)
        pos += FRAME.size + length
    assert pos == len(data)
    return starts


def test_records_come_back_through_replay_bit_exact(wal: WAL, wal_dir: Path) -> None:
    written = write_samples(wal, 12)
    written += [("other", 0, -7, STALE_NAN)]
    submit(wal, "other", [(0, -7, STALE_NAN)]).result(timeout=10)
    wal.close()
    got, report = replayed(wal_dir)
    assert got == expected(written)
    assert report.damage == []
    assert report.samples == len(written)
    assert report.records == 2 * 13


def test_replay_of_a_missing_or_empty_directory_is_empty(tmp_path: Path) -> None:
    assert replayed(tmp_path / "nowhere") == ({}, ReplayReport())
    (tmp_path / "empty").mkdir()
    assert replayed(tmp_path / "empty") == ({}, ReplayReport())


def test_a_new_wal_never_appends_to_an_existing_segment(
    wal: WAL, wal_dir: Path, metrics: GatewayMetrics
) -> None:
    first = write_samples(wal, 2)
    wal.close()
    before = {p.name: p.read_bytes() for _, p in list_segments(wal_dir)}
    again = WAL(wal_dir, segment_bytes=1 << 20, fsync=True, metrics=metrics)
    again.start()
    submit(again, "t", [(9, 5, STALE_NAN)]).result(timeout=10)
    again.close()
    segments = list_segments(wal_dir)
    assert [p.name for _, p in segments] == ["00000001", "00000002"]
    assert segments[0][1].read_bytes() == before["00000001"]
    got, _ = replayed(wal_dir)
    assert got == expected([*first, ("t", 9, 5, STALE_NAN)])


def test_concurrent_submits_share_fsyncs(
    wal: WAL, wal_dir: Path, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    fsyncs: list[int] = []

    def slow_fsync(fd: int) -> None:
        fsyncs.append(fd)
        time.sleep(0.005)  # a disk slow enough for requests to queue behind it
        REAL_FSYNC(fd)

    monkeypatch.setattr("gateway.wal.os.fsync", slow_fsync)
    requests = 64

    def one_request(i: int) -> None:
        submit(wal, "t", [(i, i, STALE_NAN)]).result(timeout=10)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one_request, range(requests)))
    grouped = registry.get_sample_value("strata_wal_group_commit_requests_sum")
    groups = registry.get_sample_value("strata_wal_group_commit_requests_count")
    assert grouped == requests
    assert groups is not None
    assert groups < requests / 2
    assert len(fsyncs) < requests / 2
    assert registry.get_sample_value("strata_wal_fsync_duration_seconds_count") == groups
    wal.close()
    got, _ = replayed(wal_dir)
    assert got == expected([("t", i, i, STALE_NAN) for i in range(requests)])


def make_ingester(
    tmp_path: Path, registry: CollectorRegistry, *, segment_bytes: int
) -> tuple[Ingester, WAL, Head]:
    config = GatewayConfig(data_dir=tmp_path, wal_segment_bytes=segment_bytes)
    metrics = GatewayMetrics(registry)
    head = Head(max_bytes=config.head_max_bytes, freeze_samples=config.head_freeze_samples)
    wal = WAL(config.wal_dir, segment_bytes=segment_bytes, fsync=True, metrics=metrics)
    wal.start()
    return Ingester(config, head, wal, metrics), wal, head


def ingest(ingester: Ingester, step: int, series: int = 3) -> Future[None] | None:
    request = decoded(
        *(
            time_series(
                [("__name__", "m"), ("series", str(s))],
                [(1000 * step, SPECIAL_BITS[(step + s) % len(SPECIAL_BITS)]), (1000 * step + 1, 0)],
            )
            for s in range(series)
        )
    )
    outcome, durable = ingester.submit("t", request, now_ms=NOW_MS)
    assert outcome.rejected == {}
    return durable


def segment_records(path: Path) -> list[SeriesRecord | SamplesRecord]:
    return [decode(p) for p in read_segment(path, ReplayReport(), repair=False)]


def test_segments_rotate_and_each_redefines_the_series_it_uses(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    ingester, wal, _ = make_ingester(tmp_path, registry, segment_bytes=600)
    for step in range(30):
        durable = ingest(ingester, step)
        assert durable is not None
        durable.result(timeout=10)
    wal.close()
    segments = list_segments(tmp_path / "wal")
    assert len(segments) >= 5
    assert registry.get_sample_value("strata_wal_segments_created_total") == len(segments)
    for _, path in segments:
        assert path.stat().st_size <= 600 + 300  # one request may overshoot
        defined: set[int] = set()
        for rec in segment_records(path):
            if isinstance(rec, SeriesRecord):
                defined.update(rec.refs)
            else:
                assert set(rec.refs.tolist()) <= defined, f"{path.name} uses undefined refs"


def test_replay_works_after_older_segments_are_deleted(tmp_path: Path) -> None:
    ingester, wal, _ = make_ingester(tmp_path, CollectorRegistry(), segment_bytes=600)
    for step in range(30):
        durable = ingest(ingester, step)
        assert durable is not None
        durable.result(timeout=10)
    wal.close()
    segments = list_segments(tmp_path / "wal")
    kept = segments[len(segments) // 2 :]
    for _, path in segments[: len(segments) // 2]:
        path.unlink()
    want: Contents = {}
    for _, path in kept:
        labels: dict[int, bytes] = {}
        for rec in segment_records(path):
            if isinstance(rec, SeriesRecord):
                labels.update(zip(rec.refs, rec.labels, strict=True))
                continue
            for ref, ts, bits in zip(
                rec.refs.tolist(),
                rec.timestamps.tolist(),
                rec.values.view(np.uint64).tolist(),
                strict=True,
            ):
                key = tuple(decode_labels(labels[ref]))
                want.setdefault("t", {}).setdefault(key, []).append((ts, bits))
    for series in want["t"].values():
        series.sort()
    got, report = replayed(tmp_path / "wal")
    assert report.damage == []
    assert got == want
    assert sum(len(s) for s in got["t"].values()) == report.samples > 0


Damage = Callable[[bytes], bytes]


def torn_record(data: bytes) -> bytes:
    last = frame_starts(data)[-1]
    return data[: last + FRAME.size + (len(data) - last - FRAME.size) // 2]


def torn_frame_header(data: bytes) -> bytes:
    return data[: frame_starts(data)[-1] + 3]


def bad_checksum(data: bytes) -> bytes:
    flipped = bytearray(data)
    flipped[-5] ^= 0x40
    return bytes(flipped)


def oversized_length(data: bytes) -> bytes:
    last = frame_starts(data)[-1]
    return data[:last] + FRAME.pack(0xFFFFFFF0, 0) + data[last + FRAME.size :]


def zeroed_last_record(data: bytes) -> bytes:
    last = frame_starts(data)[-1]
    return data[:last] + bytes(len(data) - last)


def zeroed_page_appended(data: bytes) -> bytes:
    return data + bytes(4096)


@pytest.mark.parametrize(
    ("damage", "frames_lost"),
    [
        pytest.param(torn_record, 1, id="torn-record"),
        pytest.param(torn_frame_header, 1, id="torn-frame-header"),
        pytest.param(bad_checksum, 1, id="bad-checksum"),
        pytest.param(oversized_length, 1, id="oversized-length"),
        pytest.param(zeroed_last_record, 1, id="zeroed-last-record"),
        pytest.param(zeroed_page_appended, 0, id="zeroed-page-appended"),
    ],
)
def test_damaged_tail_is_cut_and_reported(
    wal: WAL, wal_dir: Path, damage: Damage, frames_lost: int
) -> None:
    written = write_samples(wal, 6)
    wal.close()
    (_, path), *_ = list_segments(wal_dir)
    intact = path.read_bytes()
    starts = frame_starts(intact)
    # The last frame is the last request's samples record: losing it loses two samples.
    cut_at = starts[len(starts) - frames_lost] if frames_lost else len(intact)
    path.write_bytes(damage(intact))
    registry = CollectorRegistry()
    got, report = replayed(wal_dir, registry)
    assert got == expected(written[: len(written) - 2 * frames_lost])
    assert len(report.damage) == 1
    assert (report.damage[0].segment, report.damage[0].offset) == (path.name, cut_at)
    assert report.damage[0].dropped_bytes == len(damage(intact)) - cut_at
    assert registry.get_sample_value("strata_wal_corruptions_total") == 1
    assert path.read_bytes() == intact[:cut_at]
    again, second = replayed(wal_dir)
    assert again == got
    assert second.damage == []


def test_replay_without_repair_reports_but_leaves_the_file(wal: WAL, wal_dir: Path) -> None:
    written = write_samples(wal, 3)
    wal.close()
    (_, path), *_ = list_segments(wal_dir)
    damaged = torn_record(path.read_bytes())
    path.write_bytes(damaged)
    head = Head(max_bytes=1 << 40, freeze_samples=16)
    report = replay(wal_dir, head, repair=False)
    assert contents(head) == expected(written[:-2])
    assert len(report.damage) == 1
    assert path.read_bytes() == damaged


def two_segments(
    wal: WAL,
) -> tuple[list[tuple[str, int, int, int]], list[tuple[str, int, int, int]]]:
    first = write_samples(wal, 3)
    wal.rotate()
    second = [("t", 7, 100_000 + i, STALE_NAN) for i in range(3)]
    for _, ref, ts, bits in second:
        submit(wal, "t", [(ref, ts, bits)]).result(timeout=10)
    wal.close()
    return first, second


def test_damage_in_an_older_segment_costs_only_the_rest_of_that_segment(
    wal: WAL, wal_dir: Path
) -> None:
    first, second = two_segments(wal)
    (_, older), _ = list_segments(wal_dir)
    data = older.read_bytes()
    middle = frame_starts(data)[2]  # the second request's series record
    older.write_bytes(data[:middle] + bytes(5) + data[middle + 5 :])
    got, report = replayed(wal_dir)
    assert got == expected([*first[:2], *second])
    assert [(d.segment, d.offset) for d in report.damage] == [(older.name, middle)]
    assert older.stat().st_size == middle
    assert replayed(wal_dir)[1].damage == []


@pytest.mark.parametrize(
    "contents_of",
    [
        pytest.param(lambda data: data[:10], id="truncated-inside-header"),
        pytest.param(lambda data: b"", id="empty"),
        pytest.param(lambda data: os.urandom(300), id="garbage"),
        pytest.param(lambda data: b"NOTAWAL!" + data[8:], id="bad-magic"),
    ],
)
def test_unreadable_segment_is_set_aside_and_the_others_replay(
    wal: WAL, wal_dir: Path, contents_of: Callable[[bytes], bytes]
) -> None:
    first, _ = two_segments(wal)
    _, (_, newer) = list_segments(wal_dir)
    newer.write_bytes(contents_of(newer.read_bytes()))
    registry = CollectorRegistry()
    got, report = replayed(wal_dir, registry)
    assert got == expected(first)
    assert [(d.segment, d.offset) for d in report.damage] == [(newer.name, 0)]
    assert registry.get_sample_value("strata_wal_corruptions_total") == 1
    assert not newer.exists()
    assert newer.with_name(newer.name + ".corrupt").exists()
    again, second_report = replayed(wal_dir)
    assert again == got
    assert second_report.damage == []


def test_unknown_segment_version_stops_replay(wal: WAL, wal_dir: Path) -> None:
    write_samples(wal, 1)
    wal.close()
    (_, path), *_ = list_segments(wal_dir)
    data = path.read_bytes()
    path.write_bytes(SEGMENT_HEADER.pack(b"STRATAWL", 99, 0) + data[SEGMENT_HEADER.size :])
    with pytest.raises(CorruptWAL, match="version 99"):
        replayed(wal_dir)


class DiskFull:
    """Makes os.fsync or os.write fail with ENOSPC while `full` is set.

    While `gate` is clear, a failing call first waits for it, holding the writer inside
    the failing write so that the test can queue more requests behind it.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
        self.full = False
        self.failures = 0
        self.failing = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        if call == "fsync":
            monkeypatch.setattr("gateway.wal.os.fsync", self.fsync)
        else:
            monkeypatch.setattr("gateway.wal.os.write", self.write)

    def _fail(self) -> None:
        self.failures += 1  # only the writer thread gets here
        self.failing.set()
        assert self.gate.wait(10)
        raise OSError(errno.ENOSPC, "No space left on device")

    def fsync(self, fd: int) -> None:
        if self.full:
            self._fail()
        REAL_FSYNC(fd)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.full:
            REAL_WRITE(fd, bytes(data)[: len(data) // 2])  # the disk fills mid-record
            self._fail()
        return REAL_WRITE(fd, data)


@pytest.mark.parametrize("call", ["fsync", "write"])
def test_failed_write_fails_the_request_and_the_wal_recovers_on_a_new_segment(
    wal: WAL,
    wal_dir: Path,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
    call: str,
) -> None:
    disk = DiskFull(monkeypatch, call)
    submit(wal, "t", [(0, 1000, STALE_NAN)]).result(timeout=10)
    disk.full = True
    failed = submit(wal, "t", [(0, 2000, 1), (1, 2000, 2)])
    with pytest.raises(StorageError, match="No space left on device"):
        failed.result(timeout=3)
    assert registry.get_sample_value("strata_wal_write_failures_total") == 1
    disk.full = False
    submit(wal, "t", [(1, 3000, 3)]).result(timeout=10)
    wal.close()
    assert [p.name for _, p in list_segments(wal_dir)] == ["00000001", "00000002"]
    got, report = replayed(wal_dir)
    assert report.damage == []
    assert got == expected([("t", 0, 1000, STALE_NAN), ("t", 1, 3000, 3)])


def test_requests_queued_behind_a_failed_write_fail_too(
    wal: WAL, wal_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = DiskFull(monkeypatch, "fsync")
    submit(wal, "t", [(0, 1, 1)]).result(timeout=10)
    disk.full = True
    disk.gate.clear()
    first = submit(wal, "t", [(0, 10, 1)])
    assert disk.failing.wait(10)
    queued = [submit(wal, "t", [(0, 11 + i, 1)]) for i in range(10)]
    stale_generation = wal.generation
    disk.full = False
    disk.gate.set()
    for future in [first, *queued]:
        with pytest.raises(StorageError):
            future.result(timeout=10)
    # Records encoded for the failed segment's generation are refused up front.
    with pytest.raises(Unavailable):
        wal.submit(stale_generation, record("t", [(0, 99, 1)]))
    submit(wal, "t", [(0, 100, 1)]).result(timeout=10)
    wal.close()
    got, _ = replayed(wal_dir)
    assert got == expected([("t", 0, 1, 1), ("t", 0, 100, 1)])


def test_retry_after_a_failed_fsync_is_logged_again_with_its_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingester, wal, head = make_ingester(tmp_path, CollectorRegistry(), segment_bytes=1 << 20)
    disk = DiskFull(monkeypatch, "fsync")
    try:
        first = ingest(ingester, 1)
        assert first is not None
        first.result(timeout=10)
        disk.full = True
        failed = ingest(ingester, 2)
        assert failed is not None
        with pytest.raises(StorageError):
            failed.result(timeout=3)
        disk.full = False
        retry = ingest(ingester, 2)  # Prometheus retries the 503'd request unchanged
        assert retry is not None
        retry.result(timeout=10)
    finally:
        wal.close()
    live = contents(head)
    got, report = replayed(tmp_path / "wal")
    assert report.damage == []
    assert got == live
    assert sum(len(s) for s in got["t"].values()) == 3 * 2 * 2
    # The retry went to a new segment that defines its series again, so it replays alone.
    (_, older), *_ = list_segments(tmp_path / "wal")
    older.unlink()
    alone, _ = replayed(tmp_path / "wal")
    assert sorted(ts for series in alone["t"].values() for ts, _ in series) == sorted(
        [2000, 2001] * 3
    )
