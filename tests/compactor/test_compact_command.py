"""`strata compact` as operators run it: killed at every failpoint and run again, two at
once on one bucket, one pass from cron, and the loop with its /metrics."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from blocks.bucket_index import read_bucket_index, scan_tenant
from blocks.failpoints import ALL_POINTS, ENV
from blocks.objstore.local import LocalStore
from compactor.lease import LeaseState, lease_key
from compactor.levels import HOUR_MS
from tests.compactor.bucket_data import (
    T0,
    contents,
    expected_bits,
    labels,
    live_blocks,
    put_windows,
    synthetic,
)
from tests.e2e.servers import free_port, strata_command
from tests.support.process_metrics import check_process_metrics

NAMES = [labels("requests_total", job="api"), labels("temperature", room="r1")]
# Everything a pass can do, at once: no waiting for the delete delay, no retention, 5 m
# copies of 12 h blocks.
EVERY_STEP = (
    "--delete-delay",
    "0",
    "--retention-raw",
    "0",
    "--retention-5m",
    "0",
    "--downsample-5m-after",
    "12h",
)
# A killed run's lease blocks the tenant this long; the runs here renew far sooner.
SHORT_LEASE = ("--lease-ttl", "1s")
FAST = [*EVERY_STEP, *SHORT_LEASE]
RUN_TIMEOUT_S = 120


def compact(data_dir: Path, *extra: str, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop(ENV, None)
    if failpoint:
        env[ENV] = failpoint
    return subprocess.run(
        [*strata_command(), "compact", "--data-dir", str(data_dir), *FAST, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def fill(data_dir: Path, tenant: str = "t") -> dict:  # type: ignore[type-arg]
    """A day of data as 2 h blocks: the pass merges, downsamples, marks and deletes."""
    data = synthetic(T0, T0 + 26 * HOUR_MS, 60_000, NAMES)
    with LocalStore(data_dir / "bucket") as store:
        put_windows(store, data_dir / "work", tenant, data)
    return expected_bits(data)


def settled_shape(data_dir: Path, tenant: str = "t") -> list[tuple[int, int, int, int]]:
    with LocalStore(data_dir / "bucket") as store:
        return sorted(
            (int(m.resolution), m.mint, m.maxt, m.level)
            for m in live_blocks(store, tenant, unmarked=True)
        )


def wait_for_lease_to_run_out(store: LocalStore, tenant: str) -> None:
    """What the next cron run after a crash does by itself, a lease TTL later."""
    state = LeaseState.decode(store.get(lease_key(tenant)))
    assert state is not None
    pause_s = state.expires_ms / 1000 - time.time()
    assert pause_s < 5
    time.sleep(max(0.0, pause_s) + 0.05)


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[int, int, int, int]]:
    """What an uninterrupted pass leaves: the shape every interrupted one must reach."""
    data_dir = tmp_path_factory.mktemp("clean")
    expected = fill(data_dir)
    done = compact(data_dir)
    assert done.returncode == 0, done.stderr
    with LocalStore(data_dir / "bucket") as store:
        assert contents(store, "t") == expected
        index = read_bucket_index(store, "t")
        assert index is not None
        assert not index.deletion_marks  # all deleted (delay 0)
    shape = settled_shape(data_dir)
    assert [s[0] for s in shape].count(300_000) == 2  # two 12 h blocks got 5 m copies
    return shape


@pytest.mark.parametrize("point", ALL_POINTS)
def test_killed_at_each_step_loses_nothing_and_the_next_run_finishes(
    point: str, tmp_path: Path, clean_run: list[tuple[int, int, int, int]]
) -> None:
    expected = fill(tmp_path)

    killed = compact(tmp_path, failpoint=point)

    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    assert f"failpoint {point} reached" in killed.stderr
    with LocalStore(tmp_path / "bucket") as store:
        # What queriers read (the index's blocks) still holds every sample, bit for bit.
        assert contents(store, "t") == expected, point
        wait_for_lease_to_run_out(store, "t")
    again = compact(tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    with LocalStore(tmp_path / "bucket") as store:
        assert contents(store, "t") == expected
        assert scan_tenant(store, "t").blocks.keys() == {
            m.block_id for m in live_blocks(store, "t")
        }
    assert settled_shape(tmp_path) == clean_run


def test_two_compactors_at_once_share_the_work_without_harm(
    tmp_path: Path, clean_run: list[tuple[int, int, int, int]]
) -> None:
    expected = {tenant: fill(tmp_path, tenant) for tenant in ("t", "u", "v")}
    env = {k: v for k, v in os.environ.items() if k != ENV}
    command = [*strata_command(), "compact", "--data-dir", str(tmp_path), *FAST]
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=RUN_TIMEOUT_S)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    again = compact(tmp_path)  # picks up what a busy tenant left, if anything
    assert again.returncode == 0, again.stderr
    with LocalStore(tmp_path / "bucket") as store:
        for tenant, want in expected.items():
            assert contents(store, tenant) == want
            assert settled_shape(tmp_path, tenant) == clean_run


def test_one_pass_reports_what_it_did(tmp_path: Path) -> None:
    fill(tmp_path)
    done = compact(tmp_path)
    assert done.returncode == 0, done.stderr
    summary = [line for line in done.stderr.splitlines() if "compaction pass:" in line]
    assert len(summary) == 1
    assert "merges=2" in summary[0], summary[0]
    assert "downsamplings=2" in summary[0], summary[0]
    assert "[1/" in done.stderr  # per-action progress


def test_an_unreachable_bucket_fails_in_one_line(tmp_path: Path) -> None:
    missing = f"file://{tmp_path / 'nowhere'}"
    done = compact(tmp_path, "--bucket-url", missing)
    assert done.returncode == 1
    assert done.stderr.startswith("strata: ")
    assert "Traceback" not in done.stderr


def test_loop_serves_metrics_and_stops_on_sigterm(tmp_path: Path) -> None:
    fill(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != ENV}
    log = (tmp_path / "compact.log").open("w")
    process = subprocess.Popen(
        [
            *strata_command(),
            "compact",
            "--loop",
            "--interval",
            "1h",
            "--data-dir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{port}",
            *FAST,
        ],
        env=env,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        text = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    text = r.read().decode()
            except OSError:
                text = ""
            if 'strata_compactor_passes_total{result="ok"} 1.0' in text:
                break
            time.sleep(0.2)
        assert 'strata_compactor_passes_total{result="ok"} 1.0' in text
        assert "strata_compactor_blocks_merged_total 12.0" in text
        assert "strata_compactor_halted 0.0" in text
        check_process_metrics(text, process.pid)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
