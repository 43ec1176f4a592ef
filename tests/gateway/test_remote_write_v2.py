"""Remote write 2.0: decoding every message kind bit for bit, 1.0/2.0 equivalence, the
written-count headers, and the symbol-table bounds (issue 8)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import snappy
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from blocks.errors import InvalidRequest
from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.decode import V2_PROTO, MetricMetadata, decode_write_request
from gateway.decode_v2 import decode_v2_request, label_message
from proto import remote_pb2, types_pb2, write_v2_pb2
from tests.gateway.writes import (
    SPECIAL_BITS,
    STALE_NAN,
    WRITE_HEADERS,
    as_float,
    body_of,
    label_bytes,
    time_series,
    write_request,
)
from tests.support import wire
from tests.support.asgi import Answer, InProcessApp

NOW_MS = int(time.time() * 1000)
V2_CONTENT_TYPE = f"application/x-protobuf;proto={V2_PROTO}"
V2_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": V2_CONTENT_TYPE,
    "X-Prometheus-Remote-Write-Version": "2.0.0",
}
READ_HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Read-Version": "0.1.0",
}
WRITTEN = ("Samples", "Histograms", "Exemplars")
UP = [("__name__", "up"), ("instance", "a:9100"), ("job", "node")]
Labels = Sequence[tuple[str, str]]


class Symbols:
    """A 2.0 symbol table being built, "" first, each string once."""

    def __init__(self) -> None:
        self.table = [""]
        self.index = {"": 0}

    def ref(self, text: str) -> int:
        if text not in self.index:
            self.index[text] = len(self.table)
            self.table.append(text)
        return self.index[text]

    def refs(self, labels: Labels) -> list[int]:
        return [self.ref(s) for pair in labels for s in pair]

    def request(self, *series: write_v2_pb2.TimeSeries) -> write_v2_pb2.Request:
        return write_v2_pb2.Request(symbols=self.table, timeseries=list(series))


def v2_series(
    symbols: Symbols,
    labels: Labels,
    samples: Sequence[tuple[int, int]] = (),
    *,
    exemplars: Sequence[write_v2_pb2.Exemplar] = (),
    histograms: Sequence[write_v2_pb2.Histogram] = (),
    metadata: write_v2_pb2.Metadata | None = None,
) -> write_v2_pb2.TimeSeries:
    """A 2.0 TimeSeries; samples as (timestamp, value bits) like tests/gateway/writes.py."""
    series = write_v2_pb2.TimeSeries(
        labels_refs=symbols.refs(labels),
        samples=[write_v2_pb2.Sample(value=as_float(b), timestamp=t) for t, b in samples],
        exemplars=list(exemplars),
        histograms=list(histograms),
    )
    if metadata is not None:
        series.metadata.CopyFrom(metadata)
    return series


def v2_body(request: write_v2_pb2.Request | bytes) -> bytes:
    raw = request if isinstance(request, bytes) else request.SerializeToString()
    return bytes(snappy.compress(raw))


def written(answer: Answer) -> tuple[int, ...] | None:
    """(samples, histograms, exemplars) of the written headers; None when there are none."""
    names = [f"x-prometheus-remote-write-{kind.lower()}-written" for kind in WRITTEN]
    if not any(name in answer.headers for name in names):
        return None
    return tuple(int(answer.headers[name]) for name in names)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[InProcessApp]:
    with InProcessApp(create_app(GatewayConfig(data_dir=tmp_path), CollectorRegistry())) as app:
        yield app


def read_samples(
    app: InProcessApp, metric: str
) -> dict[tuple[tuple[str, str], ...], list[tuple[int, int]]]:
    """Remote read SAMPLES of one metric: labels -> [(timestamp, value bits)]."""
    matcher = types_pb2.LabelMatcher(type=types_pb2.LabelMatcher.EQ, name="__name__", value=metric)
    query = remote_pb2.Query(start_timestamp_ms=0, end_timestamp_ms=NOW_MS + 3_600_000)
    query.matchers.append(matcher)
    body = snappy.compress(remote_pb2.ReadRequest(queries=[query]).SerializeToString())
    answer = app.post("/api/v1/read", body, READ_HEADERS)
    assert answer.status == 200, answer.text
    response = remote_pb2.ReadResponse.FromString(snappy.uncompress(answer.body))
    out = {}
    for series in response.results[0].timeseries:
        labels = tuple((label.name, label.value) for label in series.labels)
        values = np.array([s.value for s in series.samples], dtype=np.float64)
        stamps = [s.timestamp for s in series.samples]
        out[labels] = list(zip(stamps, values.view(np.uint64).tolist(), strict=True))
    return out


def full_histograms() -> list[tuple[types_pb2.Histogram, write_v2_pb2.Histogram]]:
    """The same histograms as 1.0 and as 2.0 messages: integer with both bucket sides,
    zero bucket and reset hint; float with counts; custom buckets (schema -53)."""
    common = {
        "sum": as_float(0x400921FB54442D18),  # pi, all 64 bits meaningful
        "zero_threshold": 1e-128,
        "negative_spans": [{"offset": -2, "length": 2}],
        "positive_spans": [{"offset": 0, "length": 3}, {"offset": 2, "length": 2}],
        "timestamp": NOW_MS - 1000,
    }
    integer = {
        **common,
        "count_int": 27,
        "schema": 3,
        "zero_count_int": 1,
        "negative_deltas": [1, 1],
        "positive_deltas": [1, 2, 1, 3, -8],
    }
    floating = {
        **common,
        "count_float": 26.5,
        "schema": -4,
        "zero_count_float": 0.5,
        "negative_counts": [1.0, 2.0],
        "positive_counts": [1.0, 3.0, 4.0, 7.0, as_float(STALE_NAN)],
    }
    custom = {
        "count_int": 30,
        "sum": 0.05,
        "schema": -53,
        "positive_spans": [{"offset": 0, "length": 6}],
        "positive_deltas": [2, 1, 2, 3, -1, -2],
        "custom_values": [0.1, 0.5, 1.0, 2.5, 5.0, 10.0],
        "timestamp": NOW_MS - 2000,
    }
    pairs = []
    for fields, hint in ((integer, 1), (floating, 3), (custom, 2)):
        v1 = types_pb2.Histogram(**fields)  # type: ignore[arg-type]
        v2 = write_v2_pb2.Histogram(**fields)  # type: ignore[arg-type]
        v1.reset_hint = hint  # type: ignore[assignment]
        v2.reset_hint = hint  # type: ignore[assignment]
        pairs.append((v1, v2))
    return pairs


def test_float_samples_round_trip_bit_exact_through_remote_read(gateway: InProcessApp) -> None:
    symbols = Symbols()
    samples = [(NOW_MS - 60_000 + i, bits) for i, bits in enumerate(SPECIAL_BITS)]
    request = symbols.request(v2_series(symbols, UP, samples))
    answer = gateway.post("/api/v1/write", v2_body(request), V2_HEADERS)
    assert answer.status == 204, answer.text
    assert answer.body == b""
    assert written(answer) == (len(samples), 0, 0)
    assert read_samples(gateway, "up") == {tuple(UP): samples}


def test_a_series_sent_by_1_0_and_by_2_0_is_one_head_series(gateway: InProcessApp) -> None:
    symbols = Symbols()
    v2 = symbols.request(v2_series(symbols, UP, [(NOW_MS - 1, STALE_NAN)]))
    v1 = write_request(time_series(UP, [(NOW_MS - 2, 0x3FF0000000000000)]))
    assert decode_v2_request(v2.SerializeToString()).series_keys == (
        decode_write_request(v1.SerializeToString()).series_keys
    )
    first = gateway.post(
        "/api/v1/write", bytes(snappy.compress(v1.SerializeToString())), WRITE_HEADERS
    )
    assert first.status == 204
    answer = gateway.post("/api/v1/write", v2_body(v2), V2_HEADERS)
    assert answer.status == 204
    assert read_samples(gateway, "up") == {
        tuple(UP): [(NOW_MS - 2, 0x3FF0000000000000), (NOW_MS - 1, STALE_NAN)]
    }
    head = gateway.app.state.gateway.head.tenants["default"]
    assert head.series_count == 1
    assert head.label_pairs(0) == UP


def test_label_messages_are_what_protobuf_encodes_for_1_0() -> None:
    for name, value in [("a", "b"), ("__name__", "x" * 300), ("", "v"), ("n", ""), ("é", "😀")]:
        expected = types_pb2.Label(name=name, value=value).SerializeToString()
        assert label_message(name.encode(), value.encode()) == expected
        if name:
            assert expected == label_bytes(name, value)


@pytest.mark.parametrize("kind", ["integer", "float", "custom buckets"])
def test_a_histogram_has_one_canonical_form_from_1_0_and_2_0(kind: str) -> None:
    v1_histogram, v2_histogram = full_histograms()[
        ["integer", "float", "custom buckets"].index(kind)
    ]
    v1_series = time_series(UP, [])
    v1_series.histograms.append(v1_histogram)
    from_v1 = decode_write_request(write_request(v1_series).SerializeToString())
    symbols = Symbols()
    v2 = symbols.request(v2_series(symbols, UP, histograms=[v2_histogram]))
    from_v2 = decode_v2_request(v2.SerializeToString())
    assert from_v1.histogram_payloads == from_v2.histogram_payloads
    assert from_v1.histogram_payloads == [v2_histogram.SerializeToString(deterministic=True)]
    back = write_v2_pb2.Histogram.FromString(from_v1.histogram_payloads[0])
    assert back == v2_histogram
    # Bit for bit, NaN payloads included: message equality compares floats by value.
    if kind == "float":
        assert np.array(back.positive_counts).view(np.uint64)[-1] == STALE_NAN
    for decoded in (from_v1, from_v2):
        assert decoded.histogram_entry.tolist() == [0]
        assert decoded.histogram_timestamps.tolist() == [v2_histogram.timestamp]
        assert decoded.histograms == 1


def test_histograms_are_stored_and_counted_as_written(gateway: InProcessApp) -> None:
    symbols = Symbols()
    hist = full_histograms()[0][1]
    request = symbols.request(
        v2_series(symbols, [("__name__", "latency")], histograms=[hist]),
        v2_series(symbols, UP, [(NOW_MS, 1)]),
    )
    answer = gateway.post("/api/v1/write", v2_body(request), V2_HEADERS)
    assert answer.status == 204, answer.text
    assert written(answer) == (1, 1, 0)


def created_timestamp_body(series: write_v2_pb2.TimeSeries, symbols: Symbols, ms: int) -> bytes:
    """A Request whose series carries created_timestamp (field 6), the older placement."""
    series_bytes = series.SerializeToString() + wire.varint_field(6, ms & ((1 << 64) - 1))
    head = write_v2_pb2.Request(symbols=symbols.table).SerializeToString()
    return head + wire.bytes_field(5, series_bytes)


def test_start_timestamps_are_decoded_from_both_placements(tmp_path: Path) -> None:
    symbols = Symbols()
    newer = v2_series(symbols, UP, [(NOW_MS, 1)])
    newer.samples[0].start_timestamp = NOW_MS - 5000
    decoded = decode_v2_request(symbols.request(newer).SerializeToString())
    assert decoded.sample_start_timestamps.tolist() == [NOW_MS - 5000]

    older = v2_series(symbols, UP, [(NOW_MS, 1), (NOW_MS + 1, 2)])
    older.samples[1].start_timestamp = 7  # the per-sample one wins where both are set
    hist = full_histograms()[0][1]
    histograms = v2_series(symbols, [("__name__", "latency")], histograms=[hist])
    raw = created_timestamp_body(older, symbols, NOW_MS - 9000)
    raw += wire.bytes_field(
        5, histograms.SerializeToString() + wire.varint_field(6, (-3) & ((1 << 64) - 1))
    )
    decoded = decode_v2_request(raw)
    assert decoded.sample_start_timestamps.tolist() == [NOW_MS - 9000, 7]
    assert decoded.histogram_start_timestamps.tolist() == [-3]
    payload = write_v2_pb2.Histogram.FromString(decoded.histogram_payloads[0])
    assert payload.start_timestamp == -3
    assert decoded.start_timestamps == 3

    registry = CollectorRegistry()
    with InProcessApp(create_app(GatewayConfig(data_dir=tmp_path), registry)) as app:
        answer = app.post(
            "/api/v1/write", v2_body(created_timestamp_body(older, symbols, 5)), V2_HEADERS
        )
    assert answer.status == 204, answer.text
    assert written(answer) == (2, 0, 0)
    counted = registry.get_sample_value(
        "strata_start_timestamps_received_total", {"tenant": "default"}
    )
    assert counted == 2


def test_created_timestamp_with_another_wire_type_is_400() -> None:
    symbols = Symbols()
    series = v2_series(symbols, UP, [(NOW_MS, 1)]).SerializeToString() + wire.bytes_field(6, b"x")
    raw = write_v2_pb2.Request(symbols=symbols.table).SerializeToString()
    with pytest.raises(InvalidRequest, match=r"created_timestamp \(6\) of TimeSeries"):
        decode_v2_request(raw + wire.bytes_field(5, series))


def test_exemplars_decode_with_their_labels_and_exact_bits() -> None:
    symbols = Symbols()
    exemplar = write_v2_pb2.Exemplar(
        labels_refs=symbols.refs([("trace_id", "abc"), ("span_id", "s1")]),
        value=as_float(0xFFF8DEADBEEF0001),
        timestamp=NOW_MS - 3,
    )
    bare = write_v2_pb2.Exemplar(value=2.5)
    request = symbols.request(
        v2_series(symbols, [("__name__", "other")], [(NOW_MS, 1)]),
        v2_series(symbols, UP, [(NOW_MS, 1)], exemplars=[exemplar, bare]),
    )
    decoded = decode_v2_request(request.SerializeToString())
    assert decoded.exemplar_entry.tolist() == [1, 1]
    assert decoded.exemplar_timestamps.tolist() == [NOW_MS - 3, 0]
    assert decoded.exemplar_values.view(np.uint64).tolist() == [
        0xFFF8DEADBEEF0001,
        0x4004000000000000,
    ]
    assert decoded.exemplar_labels == [[("trace_id", "abc"), ("span_id", "s1")], []]


def test_1_0_exemplars_decode_like_2_0_ones() -> None:
    series = time_series(UP, [(NOW_MS, 1)])
    series.exemplars.append(
        types_pb2.Exemplar(
            labels=[types_pb2.Label(name="trace_id", value="abc")],
            value=as_float(STALE_NAN),
            timestamp=NOW_MS - 3,
        )
    )
    decoded = decode_write_request(write_request(series).SerializeToString())
    assert decoded.exemplar_entry.tolist() == [0]
    assert decoded.exemplar_values.view(np.uint64).tolist() == [STALE_NAN]
    assert decoded.exemplar_labels == [[("trace_id", "abc")]]


def test_metadata_decodes_per_series_in_2_0_and_per_family_in_1_0() -> None:
    symbols = Symbols()
    counter = write_v2_pb2.Metadata(
        type=write_v2_pb2.Metadata.METRIC_TYPE_COUNTER,
        help_ref=symbols.ref("Requests served."),
        unit_ref=symbols.ref("requests"),
    )
    request = symbols.request(
        v2_series(
            symbols, [("job", "a"), ("__name__", "http_requests_total")], [(1, 1)], metadata=counter
        ),
        v2_series(symbols, UP, [(1, 1)], metadata=write_v2_pb2.Metadata()),  # all unset
        v2_series(
            symbols,
            [("__name__", "temp")],
            metadata=write_v2_pb2.Metadata(type="METRIC_TYPE_GAUGE"),
        ),
    )
    decoded = decode_v2_request(request.SerializeToString())
    assert decoded.metadata_entries == [
        MetricMetadata("http_requests_total", "counter", "requests", "Requests served."),
        MetricMetadata("temp", "gauge", "", ""),
    ]
    assert decoded.metadata_entry == [0, 2]
    v1 = write_request(metadata=["up"])
    v1.metadata[0].unit = "bytes"
    decoded = decode_write_request(v1.SerializeToString())
    assert decoded.metadata_entries == [MetricMetadata("up", "counter", "bytes", "help")]


def bad_requests() -> list[tuple[str, bytes, str]]:
    symbols = Symbols()
    good = v2_series(symbols, UP, [(NOW_MS, 1)])
    table = symbols.table
    odd = write_v2_pb2.TimeSeries(labels_refs=[1, 2, 3])
    past = write_v2_pb2.TimeSeries(labels_refs=[1, len(table)])
    unit = v2_series(symbols, UP, [(NOW_MS, 1)], metadata=write_v2_pb2.Metadata(unit_ref=500))
    help_ = v2_series(symbols, UP, [(NOW_MS, 1)], metadata=write_v2_pb2.Metadata(help_ref=501))
    exemplar = v2_series(
        symbols, UP, [(NOW_MS, 1)], exemplars=[write_v2_pb2.Exemplar(labels_refs=[1])]
    )
    value_as_varint = good.SerializeToString() + wire.bytes_field(
        2, wire.varint_field(1, 7) + wire.varint_field(2, NOW_MS)
    )
    head = write_v2_pb2.Request(symbols=table).SerializeToString()

    def raw(*series: write_v2_pb2.TimeSeries, symbols: Sequence[str] = table) -> bytes:
        return write_v2_pb2.Request(symbols=symbols, timeseries=series).SerializeToString()

    return [
        ("odd labels_refs", raw(odd), "timeseries[0].labels_refs has odd length 3"),
        (
            "label ref past the table",
            raw(good, past),
            f"timeseries[1].labels_refs ref {len(table)}",
        ),
        ("unit_ref past the table", raw(unit), "timeseries[0].metadata.unit_ref ref 500"),
        ("help_ref past the table", raw(help_), "timeseries[0].metadata.help_ref ref 501"),
        ("odd exemplar labels_refs", raw(exemplar), "timeseries[0].exemplars[0] has odd length 1"),
        ("symbols[0] not empty", raw(good, symbols=["up", *table]), "symbols[0] must be the empty"),
        ("no symbols", raw(odd, symbols=[]), "empty symbols table"),
        ("a 1.0 body", write_request(time_series(UP, [(1, 1)])).SerializeToString(), "field 1"),
        ("a sample value as a varint", head + wire.bytes_field(5, value_as_varint), "wire type 0"),
        ("not protobuf", b"\xff\xff\xff", f"invalid protobuf {V2_PROTO}"),
    ]


@pytest.mark.parametrize(("name", "raw", "reason"), bad_requests(), ids=lambda v: str(v)[:30])
def test_malformed_2_0_requests_are_400_naming_the_problem(
    gateway: InProcessApp, name: str, raw: bytes, reason: str
) -> None:
    with pytest.raises(InvalidRequest, match=None) as caught:
        decode_v2_request(raw)
    assert reason in caught.value.reason, name
    answer = gateway.post("/api/v1/write", v2_body(raw), V2_HEADERS)
    assert answer.status == 400
    assert reason in answer.text
    assert answer.text.count("\n") == 1
    assert written(answer) == (0, 0, 0)


def test_an_empty_2_0_request_is_204_with_nothing_written(gateway: InProcessApp) -> None:
    answer = gateway.post("/api/v1/write", v2_body(b""), V2_HEADERS)
    assert (answer.status, written(answer)) == (204, (0, 0, 0))


def test_1_0_answers_carry_no_written_headers(gateway: InProcessApp) -> None:
    ok = gateway.post("/api/v1/write", body_of(time_series(UP, [(NOW_MS, 1)])), WRITE_HEADERS)
    bad = gateway.post(
        "/api/v1/write", body_of(time_series([("a", "b")], [(NOW_MS, 1)])), WRITE_HEADERS
    )
    assert (ok.status, bad.status) == (204, 400)
    assert written(ok) is None
    assert written(bad) is None


def test_2_0_answers_count_what_was_stored_even_when_some_is_refused(
    gateway: InProcessApp,
) -> None:
    symbols = Symbols()
    exemplar = write_v2_pb2.Exemplar(value=1.0, timestamp=NOW_MS)
    request = symbols.request(
        v2_series(symbols, UP, [(NOW_MS, 1), (NOW_MS + 1, 2)], exemplars=[exemplar]),
        v2_series(symbols, [("job", "nameless")], [(NOW_MS, 1)], exemplars=[exemplar]),
        v2_series(symbols, UP, [(NOW_MS + 2_000_000_000, 3)]),
    )
    answer = gateway.post("/api/v1/write", v2_body(request), V2_HEADERS)
    assert answer.status == 400
    assert "missing_metric_name" in answer.text
    assert "too_far_in_future" in answer.text
    assert written(answer) == (2, 0, 1)
    resend = gateway.post("/api/v1/write", v2_body(request), V2_HEADERS)
    assert written(resend) == (2, 0, 1)  # already stored counts as written


def test_2_0_over_the_size_limit_is_413_with_nothing_written(tmp_path: Path) -> None:
    config = GatewayConfig(data_dir=tmp_path, max_decompressed_bytes=1000)
    with InProcessApp(create_app(config, CollectorRegistry())) as app:
        answer = app.post("/api/v1/write", b"\x80\x80\x80\x80\x10\x00", V2_HEADERS)
    assert (answer.status, written(answer)) == (413, (0, 0, 0))


@given(st.binary(max_size=160))
@settings(max_examples=400, deadline=None)
def test_any_bytes_decode_as_2_0_or_are_invalid(raw: bytes) -> None:
    try:
        request = decode_v2_request(raw)
    except InvalidRequest:
        return
    assert len(request.timestamps) == len(request.values) == len(request.sample_entry)
    assert len(request.series_keys) == len(request.series_labels)
    assert len(request.exemplar_labels) == request.exemplars
    assert all(0 <= e < len(request.series_keys) for e in request.exemplar_entry.tolist())


LABEL_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=6)
GENERATED_SERIES = st.lists(
    st.tuples(
        st.sampled_from(["gen_a", "gen_b", ""]),  # "" leaves the series without a name
        st.dictionaries(st.sampled_from(["job", "x", "é"]), LABEL_TEXT, max_size=2),
        st.lists(st.tuples(st.integers(0, 5), st.integers(0, (1 << 64) - 1)), max_size=4),
        st.lists(st.tuples(st.integers(0, 5), st.floats(allow_nan=True)), max_size=2),
    ),
    max_size=5,
)


def test_generated_2_0_requests_store_exactly_what_their_headers_claim(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    stored: dict[tuple[tuple[str, str], ...], dict[int, int]] = {}
    base = [NOW_MS - 10_000]

    def counted(name: str) -> float:
        return registry.get_sample_value(name, {"tenant": "default"}) or 0.0

    with InProcessApp(create_app(GatewayConfig(data_dir=tmp_path), registry)) as app:

        @given(GENERATED_SERIES)
        @settings(max_examples=60, deadline=None)
        def check(generated: list[tuple[str, dict[str, str], list[Any], list[Any]]]) -> None:
            base[0] += 10  # each request its own timestamps: no conflict with earlier ones
            symbols = Symbols()
            series = []
            for metric, labels, samples, exemplars in generated:
                pairs = sorted(labels.items()) + ([("__name__", metric)] if metric else [])
                series.append(
                    v2_series(
                        symbols,
                        pairs,
                        [(base[0] + t, bits) for t, bits in samples],
                        exemplars=[
                            write_v2_pb2.Exemplar(value=v, timestamp=base[0] + t)
                            for t, v in exemplars
                        ],
                    )
                )
            before = (
                counted("strata_samples_received_total"),
                counted("strata_exemplars_received_total"),
            )
            answer = app.post("/api/v1/write", v2_body(symbols.request(*series)), V2_HEADERS)
            assert answer.status in (204, 400), answer.text
            claimed = written(answer)
            assert claimed is not None
            sent = sum(len(s) for _, _, s, _ in generated), sum(len(e) for *_, e in generated)
            after = (
                counted("strata_samples_received_total"),
                counted("strata_exemplars_received_total"),
            )
            assert (after[0] - before[0], claimed[1], after[1] - before[1]) == claimed
            if answer.status == 204:
                assert (claimed[0], claimed[2]) == sent
            else:
                assert claimed[0] <= sent[0]
                assert claimed[2] <= sent[1]
            for metric, labels, samples, _ in generated:
                present = {k: v for k, v in labels.items() if v}
                if not metric:
                    continue  # refused: no metric name; the rest is stored even on a 400
                key = tuple(
                    sorted([*present.items(), ("__name__", metric)], key=lambda p: p[0].encode())
                )
                for t, bits in samples:
                    stored.setdefault(key, {}).setdefault(base[0] + t, bits)

        check()
        for metric in ("gen_a", "gen_b"):
            read = read_samples(app, metric)
            expected = {
                k: sorted(v.items()) for k, v in stored.items() if dict(k)["__name__"] == metric
            }
            assert {k: v for k, v in read.items() if k in expected} == expected
