"""One bytes object per series in the head (issue 10): the series' key is the form a
Prometheus sends its labels in, and the WAL and blocks still get canonical label bytes."""

from __future__ import annotations

import gc
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from gateway.config import GatewayConfig
from gateway.decode import decode_write_request
from gateway.head import (
    EXTRA_KEY_OVERHEAD_BYTES,
    SERIES_OVERHEAD_BYTES,
    Head,
    canonical_of_key,
    key_label_pairs,
    series_key_of,
)
from gateway.metrics import GatewayMetrics
from gateway.validate import decode_labels
from gateway.wal import WAL, frame, list_segments
from gateway.wal_record import SeriesRecord, decode, encode_samples, encode_series
from gateway.wal_replay import ReplayReport, read_segment, replay
from gateway.write import Ingester
from proto import types_pb2
from tests.gateway.writes import Labels, canonical, decoded, time_series, write_request

NOW_MS = int(time.time() * 1000)
ONE = 0x3FF0000000000000
SERIES = 2_000
BYTES_HEADER = 33  # sys.getsizeof(b"")
# What a new series holds besides its key, at 2,000 series: 112 B measured (ref_by_key's
# table, the ref's int, the list slot, the per-series columns and the uncompressed
# samples). The canonical label bytes as a second object added 97 B, a second dict 37.
HELD_BESIDES_KEY = 170
METRICS = GatewayMetrics(CollectorRegistry())

# Label sets as a Prometheus sends them: names unique and non-empty, values non-empty;
# long enough that some lengths take two varint bytes.
names = st.text(min_size=1, max_size=150)
values = st.text(min_size=1, max_size=200)
label_sets = st.dictionaries(names, values, min_size=1, max_size=8).map(
    lambda d: sorted(d.items(), key=lambda p: p[0].encode())
)


def sent_key(labels: Labels) -> bytes:
    """The labels region of a TimeSeries as protobuf itself writes it: what a Prometheus
    sends in front of a series' samples."""
    series = types_pb2.TimeSeries(labels=[types_pb2.Label(name=n, value=v) for n, v in labels])
    return series.SerializeToString()


def host_labels(i: int) -> list[tuple[str, str]]:
    return [("__name__", "node_cpu_seconds_total"), ("instance", f"host-{i:05d}:9100")]


def make_ingester(
    tmp_path: Path, *, head: Head | None = None, max_active_series: int = 0
) -> tuple[Ingester, WAL, Head]:
    config = GatewayConfig(data_dir=tmp_path, max_active_series=max_active_series)
    metrics = GatewayMetrics(CollectorRegistry())
    if head is None:
        head = Head(max_bytes=config.head_max_bytes, freeze_samples=config.head_freeze_samples)
    wal = WAL(config.wal_dir, segment_bytes=1 << 20, fsync=False, metrics=metrics)
    wal.start()
    return Ingester(config, head, wal, metrics), wal, head


def write(ingester: Ingester, series: list[Labels], ts: int) -> None:
    request = decoded(*(time_series(labels, [(ts, ONE)]) for labels in series))
    outcome, durable = ingester.submit("t", request, now_ms=NOW_MS)
    assert outcome.rejected == {}, outcome.first_error
    assert durable is not None
    durable.result(timeout=10)


@given(label_sets)
@example([("__name__", "m"), ("long", "x" * 300)])  # lengths of two varint bytes
def test_a_prometheus_key_is_the_series_key_of_its_canonical_labels(labels: Labels) -> None:
    key = series_key_of(canonical(labels))
    assert key == sent_key(labels)
    assert canonical_of_key(key) == canonical(labels)
    assert key_label_pairs(key) == list(labels) == decode_labels(canonical(labels))


def test_canonical_label_bytes_are_refused_where_a_key_is_wanted() -> None:
    with pytest.raises(ValueError, match="not a series key"):
        key_label_pairs(canonical(host_labels(3)))


def test_one_bytes_object_per_series_serves_both_lookups(tmp_path: Path) -> None:
    ingester, wal, head = make_ingester(tmp_path)
    write(ingester, [host_labels(i) for i in range(50)], NOW_MS)
    write(ingester, [host_labels(i) for i in range(50)], NOW_MS + 1)
    wal.close()
    tenant_head = head.tenant("t")
    assert tenant_head.series_count == 50
    assert len(tenant_head.ref_by_key) == 50
    assert {id(k) for k in tenant_head.ref_by_key} == {id(k) for k in tenant_head.labels}
    for i in range(50):
        assert tenant_head.ref_by_key[sent_key(host_labels(i))] == i
        assert tenant_head.label_pairs(i) == host_labels(i)


