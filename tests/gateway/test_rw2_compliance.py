"""What the public remote-write 2.0 receiver compliance suite checks, as a table.

Each row mirrors one check of github.com/prometheus/compliance, directory
`remotewrite/receiver` (cited as `file: Test/subtest`), or a sentence of the 2.0
specification, and states the exact answer Strata gives: status and the three
`X-Prometheus-Remote-Write-*-Written` counts. The suite's own rule (helpers_test.go,
validateResponse): on a 2xx every count must equal what was sent, on a 4xx none may
exceed it, and a missing header counts as 0. Where Strata cannot give yet what the suite
wants (native histogram storage, issue 8 item 2), the row says what the suite wants.
Requests are built as the suite builds them: one TimeSeries per sample, labels in map
order (not sorted), exemplars and metadata attached to the matching series or sent in
series of their own, the created timestamp in TimeSeries field 6.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import snappy
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.config import GatewayConfig
from proto import remote_pb2, types_pb2, write_v2_pb2
from tests.gateway.test_remote_write_v2 import V2_HEADERS, Symbols, written
from tests.gateway.writes import STALE_NAN, as_float
from tests.support import wire
from tests.support.asgi import InProcessApp

NOW_MS = int(time.time() * 1000)
HOUR_MS = 3_600_000
MINUTE_MS = 60_000
SUITE = "remotewrite/receiver/"
V1_HEADERS = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
# The suite's metric_test.go values.
VALUES = {
    "1.0": 1.0,
    "StaleNaN": as_float(STALE_NAN),
    "NaN": math.nan,
    "Inf": math.inf,
    "-Inf": -math.inf,
}


@dataclass(frozen=True, slots=True)
class Sample:
    labels: Mapping[str, str]
    value: float = 1.0
    offset_ms: int = 0
    created_ms: int = 0


@dataclass(frozen=True, slots=True)
class ExemplarOf:
    labels: Mapping[str, str]
    exemplar_labels: Mapping[str, str]
    value: float = 1.0
    offset_ms: int = 0


@dataclass(frozen=True, slots=True)
class MetadataOf:
    labels: Mapping[str, str]
    type: int
    help: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class HistogramOf:
    labels: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Opts:
    """The suite's RequestOpts."""

    samples: Sequence[Sample] = ()
    exemplars: Sequence[ExemplarOf] = ()
    metadata: Sequence[MetadataOf] = ()
    histograms: Sequence[HistogramOf] = ()


def suite_histogram() -> write_v2_pb2.Histogram:
    """helpers_test.go histogram(sum, positive, negative, zero, ...) with all three."""
    return write_v2_pb2.Histogram(
        count_int=27,
        sum=1.0,
        positive_spans=[
            write_v2_pb2.BucketSpan(offset=0, length=3),
            write_v2_pb2.BucketSpan(offset=2, length=2),
        ],
        positive_deltas=[1, 2, 1, 3, 1],
        negative_spans=[write_v2_pb2.BucketSpan(offset=0, length=2)],
        negative_deltas=[1, 1],
        zero_count_int=1,
    )


def unsorted_refs(symbols: Symbols, labels: Mapping[str, str]) -> list[int]:
    """Label refs in the reverse of their order: Go map order is not sorted either."""
    return symbols.refs(list(labels.items())[::-1])


