"""Native histograms end to end in process (issue 8, item 2): written over remote write 1.0
and 2.0, kept in the head, replayed from the WAL after a restart, cut into blocks, read
back over remote read (SAMPLES and streamed), merged by the compactor and read again:
every histogram bit for bit, floats of the same requests unaffected."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import snappy
from prometheus_client import CollectorRegistry

from blocks.objstore.local import LocalStore
from blocks.reader import BlockReader
from compactor.config import CompactorConfig
from compactor.metrics import CompactorMetrics
from compactor.run import Compactor
from gateway.app import FLUSH_PATH, create_app
from gateway.config import GatewayConfig
from gateway.decode import V2_PROTO
from gateway.head_cut import BLOCK_DURATION_MS
from proto import remote_pb2, types_pb2, write_v2_pb2
from querier.app import create_query_app
from querier.histogram_chunk import encode_histogram_chunks
from tests.compactor.bucket_data import live_blocks
from tests.querier.histogram_reads import (
    STALE_NAN_BITS,
    FloatSeries,
    HistogramSeries,
    LabelSet,
    bits,
    canonical,
    chunk_forms,
    custom_buckets,
    float_gauge,
    int_counter,
    no_overlap,
    read_request,
    samples_answer,
    streamed_answer,
)
from tests.support.asgi import Answer, InProcessApp

NOW_MS = int(time.time() * 1000)
T0 = (NOW_MS // BLOCK_DURATION_MS - 3) * BLOCK_DURATION_MS + 60_000
STEP_MS = 15_000
STEPS = 21
ACTIVE_RECOUNT_S = 1.1
V1_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
V2_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": f"application/x-protobuf;proto={V2_PROTO}",
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
INT = (("__name__", "hist_int"), ("job", "a"))
GAUGE = (("__name__", "hist_gauge"), ("job", "a"))
CUSTOM = (("__name__", "hist_custom"), ("job", "a"))
MIXED = (("__name__", "mixed"), ("job", "a"))
UP = (("__name__", "up"), ("job", "a"))
EVERYTHING = [types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="job", value="a")]


def ts_of(i: int) -> int:
    return T0 + i * STEP_MS


def v1_body(series: list[types_pb2.TimeSeries]) -> bytes:
    return bytes(snappy.compress(remote_pb2.WriteRequest(timeseries=series).SerializeToString()))


def v1_series(
    labels: LabelSet,
    samples: list[tuple[int, float]] = (),  # type: ignore[assignment]
    histograms: list[types_pb2.Histogram] = (),  # type: ignore[assignment]
) -> types_pb2.TimeSeries:
    return types_pb2.TimeSeries(
        labels=[types_pb2.Label(name=n, value=v) for n, v in labels],
        samples=[types_pb2.Sample(timestamp=t, value=v) for t, v in samples],
        histograms=list(histograms),
    )


def v2_body(series: list[tuple[LabelSet, list[write_v2_pb2.Histogram]]]) -> bytes:
    symbols = [""]
    out = []
    for labels, histograms in series:
        refs = []
        for text in (s for pair in labels for s in pair):
            if text not in symbols:
                symbols.append(text)
            refs.append(symbols.index(text))
        out.append(write_v2_pb2.TimeSeries(labels_refs=refs, histograms=histograms))
    request = write_v2_pb2.Request(symbols=symbols, timeseries=out)
    return bytes(snappy.compress(request.SerializeToString()))


def as_v2(message: types_pb2.Histogram) -> write_v2_pb2.Histogram:
    """The same histogram as a 2.0 message (same field numbers)."""
    return write_v2_pb2.Histogram.FromString(message.SerializeToString())


class Workload:
    """What the test writes, and what reading it back must give."""

    def __init__(self) -> None:
        self.int_counter = [int_counter(i, ts_of(i)) for i in range(STEPS)]
        self.gauge = [float_gauge(i, ts_of(i)) for i in range(STEPS)]
        self.custom = [custom_buckets(i, ts_of(i)) for i in range(STEPS)]
        # Floats, then histograms, then floats again, in one series.
        self.mixed_floats = [(ts_of(i), 1.5 * i) for i in [*range(0, 8), *range(16, STEPS)]]
        self.mixed_histograms = [int_counter(i, ts_of(i)) for i in range(8, 16)]
        self.up = [(ts_of(i), 1.0) for i in range(STEPS)]

    def histograms(self) -> HistogramSeries:
        def rows(
            messages: list[types_pb2.Histogram] | list[write_v2_pb2.Histogram],
        ) -> list[tuple[int, bytes]]:
            return [(m.timestamp, canonical(m)) for m in messages]

        return {
            INT: rows(self.int_counter),
            GAUGE: rows(self.gauge),
            CUSTOM: rows(self.custom),
            MIXED: rows(self.mixed_histograms),
        }

    def floats(self) -> FloatSeries:
        return {
            MIXED: [(t, bits(v)) for t, v in self.mixed_floats],
            UP: [(t, bits(v)) for t, v in self.up],
        }

    def write(self, app: InProcessApp) -> None:
        first = v1_body(
            [
                v1_series(INT, histograms=self.int_counter[:10]),
                v1_series(MIXED, self.mixed_floats, self.mixed_histograms),
                v1_series(UP, self.up),
            ]
        )
        answer = app.post("/api/v1/write", first, V1_HEADERS)
        assert answer.status == 204, answer.text
        second = v2_body(
            [
                (GAUGE, self.gauge),
                (CUSTOM, self.custom),
                (INT, [as_v2(m) for m in self.int_counter[10:]]),
            ]
        )
        answer = app.post("/api/v1/write", second, V2_HEADERS)
        assert answer.status == 204, answer.text
        assert written(answer) == (0, 3 * STEPS - 10, 0)


def written(answer: Answer) -> tuple[int, int, int]:
    kinds = ("samples", "histograms", "exemplars")
    return tuple(  # type: ignore[return-value]
        int(answer.headers[f"x-prometheus-remote-write-{kind}-written"]) for kind in kinds
    )


def read_both(app: InProcessApp) -> tuple[FloatSeries, HistogramSeries, HistogramSeries, dict]:  # type: ignore[type-arg]
    """SAMPLES floats and histograms, streamed histograms, streamed chunk ranges."""
    end = T0 + STEPS * STEP_MS
    answer = app.post("/api/v1/read", read_request(0, end, EVERYTHING, False), READ_HEADERS)
    assert answer.status == 200, answer.text
    floats, histograms = samples_answer(answer.body)
    answer = app.post("/api/v1/read", read_request(0, end, EVERYTHING, True), READ_HEADERS)
    assert answer.status == 200, answer.text
    s_floats, s_histograms, chunks = streamed_answer(answer.body)
    assert s_floats == floats
    return floats, histograms, s_histograms, chunks


def check_reads(app: InProcessApp, workload: Workload) -> None:
    floats, histograms, streamed, chunks = read_both(app)
    assert floats == workload.floats()
    assert histograms == workload.histograms()
    expected = workload.histograms()
    assert {k: chunk_forms(v) for k, v in streamed.items()} == {
        k: chunk_forms(v) for k, v in expected.items()
    }
    for labels, ranges in chunks.items():
        assert no_overlap(ranges), labels
    # A histogram series streams exactly the chunks Prometheus's head would have cut.
    ours = encode_histogram_chunks(expected[INT])
    assert [(c.encoding, c.mint, c.maxt) for c in ours] == chunks[INT]
    # The mixed series: XOR, histogram, XOR chunks in time order.
    kinds = [kind for kind, _, _ in chunks[MIXED]]
    assert kinds[0] == kinds[-1] == types_pb2.Chunk.XOR
    assert types_pb2.Chunk.HISTOGRAM in kinds


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def gateway(data_dir: Path) -> InProcessApp:
    config = GatewayConfig(data_dir=data_dir, cut_interval_s=3600.0)
    return InProcessApp(create_app(config, CollectorRegistry()))


def test_histograms_round_trip_through_head_wal_blocks_and_compaction(data_dir: Path) -> None:
    workload = Workload()
    with gateway(data_dir) as app:
        workload.write(app)
        check_reads(app, workload)
        # The stale marker is the int counter's last histogram, kept as sent.
        assert workload.int_counter[-1].sum != workload.int_counter[-1].sum
        assert bits(workload.int_counter[-1].sum) == STALE_NAN_BITS
    with gateway(data_dir) as app:  # a restart: the head comes back from the WAL
        check_reads(app, workload)
        head = app.app.state.gateway.head.tenants["default"]
        assert len(head.histograms) == 3 * STEPS + 8
        answer = app.post(FLUSH_PATH, b"")
        assert answer.status == 200, answer.text
        assert len(head.histograms) == 0
        check_reads(app, workload)  # from the bucket now
        # The same requests again: resends, written and counted, nothing doubled.
        workload.write(app)
        assert app.post(FLUSH_PATH, b"").status == 200
        check_reads(app, workload)  # two overlapping blocks, merged on read
    bucket = data_dir / "bucket"
    with LocalStore(bucket) as store:
        config = CompactorConfig(
            data_dir=data_dir / "compactor",
            downsampling=False,
            retention_raw="0",
        )
        compactor = Compactor(store, config, CompactorMetrics(CollectorRegistry()))
        summary = compactor.run_pass(now_ms=NOW_MS)
        assert summary.merges == 1, summary.line()
        (merged,) = live_blocks(store, "default", unmarked=True)
        reader = BlockReader(store, f"default/{merged.block_id}", meta=merged)
        count = reader.index.series_count
        stored = reader.read_histograms(range(count), -(2**63), 2**63 - 1)
        by_labels = {
            tuple(reader.index.labels(i)): list(zip(ts.tolist(), messages, strict=True))
            for i, (ts, messages) in stored.items()
            if len(ts)
        }
        assert by_labels == workload.histograms()
    query_config = GatewayConfig(data_dir=data_dir / "querier", bucket_url=f"file://{bucket}")
    with InProcessApp(create_query_app(query_config, CollectorRegistry())) as querier:
        check_reads(querier, workload)


def test_a_histogram_resent_is_written_and_a_changed_one_refused(data_dir: Path) -> None:
    first = float_gauge(1, ts_of(1))
    changed = float_gauge(2, ts_of(1))
    with gateway(data_dir) as app:
        assert written(app.post("/api/v1/write", v2_body([(GAUGE, [first])]), V2_HEADERS)) == (
            0,
            1,
            0,
        )
        again = app.post("/api/v1/write", v2_body([(GAUGE, [first])]), V2_HEADERS)
        assert (again.status, written(again)) == (204, (0, 1, 0))
        refused = app.post(
            "/api/v1/write", v2_body([(GAUGE, [changed, float_gauge(3, ts_of(3))])]), V2_HEADERS
        )
        assert refused.status == 400
        assert "1 duplicate_timestamp" in refused.text
        assert written(refused) == (0, 1, 0)  # the other histogram is kept
        _, histograms, _, _ = read_both(app)
    assert histograms[GAUGE] == [
        (ts_of(1), canonical(first)),
        (ts_of(3), canonical(float_gauge(3, ts_of(3)))),
    ]


def test_histograms_count_against_the_head_budget(data_dir: Path) -> None:
    with gateway(data_dir) as app:
        head = app.app.state.gateway.head.tenants
        body = v2_body([(CUSTOM, [custom_buckets(i, ts_of(i)) for i in range(STEPS)])])
        assert app.post("/api/v1/write", body, V2_HEADERS).status == 204
        tenant = head["default"]
        payload = sum(len(canonical(custom_buckets(i, ts_of(i)))) for i in range(STEPS))
        assert tenant.histograms.nbytes >= payload
        assert tenant.nbytes >= tenant.histograms.nbytes


@pytest.fixture
def tiny_budget(tmp_path: Path) -> Iterator[InProcessApp]:
    config = GatewayConfig(data_dir=tmp_path, cut_interval_s=3600.0, head_max_bytes=40_000)
    with InProcessApp(create_app(config, CollectorRegistry())) as app:
        yield app


def test_histograms_alone_can_exhaust_the_head_budget(tiny_budget: InProcessApp) -> None:
    statuses = []
    for batch in range(20):
        body = v2_body(
            [
                (
                    (("__name__", f"h{batch}"), ("job", "a")),
                    [custom_buckets(i, ts_of(i)) for i in range(STEPS)],
                )
            ]
        )
        statuses.append(tiny_budget.post("/api/v1/write", body, V2_HEADERS).status)
    assert statuses[0] == 204
    assert 503 in statuses


def test_a_histogram_counts_as_a_sample_for_rate_and_active_series_limits(
    tmp_path: Path,
) -> None:
    config = GatewayConfig(
        data_dir=tmp_path,
        cut_interval_s=3600.0,
        ingestion_rate=1.0,
        ingestion_burst=STEPS,
        max_active_series=1,
    )
    with InProcessApp(create_app(config, CollectorRegistry())) as app:
        recent = [float_gauge(i, NOW_MS - 60_000 + i) for i in range(STEPS)]
        assert app.post("/api/v1/write", v2_body([(GAUGE, recent)]), V2_HEADERS).status == 204
        # The burst is spent on histograms alone.
        later = [float_gauge(1, NOW_MS - 1000)]
        assert app.post("/api/v1/write", v2_body([(GAUGE, later)]), V2_HEADERS).status == 429
    config = GatewayConfig(data_dir=tmp_path / "b", cut_interval_s=3600.0, max_active_series=1)
    with InProcessApp(create_app(config, CollectorRegistry())) as app:
        first = v2_body([(GAUGE, [float_gauge(1, NOW_MS - 1000)])])
        assert app.post("/api/v1/write", first, V2_HEADERS).status == 204
        # A series of histograms only is an active series: no room for another, also once
        # the count is taken afresh from the series' newest times (at most once a second).
        time.sleep(ACTIVE_RECOUNT_S)
        second = v2_body([(CUSTOM, [custom_buckets(1, NOW_MS - 1000)])])
        refused = app.post("/api/v1/write", second, V2_HEADERS)
        assert refused.status == 400
        assert "max_active_series" in refused.text


def test_a_histogram_no_chunk_could_carry_is_refused_the_rest_kept(data_dir: Path) -> None:
    good = custom_buckets(1, ts_of(1))
    short = custom_buckets(2, ts_of(2))
    del short.positive_deltas[-1]  # four buckets by its spans, three given
    backwards = custom_buckets(3, ts_of(3))
    backwards.positive_spans.add(offset=-2, length=0)
    mixed = custom_buckets(4, ts_of(4))
    mixed.positive_counts.append(1.0)  # float buckets in an integer histogram
    with gateway(data_dir) as app:
        answer = app.post(
            "/api/v1/write", v2_body([(CUSTOM, [good, short, backwards, mixed])]), V2_HEADERS
        )
        assert answer.status == 400
        assert "3 invalid_histogram" in answer.text
        assert written(answer) == (0, 1, 0)
        _, histograms, _, _ = read_both(app)
    assert histograms == {CUSTOM: [(ts_of(1), canonical(good))]}


def test_a_histogram_counts_as_a_sample_against_the_query_limits(tmp_path: Path) -> None:
    config = GatewayConfig(data_dir=tmp_path, cut_interval_s=3600.0, query_max_samples=STEPS)
    with InProcessApp(create_app(config, CollectorRegistry())) as app:
        body = v2_body([(CUSTOM, [custom_buckets(i, ts_of(i)) for i in range(STEPS)])])
        assert app.post("/api/v1/write", body, V2_HEADERS).status == 204
        end = T0 + STEPS * STEP_MS
        request = read_request(0, end, EVERYTHING, False)
        assert app.post("/api/v1/read", request, READ_HEADERS).status == 200
        floats = v1_body([v1_series(UP, [(ts_of(0), 1.0)])])
        assert app.post("/api/v1/write", floats, V1_HEADERS).status == 204
        refused = app.post("/api/v1/read", request, READ_HEADERS)
        assert refused.status == 422, refused.text
        assert "query_max_samples" in refused.text
