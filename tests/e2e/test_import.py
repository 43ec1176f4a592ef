"""`strata import` backfills from a real Prometheus 2.42 over its remote_read API: every
sample arrives bit for bit, and an import killed half way resumes without duplicates.

The Prometheus holds ten hours of data in TSDB blocks, made with `promtool tsdb
create-blocks-from openmetrics` as a user backfilling would, so the import reads
persisted blocks, not a head.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from blocks.bucket_index import read_bucket_index
from blocks.failpoints import ENV
from blocks.objstore.local import LocalStore
from compactor.levels import HOUR_MS
from tests.compactor.bucket_data import contents, labels
from tests.e2e.conftest import attach_log
from tests.e2e.servers import PrometheusServer, prometheus_config, strata_command

pytestmark = pytest.mark.e2e

STEP_MS = 15_000
HOURS = 10
# Windows are 2 h from the epoch: ten hours starting mid-window touch six of them.
START_MS = 1_790_000_000_000 // (2 * HOUR_MS) * (2 * HOUR_MS) + HOUR_MS
END_MS = START_MS + HOURS * HOUR_MS
RUN_TIMEOUT_S = 120
Expected = dict[tuple[tuple[str, str], ...], list[tuple[int, int]]]


def openmetrics(path: Path) -> Expected:
    """A counter with a reset and a gauge per instance; the samples written, as bits."""
    rng = np.random.default_rng(7)
    ts = np.arange(START_MS, END_MS, STEP_MS, dtype=np.int64)
    expected = {}
    body: dict[str, list[str]] = {"requests": [], "temperature": []}
    for instance in ("a", "b"):
        counter = np.cumsum(rng.integers(0, 20, len(ts))).astype(np.float64)
        counter[len(ts) // 2 :] -= counter[len(ts) // 2]
        gauge = np.round(rng.normal(20.0, 3.0, len(ts)), 3)
        for name, metric, values in (
            ("requests", "requests_total", counter),
            ("temperature", "temperature", gauge),
        ):
            for t, v in zip(ts.tolist(), values.tolist(), strict=True):
                body[name].append(f'{metric}{{instance="{instance}"}} {v!r} {t / 1000:.3f}')
            key = labels(metric, instance=instance)
            expected[key] = list(zip(ts.tolist(), values.view(np.uint64).tolist(), strict=True))
    lines = ["# TYPE requests counter", *body["requests"], "# TYPE temperature gauge"]
    lines += [*body["temperature"], "# EOF"]
    path.write_text("\n".join(lines) + "\n")
    return expected


@pytest.fixture
def prometheus_with_history(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[PrometheusServer, Expected]]:
    base = tmp_path / "prometheus"
    base.mkdir()
    expected = openmetrics(tmp_path / "history.om")
    made = subprocess.run(
        [
            "promtool",
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "-q",
            str(tmp_path / "history.om"),
            str(base / "tsdb"),
        ],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert made.returncode == 0, made.stderr
    server = PrometheusServer(base)
    attach_log(request.node, "prometheus", server.log_path)
    config = prometheus_config({}, None)
    server.start(config)
    try:
        yield server, expected
    finally:
        server.close()


def run_import(
    data_dir: Path, source: str, *, failpoint: str = ""
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if failpoint:
        env[ENV] = failpoint
    return subprocess.run(
        [
            *strata_command(),
            "import",
            "--source",
            source,
            "--data-dir",
            str(data_dir),
            "--from",
            str(START_MS),
            "--to",
            str(END_MS),
            "--tenant",
            "history",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def test_import_brings_every_sample_and_resumes_without_duplicates(
    tmp_path: Path,
    prometheus_with_history: tuple[PrometheusServer, dict],  # type: ignore[type-arg]
) -> None:
    prometheus, expected = prometheus_with_history
    data_dir = tmp_path / "strata"

    killed = run_import(data_dir, prometheus.url, failpoint="import.after_window")
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert "[1/6]" in killed.stdout
    assert "[2/6]" not in killed.stdout

    done = run_import(data_dir, prometheus.url)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[1/6]" in done.stdout
    assert "already imported" in done.stdout
    assert "imported=5 already_there=1" in done.stdout

    with LocalStore(data_dir / "bucket") as store:
        index = read_bucket_index(store, "history")
        assert index is not None
        assert len(index.blocks) == 6  # one block per window, none twice
        assert contents(store, "history") == expected

    again = run_import(data_dir, prometheus.url)
    assert "imported=0 already_there=6" in again.stdout
