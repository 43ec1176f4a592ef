"""A damaged WAL: `strata serve` starts, reports the loss, and serves everything before it.

Three runs of `strata serve` write three WAL segments (each start opens a new one; all
samples are recent, so nothing is cut and no segment is removed). With the server
stopped, the middle segment is damaged in one of five ways: a torn last record, a bad
checksum mid-segment, a zeroed 4 KiB page, a segment cut shorter than its header, a
segment of random bytes. The next start must become ready (no crash loop), log
`wal tail cut segment=00000002 offset=…`, count it in strata_wal_corruptions_total and
strata_wal_discarded_bytes_total, and serve through remote read exactly the samples of
every request whose record lies wholly before the damage: nothing lost before it,
nothing served from after it. A further start finds nothing left to repair.

The WAL layout (docs/wal.md) is read here only to find record boundaries: which request
each record holds follows from the order they were sent in, one at a time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.wal import FRAME, SEGMENT_HEADER, list_segments
from gateway.wal_record import SAMPLES
from tests.e2e.ackload import (
    HEADERS,
    Attempt,
    History,
    Outcome,
    Request,
    Worker,
    assert_nothing_lost,
    check_remote,
)
from tests.e2e.conftest import attach_log
from tests.e2e.servers import StrataServer, metric_value, parse_metrics_text

# Recent timestamps only: no 2 h window is ever due, so no cut rotates or removes segments.
SHAPES = ("near_future",)
SAMPLES_PER_REQUEST = 20
PHASES = (10, 40, 10)  # requests per run; the middle run's segment is damaged
DAMAGED = "00000002"
PAGE = 4096


@dataclass(frozen=True, slots=True)
class Frame:
    """A WAL record's place in its segment."""

    offset: int
    end: int
    record_type: int


@dataclass(frozen=True, slots=True)
class Damage:
    """The damaged bytes, where the replay must cut, and how many records survive."""

    data: bytes
    cut_at: int
    samples_records_kept: int


def frames_of(data: bytes) -> list[Frame]:
    """Every record of an undamaged segment (layout: docs/wal.md)."""
    frames, pos = [], SEGMENT_HEADER.size
    while pos < len(data):
        length, _ = FRAME.unpack_from(data, pos)
        end = pos + FRAME.size + length
        frames.append(Frame(pos, end, data[pos + FRAME.size]))
        pos = end
    return frames


def _kept(frames: list[Frame], cut_at: int) -> int:
    return sum(1 for f in frames if f.record_type == SAMPLES and f.end <= cut_at)


