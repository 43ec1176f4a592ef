"""Metadata and exemplars: kept per tenant, bounded, across restarts, and served by
/api/v1/metadata and /api/v1/query_exemplars in Prometheus's JSON shape (issue 8)."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import snappy
from prometheus_client import CollectorRegistry

from blocks.objstore.local import LocalStore
from gateway.app import AUTH_ROUTES, create_app
from gateway.auth import Access, token_sha256
from gateway.config import GatewayConfig
from gateway.decode import MetricMetadata
from gateway.exemplar_store import EXEMPLARS_DIRNAME
from gateway.metadata_api import EXEMPLARS_PATH, METADATA_PATH, format_value
from gateway.metadata_store import (
    METADATA_DIRNAME,
    MetadataRecord,
    MetadataStore,
    bucket_key,
    encode_document,
    is_counter,
    read_bucket_metadata,
)
from proto import types_pb2, write_v2_pb2
from tests.gateway.test_remote_write_v2 import V2_HEADERS, Symbols, v2_body, v2_series, written
from tests.gateway.writes import (
    STALE_NAN,
    WRITE_HEADERS,
    as_float,
    body_of,
    time_series,
    write_request,
)
from tests.support.asgi import Answer, InProcessApp

NOW_MS = int(time.time() * 1000)
ONE = 0x3FF0000000000000
COUNTER = write_v2_pb2.Metadata.METRIC_TYPE_COUNTER
GAUGE = write_v2_pb2.Metadata.METRIC_TYPE_GAUGE
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def open_app(
    data_dir: Path, registry: CollectorRegistry | None = None, **settings: Any
) -> InProcessApp:
    config = GatewayConfig(data_dir=data_dir, **settings)
    return InProcessApp(create_app(config, registry or CollectorRegistry()))


@pytest.fixture
def app(tmp_path: Path) -> Iterator[InProcessApp]:
    with open_app(tmp_path) as started:
        yield started


def get(app: InProcessApp, url: str, headers: dict[str, str] | None = None) -> Answer:
    """GET through httpx (query string included) on the app's own loop."""

    async def call() -> Answer:
        transport = httpx.ASGITransport(app=app.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://strata") as client:
            answer = await client.get(url, headers=headers)
        return Answer(answer.status_code, dict(answer.headers), answer.content)

    return app.run(call())


def body_json(answer: Answer) -> Any:
    assert answer.headers["content-type"] == "application/json", answer.text
    return json.loads(answer.body)


def write_v2(app: InProcessApp, *series: tuple[Any, ...], **headers: str) -> Answer:
    """Post a 2.0 request; each series as (labels, samples, exemplars, metadata)."""
    symbols = Symbols()
    built = []
    for labels, samples, exemplars, metadata in series:
        exemplar_messages = [
            write_v2_pb2.Exemplar(labels_refs=symbols.refs(ex_labels), value=value, timestamp=ts)
            for ex_labels, value, ts in exemplars
        ]
        meta = None
        if metadata is not None:
            kind, unit, help_text = metadata
            meta = write_v2_pb2.Metadata(
                type=kind, unit_ref=symbols.ref(unit), help_ref=symbols.ref(help_text)
            )
        built.append(
            v2_series(symbols, labels, samples, exemplars=exemplar_messages, metadata=meta)
        )
    return app.post("/api/v1/write", v2_body(symbols.request(*built)), {**V2_HEADERS, **headers})


def exemplar_series(app: InProcessApp, query: str, **params: str) -> Any:
    answer = get(app, EXEMPLARS_PATH + "?" + urlencode({"query": query, **params}))
    assert answer.status == 200, answer.text
    return body_json(answer)


HTTP = [("__name__", "http_requests_total"), ("job", "api"), ("method", "GET")]
HTTP_POST = [("__name__", "http_requests_total"), ("job", "api"), ("method", "POST")]
TEMP = [("__name__", "temperature"), ("job", "sensor")]


def seed(app: InProcessApp) -> None:
    """Metadata by both protocols and exemplars on three series."""
    v1 = write_request(metadata=["up"])
    assert (
        app.post("/api/v1/write", snappy.compress(v1.SerializeToString()), WRITE_HEADERS).status
        == 204
    )
    answer = write_v2(
        app,
        (
            HTTP,
            [(NOW_MS - 2000, ONE)],
            [([("trace_id", "t1")], 6.0, NOW_MS - 2000)],
            (COUNTER, "requests", "Requests served."),
        ),
        (
            HTTP_POST,
            [(NOW_MS - 1000, ONE)],
            [([("trace_id", "t2"), ("span_id", "s")], 0.25, NOW_MS - 1500)],
            (COUNTER, "requests", "Requests served."),
        ),
        (
            TEMP,
            [(NOW_MS - 1000, ONE)],
            [([], 21.5, NOW_MS - 500)],
            (GAUGE, "celsius", "Temperature."),
        ),
    )
    assert answer.status == 204, answer.text
    assert written(answer) == (3, 0, 3)


def test_metadata_answers_in_prometheus_shape(app: InProcessApp) -> None:
    seed(app)
    answer = get(app, METADATA_PATH)
    assert answer.status == 200
    assert body_json(answer) == {
        "status": "success",
        "data": {
            "http_requests_total": [
                {"type": "counter", "help": "Requests served.", "unit": "requests"}
            ],
            "temperature": [{"type": "gauge", "help": "Temperature.", "unit": "celsius"}],
            "up": [{"type": "counter", "help": "help", "unit": ""}],
        },
    }
    one = body_json(get(app, METADATA_PATH + "?metric=temperature"))["data"]
    assert list(one) == ["temperature"]
    assert list(body_json(get(app, METADATA_PATH + "?limit=2"))["data"]) == [
        "http_requests_total",
        "temperature",
    ]
    per_metric = body_json(get(app, METADATA_PATH + "?limit_per_metric=1"))["data"]
    assert all(len(entries) == 1 for entries in per_metric.values())
    assert body_json(get(app, METADATA_PATH + "?metric=nope")) == {
        "status": "success",
        "data": {},
    }


def test_bad_metadata_parameters_answer_a_prometheus_error(app: InProcessApp) -> None:
    answer = get(app, METADATA_PATH + "?limit=ten")
    assert answer.status == 400
    error = body_json(answer)
    assert error["status"] == "error"
    assert error["errorType"] == "bad_data"
    assert "limit" in error["error"]


def test_a_changed_type_replaces_the_old_one_and_the_compactor_can_ask(app: InProcessApp) -> None:
    labels = [("__name__", "jobs")]
    assert write_v2(app, (labels, [(NOW_MS, ONE)], [], (GAUGE, "", "Jobs."))).status == 204
    store = app.app.state.gateway.ingester.metadata
    assert not store.is_counter("default", "jobs")
    assert write_v2(app, (labels, [(NOW_MS + 1, ONE)], [], (COUNTER, "", "Jobs."))).status == 204
    assert store.is_counter("default", "jobs")
    assert store.metric_type("default", "jobs") == "counter"
    assert not store.is_counter("default", "never_described")
    assert not store.is_counter("other-tenant", "jobs")


def test_query_exemplars_answers_in_prometheus_shape(app: InProcessApp) -> None:
    seed(app)
    found = exemplar_series(app, 'http_requests_total{job="api"}')
    assert found == {
        "status": "success",
        "data": [
            {
                "seriesLabels": dict(HTTP),
                "exemplars": [
                    {
                        "labels": {"trace_id": "t1"},
                        "value": "6",
                        "timestamp": (NOW_MS - 2000) / 1000,
                    }
                ],
            },
            {
                "seriesLabels": dict(HTTP_POST),
                "exemplars": [
                    {
                        "labels": {"span_id": "s", "trace_id": "t2"},
                        "value": "0.25",
                        "timestamp": (NOW_MS - 1500) / 1000,
                    }
                ],
            },
        ],
    }
    posted = app.post(EXEMPLARS_PATH, urlencode({"query": "{job='sensor'}"}).encode(), FORM)
    assert body_json(posted)["data"] == [
        {
            "seriesLabels": dict(TEMP),
            "exemplars": [{"labels": {}, "value": "21.5", "timestamp": (NOW_MS - 500) / 1000}],
        }
    ]


@pytest.mark.parametrize(
    ("query", "methods"),
    [
        ('{__name__="http_requests_total"}', {"GET", "POST"}),
        ('http_requests_total{method!="GET"}', {"POST"}),
        ('{job=~"api|sensor", method=~"G.*"}', {"GET"}),
        ('{job!~"sensor", job=~".+"}', {"GET", "POST"}),
        ("{job=`sensor`}", {""}),
    ],
)
def test_exemplar_selectors_match_like_prometheus(
    app: InProcessApp, query: str, methods: set[str]
) -> None:
    seed(app)
    data = exemplar_series(app, query)["data"]
    assert {series["seriesLabels"].get("method", "") for series in data} == methods


def test_exemplars_are_chosen_by_time(app: InProcessApp) -> None:
    seed(app)
    since = str((NOW_MS - 1600) / 1000)
    recent = exemplar_series(app, '{job=~".+"}', start=since)["data"]
    assert {s["seriesLabels"]["__name__"] + s["seriesLabels"]["job"] for s in recent} == {
        "http_requests_totalapi",
        "temperaturesensor",
    }
    until = datetime.fromtimestamp((NOW_MS - 1800) / 1000, tz=UTC).isoformat()
    early = exemplar_series(app, '{job=~".+"}', end=until)["data"]
    assert [s["seriesLabels"]["method"] for s in early] == ["GET"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "series selector is needed"),
        ({"query": "up{"}, "invalid series selector"),
        ({"query": '{job=""}'}, "at least one matcher"),
        ({"query": 'up{job=~"("}'}, "invalid regex"),
        ({"query": "up", "start": "10", "end": "5"}, "end timestamp must not be before"),
        ({"query": "up", "start": "yesterday"}, "cannot parse"),
    ],
)
def test_bad_exemplar_queries_answer_a_prometheus_error(
    app: InProcessApp, params: dict[str, str], message: str
) -> None:
    answer = get(app, EXEMPLARS_PATH + "?" + urlencode(params))
    assert answer.status == 400
    error = body_json(answer)
    assert (error["status"], error["errorType"]) == ("error", "bad_data")
    assert message in error["error"]


