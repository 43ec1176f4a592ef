"""A Prometheus that has no data of its own answers PromQL from Strata exactly as the
Prometheus that scraped the data answers from its own TSDB.

Prometheus A scrapes itself and Strata (counters, gauges, classic histograms) and
remote-writes everything to Strata. Strata is flushed, so the data is in blocks in the
bucket. Prometheus B scrapes nothing and reads through `remote_read` (read_recent). Both
answer a fixed set of instant and range queries at fixed past times; the answers must be
identical, value strings included.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from blocks.bucket_index import load_bucket_index
from blocks.objstore.local import LocalStore
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    PrometheusServer,
    StrataServer,
    metric_value,
    parse_metrics_text,
    prometheus_config,
)

pytestmark = pytest.mark.e2e

EXTERNAL_LABELS = {"cluster": "e2e", "replica": "a"}
SCRAPE_S = 1.0
COLLECT_S = 40.0
CATCH_UP_TIMEOUT_S = 60.0
WINDOW = "20s"
HIGHEST_SENT = "prometheus_remote_storage_queue_highest_sent_timestamp_seconds"
INSTANT_QUERIES = (
    "up",
    "prometheus_http_requests_total",
    f"rate(prometheus_http_requests_total[{WINDOW}])",
    f"increase(strata_write_requests_total[{WINDOW}])",
    f"sum by (job) (rate(process_cpu_seconds_total[{WINDOW}]))",
    f"avg_over_time(go_goroutines[{WINDOW}])",
    "histogram_quantile(0.9, sum by (le) "
    f"(rate(prometheus_http_request_duration_seconds_bucket[{WINDOW}])))",
    "count(up)",
    'count({__name__=~"go_gc_.*", job=~"prom.*"})',
    '{__name__=~"go_memstats_(alloc|heap_inuse)_bytes", job!="nothing"}',
    'go_goroutines{job!~"strata|nothing"}',
    "max_over_time(process_resident_memory_bytes[30s])",
)
RANGE_QUERIES = (
    f"rate(prometheus_http_requests_total[{WINDOW}])",
    'sum by (job) ({__name__=~"go_gc_duration_seconds_count"})',
    f"histogram_quantile(0.5, rate(prometheus_http_request_duration_seconds_bucket[{WINDOW}]))",
    "count by (job) (up)",
)


def read_config(strata: StrataServer) -> dict[str, Any]:
    """Prometheus B: no scraping, everything through remote_read."""
    config = prometheus_config({}, None)
    config["global"]["external_labels"] = EXTERNAL_LABELS
    config["remote_read"] = [{"url": f"{strata.url}/api/v1/read", "read_recent": True}]
    return config


def query_api(server: PrometheusServer, path: str, params: dict[str, Any]) -> Any:
    answer = server.client.get(path, params=params)
    body = answer.json()
    if answer.status_code != 200 or body.get("status") != "success":
        pytest.fail(f"{path} {params} failed on {server.url}: {answer.status_code} {answer.text}")
    return body["data"]


def canonical(data: Any) -> list[Any]:
    """A query result in an order that does not depend on series order."""
    result = data["result"]
    if isinstance(result, list):
        return sorted(result, key=lambda s: sorted(s.get("metric", {}).items()))
    return [result]


@pytest.fixture
def strata_args() -> tuple[str, ...]:
    # Cut due windows every second, so blocks appear while the test runs.
    return ("--cut-interval-s", "1", "--cut-grace-ms", "0")


def started_prometheus(
    request: pytest.FixtureRequest,
    base_dir: Path,
    config_of: Callable[[PrometheusServer], dict[str, Any]],
) -> Iterator[PrometheusServer]:
    """A Prometheus started with the config made for it (it may scrape itself)."""
    base_dir.mkdir()
    server = PrometheusServer(base_dir)
    attach_log(request.node, base_dir.name, server.log_path)
    try:
        server.start(config_of(server))
        yield server
    finally:
        server.close()


@pytest.fixture
def prometheus_a(
    request: pytest.FixtureRequest, tmp_path: Path, strata: StrataServer
) -> Iterator[PrometheusServer]:
    """Scrapes itself and Strata, remote-writes everything to Strata."""

    def config_of(server: PrometheusServer) -> dict[str, Any]:
        jobs = {"prometheus": [server.address], "strata": [strata.url.removeprefix("http://")]}
        config = prometheus_config(jobs, strata.write_url, scrape_interval=f"{SCRAPE_S:g}s")
        config["global"]["external_labels"] = EXTERNAL_LABELS
        return config

    yield from started_prometheus(request, tmp_path / "prom-a", config_of)


@pytest.fixture
def prometheus_b(
    request: pytest.FixtureRequest, tmp_path: Path, strata: StrataServer
) -> Iterator[PrometheusServer]:
    """Scrapes nothing, reads everything through remote_read."""
    yield from started_prometheus(request, tmp_path / "prom-b", lambda _: read_config(strata))


def wait_until_sent(prometheus: PrometheusServer, at_s: float) -> None:
    """Until A's remote-write queue has sent every sample up to `at_s`."""
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    sent = 0.0
    while time.monotonic() < deadline:
        sent = metric_value(prometheus.own_metrics(), HIGHEST_SENT)
        if sent >= at_s + 2 * SCRAPE_S:
            return
        time.sleep(0.5)
    pytest.fail(f"prometheus A sent samples up to {sent}, not past {at_s}")


def test_promql_over_remote_read_equals_the_scraping_prometheus(
    tmp_path: Path,
    strata: StrataServer,
    prometheus_a: PrometheusServer,
    prometheus_b: PrometheusServer,
) -> None:
    started_s = time.time()
    time.sleep(COLLECT_S)
    end_s = float(int(time.time()) - 3)
    wait_until_sent(prometheus_a, end_s)

    flushed = httpx.post(f"{strata.url}/api/v1/admin/flush", timeout=60)
    assert flushed.status_code == 200, flushed.text
    assert flushed.json()["uploadedBlocks"] >= 1
    with LocalStore(tmp_path / "strata-data" / "bucket") as bucket:
        blocks = load_bucket_index(bucket, "default", max_age_ms=3_600_000).blocks.values()
        assert max(b.maxt for b in blocks) > end_s * 1000, "the data is in blocks"

    compared = 0
    for at_s in (end_s - 10, end_s):
        for expr in INSTANT_QUERIES:
            params = {"query": expr, "time": at_s}
            local = query_api(prometheus_a, "/api/v1/query", params)
            remote = query_api(prometheus_b, "/api/v1/query", params)
            assert canonical(remote) == canonical(local), expr
            assert local["result"], f"{expr} is empty at {at_s}: the comparison is vacuous"
            compared += 1
    start_s = float(int(started_s) + 5)
    for expr in RANGE_QUERIES:
        params = {"query": expr, "start": start_s, "end": end_s, "step": 2}
        local = query_api(prometheus_a, "/api/v1/query_range", params)
        remote = query_api(prometheus_b, "/api/v1/query_range", params)
        assert canonical(remote) == canonical(local), expr
        assert local["result"], f"{expr} is empty: the comparison is vacuous"
        compared += 1
    assert compared == 2 * len(INSTANT_QUERIES) + len(RANGE_QUERIES)
    reads = metric_value(parse_metrics_text(strata.metrics()), "strata_read_requests_total")
    assert reads >= compared, "every answer of B came through Strata's remote read"
