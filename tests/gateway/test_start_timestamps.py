"""Start (created) timestamps of float samples kept (issue 8): change events in the head,
logged with their samples, replayed after a kill, cut into blocks, checkpointed."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.errors import StorageError
from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.upload import list_blocks
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.decode_v2 import decode_v2_request
from gateway.head import Head
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.head_starts import LAST_START_ONLY, HeadStarts
from gateway.inspect import read_starts
from gateway.wal import (
    DISK_FULL_FLAG_ENV,
    SEGMENT_HEADER,
    SEGMENT_MAGIC,
    SEGMENT_VERSION,
    frame,
    list_segments,
)
from gateway.wal_record import (
    STARTS,
    BadRecord,
    StartsRecord,
    decode,
    decode_record,
    encode_samples,
    encode_series,
    encode_starts,
)
from gateway.wal_replay import ReplayReport, read_segment, replay
from proto import write_v2_pb2
from querier.matchers import Matcher, MatchType
from querier.start_times import head_starts
from querier.start_times import read_starts as read_bucket_starts
from tests.gateway.test_remote_write_v2 import Symbols
from tests.gateway.writes import canonical
from tests.support import wire

TENANT = "default"
START_MS = 1_795_564_800_000  # aligned to 2 h
MINUTE_MS = 60_000
NOW_MS = START_MS + 10 * BLOCK_DURATION_MS
REQUESTS = (("__name__", "requests_total"), ("job", "api"))
ERRORS = (("__name__", "errors_total"), ("job", "api"))
GAUGE = (("__name__", "temperature"), ("room", "r1"))
LabelSet = tuple[tuple[str, str], ...]
# A sample: (timestamp, value, start timestamp; 0 = none).
Sample = tuple[int, float, int]
Events = list[tuple[int, int]]


def v2_body(entries: Sequence[tuple[LabelSet, Sequence[Sample], int]]) -> bytes:
    """An uncompressed 2.0 request: per entry a TimeSeries of the samples, each with its
    own `start_timestamp`, and the older placement's created timestamp (TimeSeries field 6,
    reserved in the released proto, so written by hand) when not 0."""
    symbols = Symbols()
    encoded = []
    for labels, samples, created in entries:
        series = write_v2_pb2.TimeSeries(
            labels_refs=symbols.refs(labels),
            samples=[
                write_v2_pb2.Sample(value=v, timestamp=t, start_timestamp=s) for t, v, s in samples
            ],
        )
        field6 = wire.varint_field(6, created) if created else b""
        encoded.append(series.SerializeToString() + field6)
    head = write_v2_pb2.Request(symbols=symbols.table).SerializeToString()
    return head + b"".join(wire.bytes_field(5, e) for e in encoded)


def model_events(samples: Sequence[tuple[int, int]], last: int = 0) -> Events:
    """The events a series' (timestamp, start) samples make in arrival order: each start
    other than the last one kept, 0 never."""
    events = []
    for ts, start in samples:
        if start and start != last:
            events.append((ts, start))
            last = start
    return events


def pairs(part: tuple[np.ndarray, np.ndarray]) -> Events:
    return list(zip(part[0].tolist(), part[1].tolist(), strict=True))


def started(tmp_path: Path) -> Gateway:
    gateway = Gateway(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    gateway.recover()
    return gateway


def submit(gateway: Gateway, body: bytes) -> None:
    outcome, durable = gateway.ingester.submit(TENANT, decode_v2_request(body), now_ms=NOW_MS)
    assert not outcome.rejected, outcome.first_error
    assert durable is not None
    durable.result(timeout=10)


def head_events(head: Head) -> dict[LabelSet, Events]:
    found = head_starts(head.tenant(TENANT), [], -(2**63), 2**63 - 1)
    return {labels: pairs(part) for labels, part in found.items()}


def counter_samples(first: int, count: int, resets: dict[int, int]) -> list[Sample]:
    """A counter a minute apart from sample `first`, its start changed at the indexes of
    `resets` (index -> start) and the one before kept in between."""
    out = []
    start = 0
    for i in range(first, first + count):
        start = resets.get(i, start)
        out.append((START_MS + i * MINUTE_MS, float(i), start))
    return out


def test_only_changes_are_kept_and_the_last_start_carries_over() -> None:
    starts = HeadStarts()
    refs = np.array([0, 0, 0, 0, 1, 1, 2], dtype=np.uint32)
    ts = np.array([10, 20, 30, 40, 10, 20, 10], dtype=np.int64)
    start = np.array([5, 5, 0, 7, 0, 0, 9], dtype=np.int64)
    made = starts.record(refs, ts, start)
    assert list(zip(made.refs.tolist(), made.ts.tolist(), made.starts.tolist(), strict=True)) == [
        (0, 10, 5),
        (0, 40, 7),
        (2, 10, 9),
    ]
    # The next request goes on from each series' last start, not from nothing.
    again = starts.record(
        np.array([0, 2, 2], dtype=np.uint32),
        np.array([50, 20, 30], dtype=np.int64),
        np.array([7, 9, 11], dtype=np.int64),
    )
    assert again.ts.tolist() == [30]
    assert again.starts.tolist() == [11]
    held = starts.columns()
    assert held.ts.tolist() == [10, 40, 10, 30]
    taken = starts.take()
    assert taken.ts.tolist() == held.ts.tolist()
    assert not len(starts)
    assert starts.last_start.view.tolist() == [7, 0, 11]
    checkpoint = starts.last_starts()
    assert checkpoint.refs.tolist() == [0, 2]
    assert checkpoint.ts.tolist() == [LAST_START_ONLY] * 2


def test_both_placements_are_kept_as_events(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    requests = counter_samples(0, 30, {0: START_MS - MINUTE_MS, 12: START_MS + 11 * MINUTE_MS})
    # The older placement: one created timestamp for the whole TimeSeries, per request.
    errors = [(t, v, 0) for t, v, _ in counter_samples(0, 30, {})]
    gauge = [(t, v, 0) for t, v, _ in counter_samples(0, 30, {})]
    for at in range(0, 30, 10):
        created = START_MS - 3 * MINUTE_MS if at < 20 else START_MS + 19 * MINUTE_MS
        submit(
            gateway,
            v2_body(
                [
                    (REQUESTS, requests[at : at + 10], 0),
                    (ERRORS, errors[at : at + 10], created),
                    (GAUGE, gauge[at : at + 10], 0),
                ]
            ),
        )
    expected = {
        REQUESTS: model_events([(t, s) for t, _, s in requests]),
        ERRORS: [
            (START_MS, START_MS - 3 * MINUTE_MS),
            (START_MS + 20 * MINUTE_MS, START_MS + 19 * MINUTE_MS),
        ],
    }
    assert expected[REQUESTS] == [
        (START_MS, START_MS - MINUTE_MS),
        (START_MS + 12 * MINUTE_MS, START_MS + 11 * MINUTE_MS),
    ]
    assert head_events(gateway.head) == expected
    # A per-sample start wins over the TimeSeries one: the sample's own is the newer form.
    submit(gateway, v2_body([(ERRORS, [(START_MS + 30 * MINUTE_MS, 30.0, 42)], 7)]))
    assert head_events(gateway.head)[ERRORS][-1] == (START_MS + 30 * MINUTE_MS, 42)
    gateway.stop()


def test_events_survive_a_kill_and_the_restart_knows_the_last_start(tmp_path: Path) -> None:
    gateway = started(tmp_path / "live")
    samples = counter_samples(0, 40, {0: 111, 15: 222, 30: 333})
    for at in range(0, 40, 8):
        submit(
            gateway,
            v2_body([(REQUESTS, samples[at : at + 8], 0), (GAUGE, samples[at : at + 8], 0)]),
        )
    # What a kill -9 leaves: the acknowledged bytes, the process never closing the WAL.
    shutil.copytree(tmp_path / "live", tmp_path / "killed")
    gateway.stop()

    head = Head(max_bytes=1 << 40, freeze_samples=1 << 16)
    report = replay(tmp_path / "killed" / "wal", head)
    expected = model_events([(t, s) for t, _, s in samples])
    assert len(expected) == 3
    assert head_events(head) == {REQUESTS: expected, GAUGE: expected}
    assert report.starts == 6
    # Restarted on the copy, the same start again is no change; a new one is.
    restarted = started(tmp_path / "killed")
    more = [(START_MS + 40 * MINUTE_MS, 40.0, 333), (START_MS + 41 * MINUTE_MS, 0.0, 444)]
    submit(restarted, v2_body([(REQUESTS, more, 0)]))
    assert head_events(restarted.head)[REQUESTS] == [*expected, (START_MS + 41 * MINUTE_MS, 444)]
    restarted.stop()


def test_a_retry_after_a_failed_fsync_logs_the_event_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "disk-full"
    monkeypatch.setenv(DISK_FULL_FLAG_ENV, str(flag))
    gateway = started(tmp_path / "data")
    body = v2_body([(REQUESTS, [(START_MS, 1.0, 99)], 0)])
    flag.touch()
    outcome, durable = gateway.ingester.submit(TENANT, decode_v2_request(body), now_ms=NOW_MS)
    assert outcome.stored == 1
    assert durable is not None
    with pytest.raises(StorageError):
        durable.result(timeout=10)
    flag.unlink()
    # Prometheus retries: the sample is a resend now, and its event must be logged again.
    submit(gateway, body)
    shutil.copytree(tmp_path / "data", tmp_path / "killed")
    gateway.stop()
    head = Head(max_bytes=1 << 40, freeze_samples=1 << 16)
    replay(tmp_path / "killed" / "wal", head)
    assert head_events(head) == {REQUESTS: [(START_MS, 99)]}


def test_starts_records_round_trip_and_old_wals_still_replay(tmp_path: Path) -> None:
    refs = np.array([3, 1], dtype=np.uint32)
    ts = np.array([LAST_START_ONLY, 20], dtype=np.int64)
    starts = np.array([-5, 1 << 62], dtype=np.int64)
    payload = encode_starts("t", refs, ts, starts)
    assert payload[0] == STARTS
    record = decode_record(payload)
    assert isinstance(record, StartsRecord)
    assert (record.tenant, record.refs.tolist(), record.timestamps.tolist()) == (
        "t",
        [3, 1],
        [LAST_START_ONLY, 20],
    )
    assert record.starts.tolist() == [-5, 1 << 62]
    with pytest.raises(BadRecord):
        decode(payload)
    with pytest.raises(BadRecord):
        decode_record(payload[:-1])
    # A WAL an older Strata wrote (series and samples records only) replays as ever.
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    sample = encode_samples(
        TENANT,
        np.array([0], dtype=np.uint32),
        np.array([START_MS], dtype=np.int64),
        np.array([1.0]),
    )
    (wal_dir / "00000001").write_bytes(
        SEGMENT_HEADER.pack(SEGMENT_MAGIC, SEGMENT_VERSION, 0)
        + frame(encode_series(TENANT, [0], [canonical(list(REQUESTS))]))
        + frame(sample)
    )
    head = Head(max_bytes=1 << 40, freeze_samples=1 << 16)
    report = replay(wal_dir, head)
    assert (report.records, report.samples, report.starts, report.damage) == (2, 1, 0, [])
    assert head.tenant(TENANT).sample_count == 1
    assert head_events(head) == {}


def test_a_cut_puts_old_events_in_blocks_and_checkpoints_the_rest(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    # Two windows and a bit: resets in the first window, the second, and the third.
    samples = counter_samples(0, 260, {0: 1_000, 50: 2_000, 130: 3_000, 250: 4_000})
    for at in range(0, 260, 20):
        submit(gateway, v2_body([(REQUESTS, samples[at : at + 20], 0)]))
    expected = model_events([(t, s) for t, _, s in samples])
    first_segment = list_segments(gateway.config.wal_dir)[0][0]

    asyncio.run(gateway.shipper.step())  # cuts the two complete windows

    store = LocalStore(tmp_path / "bucket")
    blocks = list_blocks(store, TENANT)
    assert len(blocks) == 2
    in_blocks = []
    for block_id in blocks:
        reader = BlockReader(store, f"{TENANT}/{block_id}")
        events = reader.index.starts
        assert events is not None
        (series,) = events.series_with_events().tolist()
        assert tuple(reader.index.labels(series)) == REQUESTS
        part = pairs(events.part(series, reader.meta.mint, reader.meta.maxt - 1))
        assert all(reader.meta.mint <= t < reader.meta.maxt for t, _ in part)
        in_blocks += part
    boundary = START_MS + 2 * BLOCK_DURATION_MS
    assert in_blocks == [e for e in expected if e[0] < boundary]
    assert head_events(gateway.head) == {REQUESTS: [e for e in expected if e[0] >= boundary]}
    assert list_segments(gateway.config.wal_dir)[0][0] > first_segment, "old WAL removed"
    # Head and blocks read together give every event once.
    everything = [Matcher(MatchType.EQ, "job", "api")]
    merged = read_bucket_starts(
        store, TENANT, everything, -(2**63), 2**63 - 1, head=gateway.head.tenant(TENANT)
    )
    assert {k: pairs(v) for k, v in merged.items()} == {REQUESTS: expected}
    gateway.stop()
    # The checkpoint kept the rest and the last start: a restart sees what the head had.
    assert {k: pairs(v) for k, v in read_starts(tmp_path)[TENANT].items()} == {REQUESTS: expected}
    restarted = started(tmp_path)
    assert head_events(restarted.head) == {REQUESTS: [e for e in expected if e[0] >= boundary]}
    submit(restarted, v2_body([(REQUESTS, [(START_MS + 300 * MINUTE_MS, 1.0, 4_000)], 0)]))
    assert head_events(restarted.head) == {REQUESTS: [e for e in expected if e[0] >= boundary]}
    restarted.stop()


def test_a_checkpoint_alone_keeps_the_last_start_of_a_series_cut_whole(tmp_path: Path) -> None:
    gateway = started(tmp_path)
    submit(gateway, v2_body([(REQUESTS, counter_samples(0, 10, {0: 77}), 0)]))
    asyncio.run(gateway.shipper.flush())
    assert head_events(gateway.head) == {}
    gateway.stop()
    wal_dir = tmp_path / "wal"
    records = [
        decode_record(payload)
        for _, path in list_segments(wal_dir)
        for payload in read_segment(path, ReplayReport(), repair=False)
    ]
    starts_records = [r for r in records if isinstance(r, StartsRecord)]
    assert [r.timestamps.tolist() for r in starts_records] == [[LAST_START_ONLY]]
    restarted = started(tmp_path)
    submit(restarted, v2_body([(REQUESTS, [(START_MS + 30 * MINUTE_MS, 1.0, 77)], 0)]))
    assert head_events(restarted.head) == {}, "the start seen before is no change"
    restarted.stop()
