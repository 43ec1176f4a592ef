"""Native histograms in the gateway's /metrics (issue 8): accepted ones counted in
`strata_histograms_received_total{tenant}` (floats alone in strata_samples_received_total),
refused ones in `strata_samples_rejected_total{tenant,reason}` under their reason, for real
1.0 and 2.0 requests through the app."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.config import GatewayConfig
from proto import types_pb2
from tests.gateway.test_histogram_roundtrip import (
    GAUGE,
    INT,
    NOW_MS,
    UP,
    V1_HEADERS,
    V2_HEADERS,
    as_v2,
    ts_of,
    v1_body,
    v1_series,
    v2_body,
    written,
)
from tests.querier.histogram_reads import float_gauge, int_counter
from tests.support.asgi import InProcessApp

TENANT = "team-h"
HEADERS_V1 = {**V1_HEADERS, "X-Scope-OrgID": TENANT}
HEADERS_V2 = {**V2_HEADERS, "X-Scope-OrgID": TENANT}
NAMELESS = (("job", "a"),)
# Far enough ahead of any max_future_ms default to be refused.
FUTURE_MS = NOW_MS + 365 * 86_400_000


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def app(tmp_path: Path, registry: CollectorRegistry) -> Iterator[InProcessApp]:
    with InProcessApp(create_app(GatewayConfig(data_dir=tmp_path), registry)) as started:
        yield started


def counts(registry: CollectorRegistry) -> dict[str, float]:
    """Received floats and histograms, and refused ones by reason, for the tenant."""
    out = {
        "samples": registry.get_sample_value("strata_samples_received_total", {"tenant": TENANT}),
        "histograms": registry.get_sample_value(
            "strata_histograms_received_total", {"tenant": TENANT}
        ),
    }
    for metric in registry.collect():
        if metric.name != "strata_samples_rejected":
            continue
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["tenant"] == TENANT:
                out[sample.labels["reason"]] = sample.value
    return {name: value for name, value in out.items() if value}


def invalid(ts: int) -> types_pb2.Histogram:
    """A histogram whose spans cover three buckets and which carries two."""
    bad = int_counter(1, ts)
    bad.positive_spans[0].length = 3
    return bad


def test_1_0_histograms_are_counted_apart_from_floats(
    app: InProcessApp, registry: CollectorRegistry
) -> None:
    body = v1_body(
        [
            v1_series(INT, histograms=[int_counter(i, ts_of(i)) for i in range(10)]),
            v1_series(UP, [(ts_of(i), 1.0) for i in range(4)]),
        ]
    )
    assert app.post("/api/v1/write", body, HEADERS_V1).status == 204
    assert counts(registry) == {"samples": 4, "histograms": 10}
    # A resend is written again, as for floats: counted again.
    assert app.post("/api/v1/write", body, HEADERS_V1).status == 204
    assert counts(registry) == {"samples": 8, "histograms": 20}


def test_2_0_histograms_counted_match_the_histograms_written_header(
    app: InProcessApp, registry: CollectorRegistry
) -> None:
    gauges = [float_gauge(i, ts_of(i)) for i in range(7)]
    counters = [as_v2(int_counter(i, ts_of(i))) for i in range(5)]
    answer = app.post("/api/v1/write", v2_body([(GAUGE, gauges), (INT, counters)]), HEADERS_V2)
    assert answer.status == 204, answer.text
    assert written(answer) == (0, 12, 0)
    assert counts(registry) == {"histograms": 12}


def test_1_0_histograms_refused_are_counted_by_reason(
    app: InProcessApp, registry: CollectorRegistry
) -> None:
    first = v1_body([v1_series(INT, histograms=[int_counter(i, ts_of(i)) for i in range(3)])])
    assert app.post("/api/v1/write", first, HEADERS_V1).status == 204
    other_at_1 = int_counter(7, ts_of(1))
    body = v1_body(
        [
            v1_series(
                INT,
                histograms=[
                    int_counter(2, ts_of(2)),  # a resend: written
                    other_at_1,  # another histogram where one is stored
                    invalid(ts_of(3)),
                    int_counter(4, FUTURE_MS),
                    int_counter(5, ts_of(5)),  # new: written
                ],
            ),
            v1_series(NAMELESS, histograms=[int_counter(0, ts_of(0)), int_counter(1, ts_of(1))]),
        ]
    )
    answer = app.post("/api/v1/write", body, HEADERS_V1)
    assert answer.status == 400
    assert "duplicate_timestamp" in answer.text
    assert counts(registry) == {
        "histograms": 3 + 2,
        "duplicate_timestamp": 1,
        "invalid_histogram": 1,
        "too_far_in_future": 1,
        "missing_metric_name": 2,
    }


def test_2_0_histograms_refused_are_counted_by_reason(
    app: InProcessApp, registry: CollectorRegistry
) -> None:
    histograms = [
        as_v2(int_counter(0, ts_of(0))),
        as_v2(invalid(ts_of(1))),
        as_v2(invalid(ts_of(2))),
        as_v2(int_counter(3, FUTURE_MS)),
    ]
    answer = app.post("/api/v1/write", v2_body([(INT, histograms)]), HEADERS_V2)
    assert answer.status == 400
    assert written(answer) == (0, 1, 0)
    assert counts(registry) == {
        "histograms": 1,
        "invalid_histogram": 2,
        "too_far_in_future": 1,
    }
