"""bench.fleet: its requests decode, hold the promised series and move like exporters' do."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import snappy

from bench.fleet import (
    HISTOGRAM_BOUNDS,
    INTERVAL_MS,
    SERIES_PER_HOST,
    Fleet,
    Kind,
    Labels,
    ScrapeEncoder,
    iter_scrapes,
    series_labels,
    write_fleet,
)
from proto import remote_pb2, types_pb2
from tests.conftest import read_corpus

END_MS = 1_795_564_800_000
HOSTS = 3
SCRAPES = 12


def decoded(path: Path) -> list[remote_pb2.WriteRequest]:
    """Every request of a .rwlog file, decoded."""
    return [remote_pb2.WriteRequest.FromString(snappy.decompress(b)) for b in read_corpus(path)]


def test_requests_are_encoded_as_protobuf_encodes_them(tmp_path: Path) -> None:
    # A request encoded otherwise (explicit zero values) sends Strata down its slow path.
    path = tmp_path / "fleet.rwlog"
    write_fleet(path, SERIES_PER_HOST, SCRAPES, END_MS, samples_per_request=30)
    raws = [snappy.decompress(b) for b in read_corpus(path)]
    requests = [remote_pb2.WriteRequest.FromString(raw) for raw in raws]
    assert any(s.samples[0].value == 0 for r in requests for s in r.timeseries)
    assert [r.SerializeToString() for r in requests] == raws


def labels_of(series: types_pb2.TimeSeries) -> Labels:
    return tuple((label.name, label.value) for label in series.labels)


def test_fleet_file_decodes_into_the_promised_series_and_samples(tmp_path: Path) -> None:
    path = tmp_path / "fleet.rwlog"
    made = write_fleet(path, HOSTS * SERIES_PER_HOST, SCRAPES, END_MS, samples_per_request=70)
    requests = decoded(path)
    sidecar = json.loads(Path(str(path) + ".idx.json").read_text())
    assert sidecar["file_bytes"] == path.stat().st_size
    assert sidecar["request_samples"] == [
        sum(len(s.samples) for s in r.timeseries) for r in requests
    ]
    samples: dict[Labels, list[tuple[int, float]]] = defaultdict(list)
    for request in requests:
        for series in request.timeseries:
            assert len(series.samples) == 1  # as Prometheus 2.x sends
            samples[labels_of(series)] += [(s.timestamp, s.value) for s in series.samples]
    assert set(samples) == set(series_labels(HOSTS * SERIES_PER_HOST))
    assert len(samples) == made.series == HOSTS * SERIES_PER_HOST
    assert made.samples == sum(len(v) for v in samples.values()) == made.series * SCRAPES
    for labels, points in samples.items():
        names = [name for name, _ in labels]
        assert names == sorted(names)
        assert dict(labels)["job"] == "node"
        assert {"__name__", "instance"} <= set(names)
        ts = np.array([t for t, _ in points])
        assert np.all(np.diff(ts) == INTERVAL_MS)
        assert ts[0] >= END_MS - SCRAPES * INTERVAL_MS
        assert ts[-1] < END_MS
    per_host: dict[str, int] = defaultdict(int)
    for labels in samples:
        per_host[dict(labels)["instance"]] += 1
    assert sorted(per_host.values()) == [SERIES_PER_HOST] * HOSTS


def test_sidecar_dependencies_name_the_latest_earlier_request_sharing_a_series(
    tmp_path: Path,
) -> None:
    path = tmp_path / "fleet.rwlog"
    write_fleet(path, 2 * SERIES_PER_HOST, 5, END_MS, samples_per_request=64)
    deps = json.loads(Path(str(path) + ".idx.json").read_text())["request_deps"]
    last: dict[Labels, int] = {}
    want = []
    for index, request in enumerate(decoded(path)):
        held = [labels_of(s) for s in request.timeseries]
        want.append(max((last[labels] for labels in held if labels in last), default=-1))
        last.update(dict.fromkeys(held, index))
    assert deps == want


def test_encoder_writes_what_protobuf_writes() -> None:
    labels = series_labels(SERIES_PER_HOST)
    encoder = ScrapeEncoder(labels, samples_per_request=33)
    ts = END_MS + np.arange(len(labels), dtype=np.int64) * 7
    values = np.linspace(-1e9, 1e9, len(labels))
    values[5] = float("nan")
    values[[0, 6, 7, 32, 33, 99]] = 0.0  # no value field, as protobuf leaves defaults out
    got = encoder.encode(ts, values)
    want = []
    for lo in range(0, len(labels), 33):
        request = remote_pb2.WriteRequest()
        for i in range(lo, min(lo + 33, len(labels))):
            request.timeseries.append(
                types_pb2.TimeSeries(
                    labels=[types_pb2.Label(name=n, value=v) for n, v in labels[i]],
                    samples=[types_pb2.Sample(value=values[i], timestamp=int(ts[i]))],
                )
            )
        want.append(request.SerializeToString())
    assert got == want


def scrape_matrix(fleet: Fleet, scrapes: int) -> np.ndarray:
    """Values (scrapes, series) of consecutive scrapes."""
    return np.array(
        [v.copy() for _, v in iter_scrapes(fleet, END_MS - scrapes * INTERVAL_MS, scrapes)]
    )


def test_counters_only_fall_when_their_host_restarts() -> None:
    # About one restart per host every 5 scrapes, so a short run sees many.
    fleet = Fleet(4 * SERIES_PER_HOST, restarts_per_host_per_day=86_400_000 / INTERVAL_MS / 5)
    values = scrape_matrix(fleet, 40)
    boot = values[:, fleet.kind == Kind.BOOT_TIME]
    restarted_at = np.diff(boot, axis=0) != 0  # (scrapes - 1, boot series)
    counters = np.flatnonzero(fleet.kind == Kind.COUNTER)
    falls = np.diff(values[:, counters], axis=0) < 0
    boot_series_of_host = np.flatnonzero(fleet.kind == Kind.BOOT_TIME)[::2] // SERIES_PER_HOST
    host_restarted = restarted_at[:, ::2][
        :, np.searchsorted(boot_series_of_host, fleet.host[counters])
    ]
    assert fleet.restarts > 10
    assert falls.any()
    assert not (falls & ~host_restarted).any()
    # After a restart a counter starts again from zero: one scrape's increase at most
    # (three times the mean increase: noise of 6.7 standard deviations).
    one_step = 3 * fleet.rate[counters] * INTERVAL_MS / 1000 + fleet.quantum[counters]
    after = values[1:, counters]
    assert (after[host_restarted] <= np.broadcast_to(one_step, after.shape)[host_restarted]).all()


def test_counters_never_fall_without_restarts() -> None:
    fleet = Fleet(2 * SERIES_PER_HOST, restarts_per_host_per_day=0)
    values = scrape_matrix(fleet, 30)
    counters = fleet.kind == Kind.COUNTER
    assert (np.diff(values[:, counters], axis=0) >= 0).all()
    assert (np.diff(values[:, counters], axis=0) > 0).any()
    gauges = fleet.kind == Kind.GAUGE
    assert (np.diff(values[:, gauges], axis=0) != 0).any()


def test_histogram_buckets_are_cumulative_and_end_in_the_count() -> None:
    fleet = Fleet(3 * SERIES_PER_HOST, restarts_per_host_per_day=0)
    labels = fleet.labels
    values = scrape_matrix(fleet, 20)
    groups: dict[tuple[str, str], dict[str, int]] = defaultdict(dict)
    for i, one in enumerate(labels):
        d = dict(one)
        if d["__name__"].startswith("http_request_duration_seconds"):
            key = d["__name__"].removeprefix("http_request_duration_seconds_")
            groups[(d["instance"], d["handler"])][d.get("le", key)] = i
    assert len(groups) == 3 * 2
    bounds = [f"{b:g}" for b in HISTOGRAM_BOUNDS] + ["+Inf"]
    for members in groups.values():
        assert set(members) == {*bounds, "sum", "count"}
        buckets = values[:, [members[le] for le in bounds]]
        assert (np.diff(buckets, axis=1) >= 0).all()  # cumulative across le
        assert (np.diff(buckets, axis=0) >= 0).all()  # counters across scrapes
        assert np.array_equal(buckets[:, -1], values[:, members["count"]])
        assert (values[:, members["sum"]] > 0).all()
    assert (np.diff(values[:, [g["count"] for g in groups.values()]], axis=0) > 0).any()


def test_values_are_whole_multiples_of_their_quantum() -> None:
    fleet = Fleet(SERIES_PER_HOST)
    values = scrape_matrix(fleet, 10)
    moving = (fleet.kind == Kind.COUNTER) | (fleet.kind == Kind.GAUGE)
    ratio = values[:, moving] / fleet.quantum[moving]
    assert np.allclose(ratio, np.round(ratio), rtol=0, atol=1e-6)
    gauges = fleet.kind == Kind.GAUGE
    assert (values[:, gauges] >= fleet.low[gauges]).all()
    assert (values[:, gauges] <= fleet.high[gauges]).all()


def test_decimal_values_are_the_floats_their_text_parses_into() -> None:
    fleet = Fleet(SERIES_PER_HOST)
    values = scrape_matrix(fleet, 10)
    cpu = np.flatnonzero(fleet.quantum == 0.01)
    assert len(cpu) >= 16
    for v in values[:, cpu].ravel().tolist():
        assert float(f"{v:.2f}") == v