def v2_request(opts: Opts, now_ms: int) -> bytes:
    """The body the suite's generateRequest sends for `opts`, before compression."""
    symbols = Symbols()
    metadata = {
        m.labels.get("__name__", ""): write_v2_pb2.Metadata(
            type=m.type,  # type: ignore[arg-type]
            help_ref=symbols.ref(m.help),
            unit_ref=symbols.ref(m.unit),
        )
        for m in opts.metadata
    }
    used: set[int] = set()
    encoded: list[bytes] = []

    def attach(labels: Mapping[str, str], series: write_v2_pb2.TimeSeries) -> None:
        for index, exemplar in enumerate(opts.exemplars):
            if index not in used and dict(exemplar.labels) == dict(labels):
                used.add(index)
                series.exemplars.append(
                    write_v2_pb2.Exemplar(
                        labels_refs=symbols.refs(list(exemplar.exemplar_labels.items())),
                        value=exemplar.value,
                        timestamp=now_ms + exemplar.offset_ms,
                    )
                )
                break
        name = labels.get("__name__", "")
        if name in metadata:
            series.metadata.CopyFrom(metadata[name])

    for sample in opts.samples:
        series = write_v2_pb2.TimeSeries(labels_refs=unsorted_refs(symbols, sample.labels))
        series.samples.append(
            write_v2_pb2.Sample(value=sample.value, timestamp=now_ms + sample.offset_ms)
        )
        attach(sample.labels, series)
        created = wire.varint_field(6, sample.created_ms) if sample.created_ms else b""
        encoded.append(series.SerializeToString() + created)
    for histogram in opts.histograms:
        series = write_v2_pb2.TimeSeries(labels_refs=unsorted_refs(symbols, histogram.labels))
        item = suite_histogram()
        item.timestamp = now_ms
        series.histograms.append(item)
        attach(histogram.labels, series)
        encoded.append(series.SerializeToString())
    for index, exemplar in enumerate(opts.exemplars):
        if index in used:
            continue
        series = write_v2_pb2.TimeSeries(labels_refs=unsorted_refs(symbols, exemplar.labels))
        series.exemplars.append(
            write_v2_pb2.Exemplar(
                labels_refs=symbols.refs(list(exemplar.exemplar_labels.items())),
                value=exemplar.value,
                timestamp=now_ms + exemplar.offset_ms,
            )
        )
        encoded.append(series.SerializeToString())
    sent = {s.labels.get("__name__") for s in opts.samples} | {
        h.labels.get("__name__") for h in opts.histograms
    }
    for entry in opts.metadata:
        name = entry.labels.get("__name__", "")
        if name and name not in sent:
            series = write_v2_pb2.TimeSeries(labels_refs=unsorted_refs(symbols, entry.labels))
            series.metadata.CopyFrom(metadata[name])
            encoded.append(series.SerializeToString())
    head = write_v2_pb2.Request(symbols=symbols.table).SerializeToString()
    return head + b"".join(wire.bytes_field(5, series) for series in encoded)


def v1_request(samples: Sequence[Sample], now_ms: int) -> bytes:
    """rw1_compat_test.go generateRW1Request."""
    request = remote_pb2.WriteRequest()
    for sample in samples:
        series = request.timeseries.add()
        for name, value in sample.labels.items():
            series.labels.append(types_pb2.Label(name=name, value=value))
        series.samples.append(types_pb2.Sample(value=sample.value, timestamp=now_ms))
    return request.SerializeToString()


def corrupted(body: bytes, first: int = ord("0")) -> bytes:
    """request_test.go corruptRequestBody: the first byte of the compressed body set."""
    return bytes([first]) + body[1:]


@dataclass(frozen=True, slots=True)
class Row:
    """One check: what is sent, and the status and written counts Strata answers."""

    check: str  # what it mirrors: `file: Test/subtest`, or the spec section
    level: str  # the suite's RFC level: MUST, SHOULD, MAY
    opts: Opts | None = None  # a 2.0 request built like the suite's generateRequest
    body: bytes | None = None  # or a ready body (compressed)
    headers: Mapping[str, str] = field(default_factory=lambda: V2_HEADERS)
    status: int = 204
    # Exact (samples, histograms, exemplars) headers; None: no written headers at all.
    written: tuple[int, int, int] | None = (0, 0, 0)
    # (samples, exemplars) the request leaves stored; None: what the headers claim.
    stored: tuple[int, int] | None = None


def name(metric: str, **labels: str) -> dict[str, str]:
    return {"__name__": metric, **labels}