def torn_record(data: bytes, frames: list[Frame]) -> Damage:
    """The last record cut in half, as a crash mid-write leaves it."""
    last = frames[-1]
    torn = data[: last.offset + FRAME.size + (last.end - last.offset - FRAME.size) // 2]
    return Damage(torn, last.offset, _kept(frames, last.offset))


def bad_checksum(data: bytes, frames: list[Frame]) -> Damage:
    """One bit flipped in the payload of a record in the middle."""
    samples = [f for f in frames if f.record_type == SAMPLES]
    hit = samples[len(samples) // 2]
    at = (hit.offset + FRAME.size + hit.end) // 2
    damaged = data[:at] + bytes([data[at] ^ 0x10]) + data[at + 1 :]
    return Damage(damaged, hit.offset, _kept(frames, hit.offset))


def zeroed_page(data: bytes, frames: list[Frame]) -> Damage:
    """The segment's second 4 KiB page zeroed, as a lost write-back leaves it."""
    start, end = PAGE, 2 * PAGE
    assert len(data) > end, "the damaged segment must be longer than two pages"
    first_hit = next(f for f in frames if f.end > start)
    damaged = data[:start] + bytes(end - start) + data[end:]
    return Damage(damaged, first_hit.offset, _kept(frames, first_hit.offset))


def truncated_segment(data: bytes, frames: list[Frame]) -> Damage:
    """Cut shorter than its header: nothing in it is usable."""
    return Damage(data[:10], 0, 0)


def garbage_segment(data: bytes, frames: list[Frame]) -> Damage:
    """Random bytes over the whole segment."""
    return Damage(random.Random(7).randbytes(len(data)), 0, 0)


def send(client: httpx.Client, strata: StrataServer, request: Request) -> None:
    """POST one request; it must be acknowledged."""
    headers = dict(HEADERS)
    if request.tenant_header is not None:
        headers["X-Scope-OrgID"] = request.tenant_header
    answer = client.post(strata.write_url, content=request.body, headers=headers)
    assert answer.status_code == 204, answer.text


def write_three_segments(strata: StrataServer) -> list[list[Request]]:
    """A run per phase, stopped gracefully after it: the requests of each, in order."""
    now_ms = int(time.time() * 1000)
    workers = [
        Worker(0, None, now_ms, SAMPLES_PER_REQUEST, SHAPES),
        Worker(1, "tenant-1", now_ms, SAMPLES_PER_REQUEST, SHAPES),
    ]
    ids = iter(range(1, 1 << 30))
    phases = []
    with httpx.Client(timeout=10.0) as client:
        for count in PHASES:
            strata.start()
            phase = [workers[i % 2].next_request(next(ids)) for i in range(count)]
            for request in phase:
                send(client, strata, request)
            strata.stop_gracefully()
            phases.append(phase)
    return phases


def acknowledged(requests: list[Request]) -> History:
    """A history in which exactly these requests were acknowledged."""
    history = History()
    for request in requests:
        history.add_request(request)
        history.add_attempt(Attempt(request.request_id, 0, Outcome.ACKNOWLEDGED, 204, "", 0, 0))
    return history


def corruption_metrics(strata: StrataServer) -> tuple[float, float]:
    """(strata_wal_corruptions_total, strata_wal_discarded_bytes_total) of this run."""
    metrics = parse_metrics_text(strata.metrics())
    return (
        metric_value(metrics, "strata_wal_corruptions_total"),
        metric_value(metrics, "strata_wal_discarded_bytes_total"),
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "damage",
    [torn_record, bad_checksum, zeroed_page, truncated_segment, garbage_segment],
)
def test_damaged_wal_is_repaired_on_start_and_everything_before_is_served(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    damage: Callable[[bytes, list[Frame]], Damage],
) -> None:
    strata = StrataServer(tmp_path / "strata-data", tmp_path / "strata.log")
    attach_log(request.node, "strata", strata.log_path)
    try:
        check_repair(strata, damage)
    finally:
        strata.stop()


def check_repair(strata: StrataServer, damage: Callable[[bytes, list[Frame]], Damage]) -> None:
    """Write three segments, damage the middle one, start, and check what is served."""
    before, middle, after = write_three_segments(strata)
    wal_dir = strata.data_dir / "wal"
    assert [p.name for _, p in list_segments(wal_dir)] == ["00000001", DAMAGED, "00000003"]
    path = wal_dir / DAMAGED
    data = path.read_bytes()
    frames = frames_of(data)
    assert sum(f.record_type == SAMPLES for f in frames) == len(middle)
    damaged = damage(data, frames)
    path.write_bytes(damaged.data)

    strata.start()
    log = strata.log_path.read_text()
    assert f"wal tail cut segment={DAMAGED} offset={damaged.cut_at} " in log, log[-2000:]
    corruptions, discarded = corruption_metrics(strata)
    assert (corruptions, discarded) == (1, len(damaged.data) - damaged.cut_at)
    assert (wal_dir / f"{DAMAGED}.corrupt").exists() == (damaged.cut_at == 0)
    kept = middle[: damaged.samples_records_kept]
    history = acknowledged(before + kept + after)
    read_url = f"{strata.url}/api/v1/read"
    result = check_remote(read_url, history)
    print(
        f"{damage.__name__}: cut at byte {damaged.cut_at} of {len(damaged.data)}, "
        f"{len(kept)} of {len(middle)} requests of the segment kept"
    )
    assert_nothing_lost(result, damage.__name__)

    strata.restart()  # the repair holds: the next start finds nothing to cut
    assert corruption_metrics(strata) == (0, 0)
    assert_nothing_lost(check_remote(read_url, history), f"{damage.__name__}, next start")