def test_tenants_see_only_their_own(app: InProcessApp) -> None:
    exemplar = [([("trace_id", "a")], 1.0, NOW_MS)]
    assert (
        write_v2(
            app,
            (HTTP, [(NOW_MS, ONE)], exemplar, (COUNTER, "", "A.")),
            **{"X-Scope-OrgID": "team-a"},
        ).status
        == 204
    )
    assert (
        write_v2(
            app, (TEMP, [(NOW_MS, ONE)], exemplar, (GAUGE, "", "B.")), **{"X-Scope-OrgID": "team-b"}
        ).status
        == 204
    )
    a_metadata = body_json(get(app, METADATA_PATH, {"X-Scope-OrgID": "team-a"}))["data"]
    assert list(a_metadata) == ["http_requests_total"]
    a_exemplars = get(
        app, EXEMPLARS_PATH + "?query=%7Bjob%3D~%22.%2B%22%7D", {"X-Scope-OrgID": "team-a"}
    )
    assert [s["seriesLabels"]["job"] for s in body_json(a_exemplars)["data"]] == ["api"]
    assert body_json(get(app, METADATA_PATH))["data"] == {}


def test_metadata_and_exemplars_survive_a_restart(tmp_path: Path) -> None:
    with open_app(tmp_path) as first:
        seed(first)
        metadata = body_json(get(first, METADATA_PATH))
        exemplars = exemplar_series(first, '{job=~".+"}')
    assert (tmp_path / METADATA_DIRNAME / "default.json").exists()
    with open_app(tmp_path) as second:
        assert body_json(get(second, METADATA_PATH)) == metadata
        assert exemplar_series(second, '{job=~".+"}') == exemplars
        # A resend after the restart finds them kept: written, not stored twice.
        exemplar = [([("trace_id", "t1")], 6.0, NOW_MS - 2000)]
        again = write_v2(second, (HTTP, [(NOW_MS - 2000, ONE)], exemplar, None))
        assert written(again) == (1, 0, 1)
        assert exemplar_series(second, '{job=~".+"}') == exemplars