def sample_rows() -> list[Row]:
    rows = []
    for value_name, value in VALUES.items():
        rows.append(
            Row(
                f"metric_test.go: TestSingleMetric/{value_name}/simple metric returns 204",
                "SHOULD",
                Opts([Sample(name("up"), value)]),
                written=(1, 0, 0),
            )
        )
    shapes = {
        "simple metric with multiple labels": name("up", job="testjob", instance="h:9090"),
        "simple metric with newlines": name("up", job="test\njob\n", instance="h:9090"),
        "simple metric with dots": {"__name__": "resource.cpu.usage", "job.name": "testjob"},
        "simple metric with spaces": {"__name__": "resource cpu usage", "job name": "testjob"},
    }
    for subtest, labels in shapes.items():
        rows.append(
            Row(
                f"metric_test.go: TestSingleMetric/1.0/{subtest} returns 204",
                "SHOULD",
                Opts([Sample(labels)]),
                written=(1, 0, 0),
            )
        )
    instances = [name("up", job="testjob", instance=f"h:909{i}") for i in range(4)]
    nameless = [{"job": "testjob", "instance": f"h:909{i}"} for i in range(4)]
    return [
        *rows,
        Row(
            "metric_test.go: TestSingleMetric/1.0/simple metric without name label",
            "MUST",
            Opts([Sample({"job": "testjob", "instance": "h:9090"})]),
            status=400,
        ),
        Row(
            "metric_test.go: TestSingleMetric/1.0/empty metric",
            "MUST",
            Opts([Sample({})]),
            status=400,
        ),
        Row(
            "metric_test.go: TestCounterWithCreatedTimestamp",
            "SHOULD",
            Opts([Sample(name("http_requests_total", job="api"), 100.0, 0, NOW_MS - HOUR_MS)]),
            written=(1, 0, 0),
        ),
        Row(
            "metric_test.go: TestMultipleMetrics/1.0/multiple metrics returns 204",
            "SHOULD",
            Opts([Sample(labels, 2.0) for labels in instances]),
            written=(4, 0, 0),
        ),
        Row(
            "metric_test.go: TestMultipleMetrics/1.0/multiple metrics, without name label",
            "SHOULD",
            Opts([Sample(labels) for labels in nameless]),
            status=400,
        ),
        Row(
            "metric_test.go: TestMultipleMetrics/1.0/multiple metrics, 1 without name label",
            "SHOULD",
            Opts([Sample(nameless[0], 3.0)] + [Sample(x, 3.0) for x in instances[1:]]),
            status=400,
            written=(3, 0, 0),
        ),
    ]


def exemplar_rows() -> list[Row]:
    counter = name("http_requests_total", job="api")
    trace = {"trace_id": "abc123def456"}
    latency = name("latency_hist")
    offsets = (-HOUR_MS, -MINUTE_MS, 0)
    return [
        Row(
            "exemplar_test.go: TestExemplars/basic_exemplar returns 204",
            "MUST",
            Opts([Sample(counter, 1.5)], [ExemplarOf(counter, trace, 1.5)]),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplars/exemplar_no_labels returns 204",
            "MUST",
            Opts([Sample(name("simple_counter"))], [ExemplarOf(name("simple_counter"), {})]),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplars/exemplar_with_unicode returns 204",
            "MUST",
            Opts(
                [Sample(name("unicode_test", region="🌍"), 100.0)],
                [ExemplarOf(name("unicode_test", region="🌍"), {"trace_id": "测试"}, 100.0)],
            ),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplarWithCreatedTimestamp returns 204",
            "SHOULD",
            Opts(
                [Sample(counter, 250.0, 0, NOW_MS - 2 * HOUR_MS)],
                [ExemplarOf(counter, {"trace_id": "abc123", "span_id": "span456"}, 250.0)],
            ),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplarTimestamps returns 204",
            "MUST",
            Opts(
                [Sample(latency, 0.05 * (i + 1), off) for i, off in enumerate(offsets)],
                [
                    ExemplarOf(latency, {"trace_id": f"t{i}"}, 0.05, off)
                    for i, off in enumerate(offsets)
                ],
            ),
            written=(3, 0, 3),
        ),
        Row(
            "exemplar_test.go: TestExemplarValidation/exemplar_without_name_label",
            "SHOULD",
            Opts([Sample({"job": "test"})], [ExemplarOf({"job": "test"}, {"trace_id": "x"})]),
            status=400,
        ),
        Row(
            "exemplar_test.go: TestExemplarValidation/exemplar_with_empty_name",
            "SHOULD",
            Opts([Sample({"__name__": ""})], [ExemplarOf({"__name__": ""}, {"trace_id": "x"})]),
            status=400,
        ),
        Row(
            "exemplar_test.go: TestExemplarValidation/exemplar_with_valid_name",
            "SHOULD",
            Opts([Sample(name("valid_metric"))], [ExemplarOf(name("valid_metric"), {"t": "x"})]),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplarSpecialValues/nan_value returns 204",
            "MUST",
            Opts(
                [Sample(name("test_metric"), math.nan)],
                [ExemplarOf(name("test_metric"), trace, math.nan)],
            ),
            written=(1, 0, 1),
        ),
        Row(
            "exemplar_test.go: TestExemplarSpecialValues/-inf_value returns 204",
            "MUST",
            Opts(
                [Sample(name("test_metric"), -math.inf)],
                [ExemplarOf(name("test_metric"), trace, -math.inf)],
            ),
            written=(1, 0, 1),
        ),
    ]