def test_unsorted_labels_add_their_own_key_for_the_same_series(tmp_path: Path) -> None:
    ingester, wal, head = make_ingester(tmp_path)
    labels = host_labels(7)
    write(ingester, [labels[::-1]], NOW_MS)
    tenant_head = head.tenant("t")
    before = tenant_head.nbytes
    write(ingester, [labels], NOW_MS + 1)
    write(ingester, [labels[::-1]], NOW_MS + 2)
    wal.close()
    assert tenant_head.series_count == 1
    assert tenant_head.ref_by_key == {sent_key(labels[::-1]): 0, sent_key(labels): 0}
    assert tenant_head.labels == [sent_key(labels)]
    assert before >= (len(sent_key(labels)) * 2 + SERIES_OVERHEAD_BYTES + EXTRA_KEY_OVERHEAD_BYTES)
    assert [(ts.tolist(), c) for c, ts, _ in tenant_head.series_samples()] == [
        ([NOW_MS, NOW_MS + 1, NOW_MS + 2], canonical(labels))
    ]


def test_a_known_series_sent_unsorted_is_not_a_new_one_for_max_active_series(
    tmp_path: Path,
) -> None:
    ingester, wal, head = make_ingester(tmp_path, max_active_series=1)
    labels = host_labels(1)
    write(ingester, [labels], NOW_MS)
    write(ingester, [labels[::-1]], NOW_MS + 1)
    refused, _ = ingester.submit(
        "t", decoded(time_series(host_labels(2), [(NOW_MS, ONE)])), now_ms=NOW_MS
    )
    wal.close()
    assert refused.rejected == {"max_active_series": 1}
    assert head.tenant("t").series_count == 1


def test_wal_series_records_keep_canonical_label_bytes(tmp_path: Path) -> None:
    ingester, wal, _ = make_ingester(tmp_path)
    write(ingester, [host_labels(i) for i in range(3)], NOW_MS)
    wal.close()
    defined: dict[int, bytes] = {}
    for _, path in list_segments(tmp_path / "wal"):
        for payload in read_segment(path, ReplayReport(), repair=False):
            record = decode(payload)
            if isinstance(record, SeriesRecord):
                defined.update(zip(record.refs, record.labels, strict=True))
    assert defined == {i: canonical(host_labels(i)) for i in range(3)}


def test_an_old_wal_replays_and_its_series_are_found_by_the_key_prometheus_sends(
    tmp_path: Path,
) -> None:
    # Series records as every gateway has written them: canonical label bytes.
    old_refs = [5, 9]
    records = frame(
        encode_series("t", old_refs, [canonical(host_labels(i)) for i in range(2)])
    ) + frame(
        encode_samples(
            "t",
            np.array(old_refs, dtype=np.uint32),
            np.array([NOW_MS, NOW_MS], dtype=np.int64),
            np.array([1.0, 2.0]),
        )
    )
    wal = WAL(tmp_path / "wal", segment_bytes=1 << 20, fsync=False, metrics=METRICS)
    wal.start()
    wal.submit(wal.begin(len(records)), records).result(timeout=10)
    wal.close()
    head = Head(max_bytes=1 << 30, freeze_samples=1 << 20)
    assert replay(tmp_path / "wal", head).samples == 2
    tenant_head = head.tenant("t")
    assert tenant_head.ref_by_key == {sent_key(host_labels(0)): 0, sent_key(host_labels(1)): 1}
    ingester, again, _ = make_ingester(tmp_path, head=head)
    write(ingester, [host_labels(1)], NOW_MS + 1)
    again.close()
    assert tenant_head.series_count == 2
    assert [(c, ts.tolist()) for c, ts, _ in tenant_head.series_samples()] == [
        (canonical(host_labels(0)), [NOW_MS]),
        (canonical(host_labels(1)), [NOW_MS, NOW_MS + 1]),
    ]


def test_the_head_holds_one_key_per_series(tmp_path: Path) -> None:
    ingester, wal, head = make_ingester(tmp_path)
    series = [host_labels(i) for i in range(SERIES)]
    raw = write_request(*(time_series(labels, [(NOW_MS, ONE)]) for labels in series))
    body = raw.SerializeToString()
    # Another tenant first: what a first request allocates once (imports, metrics).
    warm, durable = ingester.submit("warm", decode_write_request(body), now_ms=NOW_MS)
    assert durable is not None
    durable.result(timeout=10)
    del warm, durable
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        outcome, durable = ingester.submit("t", decode_write_request(body), now_ms=NOW_MS)
        assert outcome.stored == SERIES
        assert durable is not None
        durable.result(timeout=10)
        del outcome, durable
        wal.close()  # its writer thread holds on to the last batch it wrote
        gc.collect()
        held = (tracemalloc.get_traced_memory()[0] - before) / SERIES
    finally:
        tracemalloc.stop()
    assert head.tenant("t").series_count == SERIES
    key = sum(len(sent_key(labels)) for labels in series) / SERIES + BYTES_HEADER
    assert held < key + HELD_BESIDES_KEY