def test_a_torn_exemplar_log_tail_is_cut_and_the_rest_kept(tmp_path: Path) -> None:
    with open_app(tmp_path) as first:
        seed(first)
    log_path = tmp_path / EXEMPLARS_DIRNAME / "default.log"
    whole = log_path.read_bytes()
    assert whole.count(b"\n") == 3
    with open(log_path, "ab") as log_file:
        log_file.write(b'0badc0de {"s":[["__name__","torn')  # a crash mid-append
    registry = CollectorRegistry()
    with open_app(tmp_path, registry) as second:
        assert len(exemplar_series(second, '{job=~".+"}')["data"]) == 3
        assert log_path.read_bytes() == whole
        exemplar = [([("trace_id", "t9")], 9.0, NOW_MS)]
        assert write_v2(second, (TEMP, [(NOW_MS, ONE)], exemplar, None)).status == 204
    assert log_path.read_bytes().count(b"\n") == 4


def test_exemplars_past_the_tenant_bound_push_out_the_oldest(tmp_path: Path) -> None:
    with open_app(tmp_path, max_exemplars_per_tenant=3) as app:
        for i in range(8):
            exemplar = [([("trace_id", f"t{i}")], float(i), NOW_MS - 8000 + i)]
            answer = write_v2(app, (HTTP, [(NOW_MS - 8000 + i, ONE)], exemplar, None))
            assert written(answer) == (1, 0, 1)
        data = exemplar_series(app, "http_requests_total")["data"]
        assert [e["labels"]["trace_id"] for e in data[0]["exemplars"]] == ["t5", "t6", "t7"]
    lines = (tmp_path / EXEMPLARS_DIRNAME / "default.log").read_bytes().count(b"\n")
    assert lines <= 2 * 3
    with open_app(tmp_path, max_exemplars_per_tenant=3) as again:
        data = exemplar_series(again, "http_requests_total")["data"]
        assert [e["labels"]["trace_id"] for e in data[0]["exemplars"]] == ["t5", "t6", "t7"]