def metadata_rows() -> list[Row]:
    counter = MetadataOf(
        name("http_requests_total"), 1, "Total number of HTTP requests", "requests"
    )
    return [
        Row(
            "metadata_test.go: TestMetadata/counter_metadata returns 204",
            "MUST",
            Opts([Sample(name("http_requests_total"), 4.0)], metadata=[counter]),
            written=(1, 0, 0),
        ),
        Row(
            "metadata_test.go: TestMetadata/unspecified_metadata_type returns 204",
            "MUST",
            Opts(
                [Sample(name("unknown_metric"))],
                metadata=[MetadataOf(name("unknown_metric"), 0, "Unknown")],
            ),
            written=(1, 0, 0),
        ),
        Row(
            "metadata_test.go: TestMetadata/histogram_metadata",
            "MUST",
            Opts(
                metadata=[MetadataOf(name("request_duration_seconds"), 3, "Duration", "seconds")],
                histograms=[HistogramOf(name("request_duration_seconds"))],
            ),
            written=(0, 1, 0),
        ),
        Row(
            "metadata_test.go: TestMetadataValidation/metadata_without_name_label",
            "SHOULD",
            Opts([Sample({"job": "test"})], metadata=[MetadataOf({"job": "test"}, 1, "Test help")]),
            status=400,
        ),
        Row(
            "metadata_test.go: TestMetadataValidation/metadata_with_empty_name",
            "SHOULD",
            Opts([Sample({"__name__": ""})], metadata=[MetadataOf({"__name__": ""}, 2, "Test")]),
            status=400,
        ),
        Row(
            "metadata_test.go: TestMetadataValidation/metadata_with_valid_name",
            "SHOULD",
            Opts(
                [Sample(name("valid_metric_name"))],
                metadata=[MetadataOf(name("valid_metric_name"), 1, "Test help", "unit")],
            ),
            written=(1, 0, 0),
        ),
    ]


def combined_rows() -> list[Row]:
    labels = name("http_requests_total", job="api", method="POST")
    many = [name(f"counter_metric_{i}", series=f"series_{i}") for i in range(50)]
    return [
        Row(
            "combined_test.go: TestSamplesWithMetadataAndExemplars returns 204",
            "MUST",
            Opts(
                [Sample(labels, 7.0)],
                [ExemplarOf(labels, {"trace_id": "request_trace_123", "user_id": "user789"}, 7.0)],
                [MetadataOf(labels, 1, "Total number of HTTP requests", "requests")],
            ),
            written=(1, 0, 1),
        ),
        Row(
            "combined_test.go: TestEdgeCaseCombinations/metadata_without_data",
            "SHOULD",
            Opts(metadata=[MetadataOf(name("orphan_metric"), 1, "Orphaned", "count")]),
            written=(0, 0, 0),
        ),
        Row(
            "combined_test.go: TestEdgeCaseCombinations/exemplars_without_data",
            "SHOULD",
            Opts(exemplars=[ExemplarOf(name("orphan_metric"), {"trace_id": "orphan"}, 42.0)]),
            written=(0, 0, 1),
        ),
        Row(
            "combined_test.go: TestEdgeCaseCombinations/mixed_timestamp_data",
            "SHOULD",
            Opts(
                [Sample(name("old_metric"), 1.0, -HOUR_MS), Sample(name("new_metric"), 2.0)],
                [ExemplarOf(name("old_metric"), {"trace_id": "old"}, 1.0, -30 * MINUTE_MS)],
            ),
            written=(2, 0, 1),
        ),
        Row(
            "combined_test.go: TestManySamples returns 204",
            "MUST",
            Opts(
                [Sample(x, float(i * 100)) for i, x in enumerate(many)],
                [
                    ExemplarOf(x, {"trace_id": f"trace_{i}"}, float(i * 100))
                    for i, x in enumerate(many)
                ],
                [
                    MetadataOf(name(x["__name__"]), 1, f"Counter {i}", "count")
                    for i, x in enumerate(many)
                ],
            ),
            written=(50, 0, 50),
        ),
        Row(
            "histograms_test.go: TestHistograms/basic_histogram",
            "MUST",
            Opts(histograms=[HistogramOf(name("basic_histogram"))]),
            written=(0, 1, 0),
        ),
    ]


