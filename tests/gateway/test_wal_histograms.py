"""Native histograms in the WAL and through cuts: the HISTOGRAMS record, replay (old WALs
without the record type too), and a cut that moves old histograms into a block and
re-logs the rest (docs/wal.md, docs/head.md)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from blocks.upload import list_blocks
from gateway.app import Gateway
from gateway.config import GatewayConfig
from gateway.decode import decode_write_request
from gateway.head import Head
from gateway.head_cut import BLOCK_DURATION_MS
from gateway.inspect import read_histograms, read_samples
from gateway.metrics import GatewayMetrics
from gateway.wal import WAL, frame, list_segments
from gateway.wal_record import (
    BadRecord,
    HistogramsRecord,
    decode,
    decode_record,
    encode_histograms,
    encode_samples,
    encode_series,
)
from gateway.wal_replay import replay
from proto import remote_pb2, types_pb2
from tests.gateway.writes import canonical as canonical_labels
from tests.querier.histogram_reads import canonical, int_counter

HOUR_MS = 3_600_000
START_MS = 1_795_564_800_000  # aligned to 2 h
LABELS = [("__name__", "req_hist"), ("job", "a")]
KEY = tuple(LABELS)


def test_histograms_record_round_trips_every_byte() -> None:
    payloads = [b"", b"\x08\x01", bytes(range(256)) * 3]
    refs = np.array([7, 0, 2**32 - 1], dtype=np.uint32)
    ts = np.array([-(2**63), 0, 2**63 - 1], dtype=np.int64)
    payload = encode_histograms("team-a", refs, ts, payloads)
    record = decode_record(payload)
    assert isinstance(record, HistogramsRecord)
    assert record.tenant == "team-a"
    assert record.refs.tolist() == refs.tolist()
    assert record.timestamps.tolist() == ts.tolist()
    assert record.payloads == payloads
    with pytest.raises(BadRecord):
        decode(payload)  # the float path's decoder takes only its own records
    empty = decode_record(encode_histograms("t", refs[:0], ts[:0], []))
    assert isinstance(empty, HistogramsRecord)
    assert empty.payloads == []


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_a_histograms_record_of_the_wrong_size_is_refused(cut: int) -> None:
    payload = encode_histograms("t", np.array([1]), np.array([5]), [b"\x08\x01\x11" * 4])
    with pytest.raises(BadRecord):
        decode_record(payload[:-cut])


def write_wal(wal_dir: Path, records: list[bytes]) -> None:
    wal = WAL(
        wal_dir, segment_bytes=1 << 20, fsync=False, metrics=GatewayMetrics(CollectorRegistry())
    )
    wal.start()
    try:
        generation = wal.begin(1 << 10)
        wal.submit(generation, b"".join(frame(r) for r in records)).result(timeout=10)
    finally:
        wal.close()


def test_an_old_wal_without_histograms_replays_and_a_new_one_with_them(tmp_path: Path) -> None:
    labels = canonical_labels(LABELS)
    old = [
        encode_series("default", [0], [labels]),
        encode_samples("default", np.array([0]), np.array([1000]), np.array([2.5])),
    ]
    write_wal(tmp_path / "old", old)
    head = Head(max_bytes=1 << 30, freeze_samples=1024)
    report = replay(tmp_path / "old", head)
    assert (report.samples, report.histograms) == (1, 0)
    messages = [canonical(int_counter(i, 1000 + i)) for i in range(3)]
    new = [
        *old,
        encode_histograms("default", np.array([0, 0, 0]), np.array([1000, 1001, 1002]), messages),
        # A resend logged again, and a conflicting one (the first stays).
        encode_histograms("default", np.array([0, 0]), np.array([1000, 1001]), messages[:1] * 2),
    ]
    write_wal(tmp_path / "new", new)
    head = Head(max_bytes=1 << 30, freeze_samples=1024)
    report = replay(tmp_path / "new", head)
    assert (report.samples, report.histograms) == (1, 5)
    ((got_labels, (ts, payloads)),) = list(head.tenant("default").series_histograms())
    assert got_labels == labels
    assert ts.tolist() == [1000, 1001, 1002]
    assert payloads == messages


def submit(gateway: Gateway, histograms: list[types_pb2.Histogram]) -> None:
    series = types_pb2.TimeSeries(
        labels=[types_pb2.Label(name=n, value=v) for n, v in LABELS], histograms=histograms
    )
    request = remote_pb2.WriteRequest(timeseries=[series])
    outcome, durable = gateway.ingester.submit(
        "default", decode_write_request(request.SerializeToString()), now_ms=START_MS + 10 * HOUR_MS
    )
    assert not outcome.rejected
    assert outcome.histograms_stored == len(histograms)
    assert durable is not None
    durable.result(timeout=10)


def test_a_cut_moves_old_histograms_to_a_block_and_relogs_the_rest(tmp_path: Path) -> None:
    gateway = Gateway(GatewayConfig(data_dir=tmp_path), CollectorRegistry())
    gateway.recover()
    old = [int_counter(i, START_MS + i * 60_000) for i in range(30)]
    recent = [int_counter(1, START_MS + BLOCK_DURATION_MS + HOUR_MS)]
    submit(gateway, old + recent)
    first_segment = list_segments(gateway.config.wal_dir)[0][0]

    asyncio.run(gateway.shipper.step())

    store = LocalStore(tmp_path / "bucket")
    (block,) = list_blocks(store, "default")
    reader = BlockReader(store, f"default/{block}")
    ts, payloads = reader.read_histograms([0], -(2**63), 2**63 - 1)[0]
    assert ts.tolist() == [h.timestamp for h in old]
    assert payloads == [canonical(h) for h in old]
    assert len(gateway.head.tenant("default").histograms) == 1
    assert list_segments(gateway.config.wal_dir)[0][0] > first_segment, "old WAL removed"
    gateway.stop()
    # What a restart sees: the block in the bucket, the kept histogram from the new WAL.
    stored = read_histograms(tmp_path)["default"][KEY]
    assert stored[0].tolist() == [h.timestamp for h in old + recent]
    assert stored[1] == [canonical(h) for h in old + recent]
    assert KEY not in read_samples(tmp_path).get("default", {})
