"""kill -9 of `strata compact` at each named failpoint loses nothing a reader can see.

The bucket is filled the way production fills it: the history checker's load writes
through `strata serve` (a cut every second, so the windows of its old series become many
overlapping 2 h blocks, and the "sparse" series, a sample every 15 s from a month ago,
crosses a day of windows), then a flush. Per failpoint, on a copy of that bucket: a
compaction pass armed at the point kills itself there; `strata query` over the bucket
must then answer every acknowledged sample bit for bit, nothing twice or invented; an
unarmed pass finishes the work, and the same check holds again. The compactor's own
tests (tests/compactor/test_compact_command.py) check the settled block shapes; this one
checks what a reader sees, with the checker every fault test uses; and so for two
compactors started at once on one bucket.

Long form (`STRATA_FAULT_LONG=1`): load for a minute instead of a few seconds.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from blocks.bucket_index import read_bucket_index
from blocks.catalog import bucket_tenants
from blocks.failpoints import ALL_POINTS, ENV
from blocks.objstore.local import LocalStore
from tests.compactor.test_compact_command import EVERY_STEP, SHORT_LEASE
from tests.e2e.ackload import (
    AckLoad,
    History,
    LoadConfig,
    assert_nothing_lost,
    check_remote,
    long_form,
    wait_for_new_ack,
)
from tests.e2e.servers import StrataServer, strata_command
from tests.e2e.test_downsampled_accuracy import Querier

pytestmark = pytest.mark.e2e

# Old windows, many blocks per window, and a day of 15 s samples a month back, so a pass
# merges overlaps, merges 2 h blocks into 12 h ones, downsamples, marks and deletes.
SHAPES = ("recent", "epoch", "negative", "sparse")
SERVE_ARGS = ("--cut-interval-s", "1", "--cut-grace-ms", "0")
# A killed run's lease (SHORT_LEASE) holds its tenant a second. Not for runs side by
# side: a pass that takes longer than that between two renewals (a loaded machine) loses
# its lease to the other, which then fails on what the first one deletes meanwhile.
COMPACT_ARGS = EVERY_STEP
ACK_TIMEOUT_S = 10.0
STOP_LOAD_TIMEOUT_S = 20.0
COMPACT_TIMEOUT_S = 180


class Loaded:
    """A data directory whose bucket holds what the load wrote, and the load's history."""

    def __init__(self, data_dir: Path, history: History) -> None:
        self.data_dir = data_dir
        self.history = history


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    base = tmp_path_factory.mktemp("compactor-faults")
    strata = StrataServer(base / "data", base / "strata.log", SERVE_ARGS)
    # The sparse series must run through a day of windows: about 1,200 requests each.
    load_s = 60.0 if long_form() else 8.0
    load = AckLoad(LoadConfig(url=strata.write_url, workers=3, shapes=SHAPES))
    try:
        strata.start()
        load.start()
        try:
            wait_for_new_ack(load.history, ACK_TIMEOUT_S)
            time.sleep(load_s)
        finally:
            stopped = load.stop(STOP_LOAD_TIMEOUT_S)
        assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
        assert not load.errors, load.errors
        flushed = httpx.post(f"{strata.url}/api/v1/admin/flush", timeout=60)
        assert flushed.status_code == 200, flushed.text
    finally:
        strata.stop()
    # Only the bucket: `strata query` and `strata compact` read nothing else.
    shutil.rmtree(base / "data" / "wal")
    return Loaded(base / "data", load.history)


def compact(data_dir: Path, failpoint: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if failpoint:
        env[ENV] = failpoint
    return subprocess.run(
        [*strata_command(), "compact", "--data-dir", str(data_dir), *COMPACT_ARGS, *SHORT_LEASE],
        env=env,
        capture_output=True,
        text=True,
        timeout=COMPACT_TIMEOUT_S,
    )


def check_through_querier(data_dir: Path, history: History, label: str) -> None:
    """The checker, against a fresh `strata query` over the bucket (no cached index)."""
    querier = Querier(data_dir, data_dir.parent / f"query-{label.split(':')[0]}.log")
    try:
        assert_nothing_lost(check_remote(f"{querier.url}/api/v1/read", history), label)
    finally:
        querier.stop()


def block_count(data_dir: Path) -> int:
    with LocalStore(data_dir / "bucket") as store:
        total = 0
        for tenant in bucket_tenants(store):
            index = read_bucket_index(store, tenant)
            total += len(index.blocks) if index is not None else 0
        return total


def test_the_load_left_work_for_every_step(loaded: Loaded, tmp_path: Path) -> None:
    """Without this, a failpoint test could pass because its point is never reached."""
    data_dir = tmp_path / "data"
    shutil.copytree(loaded.data_dir, data_dir)
    before = block_count(data_dir)
    done = compact(data_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = done.stderr.strip().splitlines()[-1]
    for step in ("merges=", "downsamplings=", "deleted="):
        count = int(summary.split(step, 1)[1].split()[0])
        assert count > 0, summary
    assert block_count(data_dir) < before, summary
    check_through_querier(data_dir, loaded.history, "one clean pass")


@pytest.mark.parametrize("point", ALL_POINTS)
def test_compactor_killed_at_failpoint_loses_nothing(
    point: str, loaded: Loaded, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(loaded.data_dir, data_dir)

    killed = compact(data_dir, failpoint=point)

    assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr[-2000:])
    assert f"failpoint {point} reached" in killed.stderr
    check_through_querier(data_dir, loaded.history, f"{point}: killed there")
    time.sleep(1.1)  # the killed run's lease runs out
    again = compact(data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    check_through_querier(data_dir, loaded.history, f"{point}: after the next pass")


def test_two_compactors_at_once_lose_nothing(loaded: Loaded, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(loaded.data_dir, data_dir)
    env = {k: v for k, v in os.environ.items() if k != ENV}
    command = [*strata_command(), "compact", "--data-dir", str(data_dir), *COMPACT_ARGS]
    runs = [subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [run.communicate(timeout=COMPACT_TIMEOUT_S)[1] for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    check_through_querier(data_dir, loaded.history, "two compactors at once")
    again = compact(data_dir)  # what a tenant busy with the other run left
    assert again.returncode == 0, again.stderr[-3000:]
    check_through_querier(data_dir, loaded.history, "two compactors, then one more pass")
