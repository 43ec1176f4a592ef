"""Samples in over HTTP, blocks out into a real S3 bucket that goes away for a while."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest
import snappy

from gateway.inspect import read_samples
from proto import remote_pb2, types_pb2
from tests.e2e.servers import StrataServer, metric_value, parse_metrics_text
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS
from tests.support.values import STALE_NAN

SERIES = 60
STEP_MS = 60_000
HOURS = 7
START_MS = 1_795_564_800_000  # aligned to 2 h, in the past
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}


def workload() -> tuple[list[bytes], dict[tuple[tuple[str, str], ...], np.ndarray]]:
    """Request bodies in time order, and each series' value bits."""
    steps = HOURS * 3_600_000 // STEP_MS
    rng = np.random.default_rng(7)
    bits = np.round(rng.normal(100, 20, (SERIES, steps)), 2).view(np.uint64)
    bits[0, 10] = STALE_NAN
    labels = [(("__name__", f"m{i % 6}"), ("job", "e2e"), ("n", str(i))) for i in range(SERIES)]
    bodies = []
    for start in range(0, steps, 10):
        request = remote_pb2.WriteRequest()
        for step in range(start, min(start + 10, steps)):
            for i, series in enumerate(labels):
                ts = request.timeseries.add(
                    labels=[types_pb2.Label(name=n, value=v) for n, v in series]
                )
                value = float(bits[i, step : step + 1].view(np.float64)[0])
                ts.samples.add(value=value, timestamp=START_MS + step * STEP_MS)
        bodies.append(snappy.compress(request.SerializeToString()))
    return bodies, {series: bits[i] for i, series in enumerate(labels)}


def wait_until(
    server: StrataServer, name: str, holds: Callable[[float], bool], timeout_s: float
) -> float:
    """Poll a metric until `holds(value)`; its last value."""
    deadline = time.monotonic() + timeout_s
    value = float("nan")
    while time.monotonic() < deadline:
        value = metric_value(parse_metrics_text(server.metrics()), name)
        if holds(value):
            return value
        time.sleep(0.25)
    raise AssertionError(f"{name} is still {value} after {timeout_s} s")


@pytest.mark.e2e
def test_blocks_reach_s3_across_an_outage_and_read_back_bit_exact(
    tmp_path: Path, seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket_url = seaweedfs.store_url(f"e2e-{tmp_path.name}")
    server = StrataServer(
        tmp_path / "data",
        tmp_path / "strata.log",
        ("--bucket-url", bucket_url, "--cut-interval-s", "0.5", "--upload-backoff-max-s", "1"),
    )
    bodies, expected = workload()
    seaweedfs.stop()  # the bucket is down from the start
    try:
        server.start()
        with httpx.Client(timeout=30) as client:
            for i, body in enumerate(bodies):
                if i == len(bodies) // 2:
                    # Windows are cut and queued while the bucket is down; uploads fail.
                    wait_until(server, "strata_upload_queue_blocks", lambda v: v >= 1, timeout_s=30)
                    wait_until(
                        server, "strata_block_upload_failures_total", lambda v: v >= 1, timeout_s=30
                    )
                    seaweedfs.start()
                answer = client.post(server.write_url, content=body, headers=HEADERS)
                assert answer.status_code == 204, answer.text
        # Windows 0-2 h, 2-4 h and 4-6 h are due (the newest sample is past 6 h + grace).
        wait_until(server, "strata_blocks_uploaded_total", lambda v: v >= 3, timeout_s=60)
        wait_until(server, "strata_upload_queue_blocks", lambda v: v == 0, timeout_s=60)
        wait_until(server, "strata_wal_segments_removed_total", lambda v: v >= 1, timeout_s=30)
        server.stop_gracefully()
    finally:
        server.stop()
        if not seaweedfs.running:
            seaweedfs.start()
    stored = read_samples(tmp_path / "data", bucket_url)["default"]
    assert set(stored) == set(expected)
    steps = HOURS * 3_600_000 // STEP_MS
    for series, bits in expected.items():
        ts, values = stored[series]
        assert ts.tolist() == [START_MS + s * STEP_MS for s in range(steps)]
        assert np.array_equal(values.view(np.uint64), bits)