def protocol_rows() -> list[Row]:
    up = Opts([Sample(name("up"))])
    body = bytes(snappy.compress(v2_request(up, NOW_MS)))
    v1_body = bytes(snappy.compress(v1_request([Sample(name("rw1_up"))], NOW_MS)))
    rows = [
        Row(
            f"request_test.go: TestBadContentTypes/{content_type.replace('/', '_')}",
            "MUST",
            body=corrupted(body),
            headers={**V2_HEADERS, "Content-Type": content_type},
            status=415,
            written=None,
        )
        for content_type in ("application/json", "image/png")
    ]
    rows += [
        Row(
            f"request_test.go: TestBadContentEncodings/{encoding}",
            "MUST",
            body=corrupted(body),
            headers={**V2_HEADERS, "Content-Encoding": encoding},
            status=415,
            written=None,
        )
        for encoding in ("gzip", "deflate")
    ]
    return [
        *rows,
        Row("request_test.go: TestCorruptRequestBody", "MUST", body=corrupted(body), status=400),
        Row(
            "rw1_compat_test.go: TestRW1BasicCompatibility (2xx, nothing claimed as written)",
            "MAY",
            body=v1_body,
            headers=V1_HEADERS,
            written=None,
            stored=(1, 0),
        ),
        Row(
            "rw1_compat_test.go: TestRW1ErrorHandling",
            "MAY",
            body=corrupted(v1_body, 0xFF),
            headers=V1_HEADERS,
            status=400,
            written=None,
        ),
        Row(
            "spec 2.0, Unsupported Request Content: a proto= message not supported is 415",
            "MUST",
            body=body,
            headers={**V2_HEADERS, "Content-Type": "application/x-protobuf;proto=x.y.Request"},
            status=415,
            written=None,
        ),
    ]


ROWS = sample_rows() + exemplar_rows() + metadata_rows() + combined_rows() + protocol_rows()


@pytest.fixture(scope="module")
def receiver(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[InProcessApp, CollectorRegistry]]:
    registry = CollectorRegistry()
    data_dir: Path = tmp_path_factory.mktemp("rw2-compliance")
    with InProcessApp(create_app(GatewayConfig(data_dir=data_dir), registry)) as app:
        yield app, registry


def stored_counts(registry: CollectorRegistry) -> tuple[float, float]:
    samples = registry.get_sample_value("strata_samples_received_total", {"tenant": "default"})
    exemplars = registry.get_sample_value("strata_exemplars_received_total", {"tenant": "default"})
    return samples or 0.0, exemplars or 0.0


def test_the_table_covers_every_check_once() -> None:
    checks = [row.check for row in ROWS]
    assert len(set(checks)) == len(checks)
    assert {row.level for row in ROWS} == {"MUST", "SHOULD", "MAY"}


@pytest.mark.parametrize("row", ROWS, ids=[row.check.removesuffix(" returns 204") for row in ROWS])
def test_receiver_answers_as_the_compliance_suite_checks(
    receiver: tuple[InProcessApp, CollectorRegistry], row: Row
) -> None:
    app, registry = receiver
    now_ms = int(time.time() * 1000)
    body = row.body
    if body is None:
        assert row.opts is not None
        body = bytes(snappy.compress(v2_request(row.opts, now_ms)))
    before = stored_counts(registry)
    answer = app.post("/api/v1/write", body, row.headers)
    assert answer.status == row.status, answer.text
    assert written(answer) == row.written
    if answer.status >= 400:
        assert answer.text.count("\n") == 1  # one human-readable line
    samples, exemplars = (b - a for a, b in zip(before, stored_counts(registry), strict=True))
    claimed = row.written or (0, 0, 0)
    # Exactly what the headers claim was stored, nothing more and nothing less.
    assert (samples, exemplars) == (row.stored or (claimed[0], claimed[2]))
