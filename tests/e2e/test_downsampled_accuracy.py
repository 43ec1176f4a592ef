"""PromQL over downsampled data answers within 1 % of the same PromQL over raw data.

Thirty days of counters (with resets) and gauges, one sample a minute, are put in the
bucket as 2 h blocks the way gateways cut them; one `strata compact` pass merges them
and writes 5 m and 1 h copies. Two `strata query` processes serve the bucket: one
chooses downsampled blocks from the ReadHints Prometheus sends, the other reads raw
blocks only. Two real Prometheus 2.42 servers, one per querier, answer the same range
queries through remote_read, and the answers are compared point by point.

Tolerances, all 1 % relative (docs/remote-read.md#downsampled-data):
- `rate(x[1h])` (5 m data) and `increase(x[1d])` (5 m or 1 h data): the counter aggregate has
  the raw counter's value at each window's last sample with resets undone, so the
  increase between two of its samples is exact; what differs is only how far PromQL
  extrapolates to the range's ends (a window of 5 min or 1 h instead of 1 min).
- `max_over_time`, `min_over_time`, `avg_over_time` over 1 h (5 m data) and 1 d (1 h
  data): each window is counted by its last sample's time, so the range covers samples
  one scrape earlier than raw data does; for these gauges a minute's change is far
  below 1 %. With ranges not aligned to windows the difference grows to a window's
  worth of change at each end (a 1 h window of these gauges: about 1.3 %).
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from blocks.bucket_index import read_bucket_index
from blocks.meta import Resolution
from blocks.objstore.local import LocalStore
from compactor.levels import DAY_MS, HOUR_MS
from tests.compactor.bucket_data import Series, labels, put_windows
from tests.e2e.conftest import attach_log
from tests.e2e.servers import (
    HOST,
    Process,
    PrometheusServer,
    free_port,
    metric_value,
    parse_metrics_text,
    prometheus_config,
    strata_command,
    wait_until_ready,
)

pytestmark = pytest.mark.e2e

TENANT = "default"
STEP_MS = 60_000
DAYS = 30
COUNTERS = 3
GAUGES = 3
TOLERANCE = 0.01
# (query, step in seconds): a resolution serves when five of its samples fit in both the
# step and the range, so 1 h steps and ranges read 5 m data, 6 h steps over 1 d read 1 h.
QUERIES = (
    ("rate(requests_total[1h])", 3600),
    ("increase(requests_total[1d])", 3600),
    ("increase(requests_total[1d])", 6 * 3600),
    ("max_over_time(temperature[1h])", 3600),
    ("min_over_time(temperature[1h])", 3600),
    ("avg_over_time(temperature[1h])", 3600),
    ("max_over_time(temperature[1d])", 6 * 3600),
    ("avg_over_time(temperature[1d])", 6 * 3600),
)
RUN_TIMEOUT_S = 300


def thirty_days(end_ms: int) -> Series:
    """Counters growing at steady, jittered rates with resets; gauges with a daily cycle."""
    rng = np.random.default_rng(20261125)
    ts = np.arange(end_ms - DAYS * DAY_MS, end_ms, STEP_MS, dtype=np.int64)
    series: Series = {}
    for i in range(COUNTERS):
        per_step = (i + 1) * 30.0 * (1 + 0.05 * rng.standard_normal(len(ts)))
        values = np.cumsum(np.maximum(per_step, 0.0)).round()
        for reset in sorted(rng.choice(np.arange(1, len(ts)), size=3, replace=False)):
            values[reset:] -= values[reset - 1]  # the process restarted from zero
        series[labels("requests_total", instance=f"i{i}")] = (ts, values)
    for i in range(GAUGES):
        phase = rng.uniform(0, 2 * np.pi)
        daily = 50 * np.sin(2 * np.pi * ts / DAY_MS + phase)
        noise = 0.5 * rng.standard_normal(len(ts))
        series[labels("temperature", instance=f"i{i}")] = (ts, (1000 + daily + noise).round(2))
    return series


class Querier:
    """`strata query` over one bucket."""

    def __init__(self, data_dir: Path, log_path: Path, *extra: str) -> None:
        self.port = free_port()
        self.process = Process("strata query", log_path)
        self.process.spawn(
            [
                *strata_command(),
                "query",
                "--data-dir",
                str(data_dir),
                "--listen",
                f"{HOST}:{self.port}",
                *extra,
            ]
        )
        wait_until_ready(self.process, f"{self.url}/-/ready", 60)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def blocks_read(self) -> dict[str, float]:
        text = httpx.get(f"{self.url}/metrics", follow_redirects=True, timeout=5).text
        metrics = parse_metrics_text(text)
        return {
            name: metric_value(metrics, "strata_read_blocks_total", resolution=name)
            for name in ("raw", "5m", "1h")
        }

    def stop(self) -> None:
        if self.process.running:
            self.process.signal_and_wait(signal.SIGTERM)


@pytest.fixture
def compacted_bucket(tmp_path: Path) -> tuple[Path, Series, int]:
    """Thirty days in 2 h blocks, then one compaction pass: merged, 5 m and 1 h copies."""
    end_ms = int(time.time() * 1000) // HOUR_MS * HOUR_MS
    data = thirty_days(end_ms)
    data_dir = tmp_path / "strata"
    with LocalStore(data_dir / "bucket") as store:
        put_windows(store, tmp_path / "work", TENANT, data)
    done = subprocess.run(
        [
            *strata_command(),
            "compact",
            "--data-dir",
            str(data_dir),
            "--retention-raw",
            "0",
            "--delete-delay",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with LocalStore(data_dir / "bucket") as store:
        index = read_bucket_index(store, TENANT)
        assert index is not None
        resolutions = {m.resolution for m in index.blocks.values()}
    assert resolutions == {Resolution.RAW, Resolution.FIVE_MINUTES, Resolution.ONE_HOUR}
    return data_dir, data, end_ms


def reading_prometheus(base_dir: Path, querier: Querier) -> PrometheusServer:
    base_dir.mkdir()
    config = prometheus_config({}, None)
    config["remote_read"] = [{"url": f"{querier.url}/api/v1/read", "read_recent": True}]
    server = PrometheusServer(base_dir)
    server.start(config)
    return server


def range_query(server: PrometheusServer, query: str, start_s: int, end_s: int, step_s: int) -> Any:
    answer = server.client.get(
        "/api/v1/query_range",
        params={"query": query, "start": start_s, "end": end_s, "step": str(step_s)},
    )
    body = answer.json()
    assert answer.status_code == 200, answer.text
    assert body["status"] == "success", answer.text
    return {
        tuple(sorted(s["metric"].items())): {int(t): float(v) for t, v in s["values"]}
        for s in body["data"]["result"]
    }


def test_downsampled_answers_match_raw_ones_within_one_percent(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    compacted_bucket: tuple[Path, Series, int],
) -> None:
    data_dir, _, end_ms = compacted_bucket
    queriers: list[Querier] = []
    prometheus: list[PrometheusServer] = []
    try:
        for name, extra in (("downsampled", ()), ("raw", ("--query-downsampled", "false"))):
            log_path = tmp_path / f"query-{name}.log"
            attach_log(request.node, f"strata query ({name})", log_path)
            queriers.append(Querier(data_dir, log_path, *extra))
            server = reading_prometheus(tmp_path / f"prom-{name}", queriers[-1])
            attach_log(request.node, f"prometheus ({name})", server.log_path)
            prometheus.append(server)
        start_s = (end_ms - (DAYS - 2) * DAY_MS) // 1000
        end_s = (end_ms - 2 * HOUR_MS) // 1000
        for query, step_s in QUERIES:
            coarse = range_query(prometheus[0], query, start_s, end_s, step_s)
            fine = range_query(prometheus[1], query, start_s, end_s, step_s)
            assert coarse.keys() == fine.keys(), query
            assert len(fine) == (COUNTERS if "requests" in query else GAUGES)
            for key, points in fine.items():
                assert coarse[key].keys() == points.keys(), (query, key)
                got = np.array([coarse[key][t] for t in points])
                want = np.array(list(points.values()))
                errors = np.abs(got - want) / np.maximum(np.abs(want), 1e-9)
                at = int(np.argmax(errors))
                worst = (list(points)[at], float(got[at]), float(want[at]), float(errors[at]))
                assert worst[3] <= TOLERANCE, (query, step_s, key, "time, got, want, error", worst)
        downsampled, raw = (q.blocks_read() for q in queriers)
        assert downsampled["5m"] > 0  # 1 h steps and ranges
        assert downsampled["1h"] > 0  # 6 h steps over 1 d
        assert raw["5m"] == raw["1h"] == 0
    finally:
        for server in prometheus:
            server.close()
        for querier in queriers:
            querier.stop()