def test_exemplars_are_refused_when_too_old_or_badly_labelled(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with open_app(tmp_path, registry, exemplar_retention_s=3600.0) as app:
        answer = write_v2(
            app,
            (
                HTTP,
                [(NOW_MS, ONE)],
                [
                    ([("trace_id", "old")], 1.0, NOW_MS - 2 * 3_600_000),
                    ([("trace_id", "x" * 130)], 1.0, NOW_MS),
                    ([("", "x")], 1.0, NOW_MS),
                    ([("trace_id", "ok")], 1.0, NOW_MS),
                ],
                None,
            ),
        )
    assert answer.status == 400
    assert (
        "3 exemplars (1 exemplar_labels_too_long, 1 exemplar_too_old, 1 invalid_exemplar_labels)"
        in answer.text
    )
    assert written(answer) == (1, 0, 1)
    value = registry.get_sample_value
    assert (
        value(
            "strata_exemplars_rejected_total", {"tenant": "default", "reason": "exemplar_too_old"}
        )
        == 1
    )
    assert value("strata_exemplars_received_total", {"tenant": "default"}) == 1
    assert value("strata_exemplars_stored_total", {"tenant": "default"}) == 1


def test_1_0_exemplars_are_kept_and_served_too(app: InProcessApp) -> None:
    series = time_series(HTTP, [(NOW_MS, ONE)])
    series.exemplars.append(
        types_pb2.Exemplar(
            labels=[types_pb2.Label(name="trace_id", value="v1")],
            value=float("nan"),
            timestamp=NOW_MS,
        )
    )
    answer = app.post("/api/v1/write", body_of(series), WRITE_HEADERS)
    assert answer.status == 204
    assert written(answer) is None
    data = exemplar_series(app, "http_requests_total")["data"]
    assert data[0]["exemplars"] == [
        {"labels": {"trace_id": "v1"}, "value": "NaN", "timestamp": NOW_MS / 1000}
    ]
    kept = app.app.state.gateway.ingester.exemplars.tenants["default"].ring
    assert [e.value_bits for e in kept] == [0x7FF8000000000000]


def test_an_exemplar_log_that_cannot_be_written_is_503_and_the_resend_repairs_it(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / EXEMPLARS_DIRNAME
    blocker.write_bytes(b"not a directory")
    exemplar = [([("trace_id", "t1")], 1.0, NOW_MS)]
    with open_app(tmp_path) as app:
        failed = write_v2(app, (HTTP, [(NOW_MS, ONE)], exemplar, None))
        assert failed.status == 503
        assert written(failed) == (0, 0, 0)
        blocker.unlink()
        again = write_v2(app, (HTTP, [(NOW_MS, ONE)], exemplar, None))
        assert (again.status, written(again)) == (204, (1, 0, 1))
    assert (blocker / "default.log").read_bytes().count(b"\n") == 1


def test_metadata_past_the_tenant_bound_is_refused_and_counted(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    with open_app(tmp_path, registry, max_metadata_per_tenant=2) as app:
        v1 = write_request(metadata=["a", "b", "c", ""])
        answer = app.post("/api/v1/write", snappy.compress(v1.SerializeToString()), WRITE_HEADERS)
        assert answer.status == 204
        assert list(body_json(get(app, METADATA_PATH))["data"]) == ["a", "b"]
    value = registry.get_sample_value
    labels = {"tenant": "default"}
    assert value("strata_metadata_received_total", labels) == 4
    assert value("strata_metadata_stored_total", labels) == 2
    assert (
        value("strata_metadata_refused_total", {**labels, "reason": "max_metadata_per_tenant"}) == 1
    )
    assert value("strata_metadata_refused_total", {**labels, "reason": "missing_metric_name"}) == 1


def test_the_read_endpoints_need_read_permission(tmp_path: Path) -> None:
    assert AUTH_ROUTES[METADATA_PATH] is Access.READ
    assert AUTH_ROUTES[EXEMPLARS_PATH] is Access.READ
    auth = tmp_path / "auth.json"
    auth.write_text(
        json.dumps(
            {
                "tokens": [
                    {"name": "w", "sha256": token_sha256("tok-w"), "write": ["team-a"]},
                    {"name": "r", "sha256": token_sha256("tok-r"), "read": ["team-a"]},
                ]
            }
        )
    )
    with open_app(tmp_path / "data", auth_file=str(auth)) as app:
        for path in (METADATA_PATH, EXEMPLARS_PATH + "?query=up"):
            writer = get(app, path, {"Authorization": "Bearer tok-w"})
            reader = get(app, path, {"Authorization": "Bearer tok-r"})
            other = get(app, path, {"Authorization": "Bearer tok-r", "X-Scope-OrgID": "team-b"})
            assert (writer.status, reader.status, other.status) == (403, 200, 403)


@pytest.mark.parametrize(
    ("bits", "shown"),
    [
        (0x4018000000000000, "6"),
        (0x3DDB7CDFD9D7BDBB, "0.0000000001"),
        (0x4202A05F20000000, "10000000000"),
        (0x7FF0000000000000, "+Inf"),
        (0xFFF0000000000000, "-Inf"),
        (STALE_NAN, "NaN"),
        (0x8000000000000000, "-0"),
    ],
)
def test_values_are_written_as_prometheus_writes_them(bits: int, shown: str) -> None:
    assert format_value(as_float(bits)) == shown


def test_exemplars_of_a_request_whose_wal_write_failed_are_logged_by_the_resend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if full.is_set():
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("gateway.wal.os.fsync", fsync)
    exemplar = [([("trace_id", "t1")], 1.0, NOW_MS)]
    with open_app(tmp_path) as app:
        full.set()
        failed = write_v2(app, (HTTP, [(NOW_MS, ONE)], exemplar, None))
        assert (failed.status, written(failed)) == (503, (0, 0, 0))
        full.clear()
        resent = write_v2(app, (HTTP, [(NOW_MS, ONE)], exemplar, None))
        assert (resent.status, written(resent)) == (204, (1, 0, 1))
    with open_app(tmp_path) as restarted:
        data = exemplar_series(restarted, "http_requests_total")["data"]
        assert [e["labels"] for e in data[0]["exemplars"]] == [{"trace_id": "t1"}]


def test_metadata_is_copied_to_the_bucket_merged_with_other_gateways(tmp_path: Path) -> None:
    other = {"from_other_gateway": MetadataRecord("counter", "", "Other.", NOW_MS - 5000)}
    with LocalStore(tmp_path / "bucket") as bucket:
        bucket.put(bucket_key("default"), encode_document("default", other.items()))
    with open_app(tmp_path) as app:
        labels = [("__name__", "jobs")]
        assert write_v2(app, (labels, [(NOW_MS, ONE)], [], (GAUGE, "", "Jobs."))).status == 204
        # The first copy of a tenant goes at once, in the background.
        deadline = time.monotonic() + 10
        with LocalStore(tmp_path / "bucket") as bucket:
            while "jobs" not in read_bucket_metadata(bucket, "default"):
                assert time.monotonic() < deadline, "metadata never reached the bucket"
                app.run(asyncio.sleep(0.01))
        assert (
            write_v2(app, (labels, [(NOW_MS + 1, ONE)], [], (COUNTER, "", "Jobs."))).status == 204
        )
    # Shutdown copies what changed since.
    with LocalStore(tmp_path / "bucket") as bucket:
        records = read_bucket_metadata(bucket, "default")
    assert set(records) == {"from_other_gateway", "jobs"}
    assert is_counter(records, "from_other_gateway")
    assert is_counter(records, "jobs")
    assert not is_counter(records, "never_described")


def test_bucket_copies_of_two_gateways_keep_both_and_the_newest(tmp_path: Path) -> None:
    first = MetadataStore(None, max_metrics_per_tenant=10)
    second = MetadataStore(None, max_metrics_per_tenant=10)
    first.update(
        "t", [MetricMetadata("a", "gauge", "", "A."), MetricMetadata("b", "gauge", "", "")], 1
    )
    second.update(
        "t", [MetricMetadata("b", "counter", "", "B."), MetricMetadata("c", "info", "", "")], 2
    )
    with LocalStore(tmp_path) as bucket:
        first.copy_to_bucket(bucket, "t")
        second.copy_to_bucket(bucket, "t")
        first.copy_to_bucket(bucket, "t")  # older news about b does not win
        records = read_bucket_metadata(bucket, "t")
        bucket.put(bucket_key("u"), b"{not json")
        assert read_bucket_metadata(bucket, "u") == {}
    assert {name: r.type for name, r in records.items()} == {
        "a": "gauge",
        "b": "counter",
        "c": "info",
    }
