"""A full WAL disk: every write meanwhile gets 503, none a 2xx; recovery when space returns.

`strata serve` runs with `STRATA_TEST_WAL_DISK_FULL_FLAG=<file>` (gateway/wal.py): while
the file exists, every WAL write stops halfway and fails with ENOSPC, as on a full disk.
Under load, with a cut every second (so cut checkpoints fail too), the test "fills the
disk" for a few seconds and frees it again. Every request sent after the disk filled and
answered before it was freed must have got a 503; the process must keep running and
acknowledge again once there is room; remote read, then remote read after a kill -9 and
restart, must hold every acknowledged sample.

A second test, in process, pins down what the long form found: a cut whose checkpoint
could not even be handed to the WAL (a failed write had just moved it to a new segment)
left every tenant after the first that failed out of the head. Their acknowledged samples
vanished from reads and later cuts, and WAL truncation stopped, until a restart.

Long form (`STRATA_FAULT_LONG=1`): 20 rounds of 10 s full, 5 s free.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Future
from pathlib import Path

import pytest

from blocks.errors import Unavailable
from gateway.wal import DISK_FULL_FLAG_ENV
from tests.e2e.ackload import (
    FEW_BLOCK_SHAPES,
    AckLoad,
    Attempt,
    LoadConfig,
    assert_nothing_lost,
    check_remote,
    long_form,
    wait_for_new_ack,
)
from tests.e2e.conftest import attach_log
from tests.e2e.servers import StrataServer, metric_value, parse_metrics_text
from tests.e2e.test_fault_upload_failpoints import (
    KEPT_PER_TENANT,
    TENANTS,
    in_process_gateway,
)

ARGS = ("--cut-interval-s", "1", "--cut-grace-ms", "0")
ACK_TIMEOUT_S = 10.0
STOP_LOAD_TIMEOUT_S = 20.0


def fill_and_free(flag: Path, load: AckLoad, full_s: float, free_s: float) -> list[Attempt]:
    """Disk full for `full_s`, then free until acknowledged again and `free_s` more.

    Returns the attempts sent after the disk filled and answered before it was freed.
    """
    flag.touch()
    filled = time.monotonic()
    time.sleep(full_s)
    freed = time.monotonic()
    flag.unlink()
    wait_for_new_ack(load.history, ACK_TIMEOUT_S)
    time.sleep(free_s)
    return load.history.attempts_between(filled, freed)


@pytest.mark.e2e
def test_full_wal_disk_answers_503_and_recovers_without_loss(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = tmp_path / "wal-disk-full"
    monkeypatch.setenv(DISK_FULL_FLAG_ENV, str(flag))
    strata = StrataServer(tmp_path / "strata-data", tmp_path / "strata.log", ARGS)
    attach_log(request.node, "strata", strata.log_path)
    rounds, full_s, free_s = (20, 10.0, 5.0) if long_form() else (1, 3.0, 1.0)
    load = AckLoad(LoadConfig(url=strata.write_url, shapes=FEW_BLOCK_SHAPES))
    read_url = f"{strata.url}/api/v1/read"
    try:
        strata.start()
        load.start()
        try:
            wait_for_new_ack(load.history, ACK_TIMEOUT_S)
            time.sleep(free_s)
            while_full = [
                a for _ in range(rounds) for a in fill_and_free(flag, load, full_s, free_s)
            ]
        finally:
            stopped = load.stop(STOP_LOAD_TIMEOUT_S)
        assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
        assert not load.errors, load.errors

        assert strata.process.exited_early() is None, "strata serve died while the disk was full"
        metrics = parse_metrics_text(strata.metrics())
        failures = metric_value(metrics, "strata_wal_write_failures_total")
        statuses = sorted({a.status for a in while_full}, key=str)
        not_503 = [a for a in while_full if a.status != 503]
        print(
            f"disk full {rounds} x {full_s:.0f} s: {len(while_full)} requests answered while "
            f"full, statuses {statuses}; WAL write failures {failures:.0f}"
        )
        assert len(while_full) >= 10, "too few requests while the disk was full to judge"
        assert not_503 == [], f"answered other than 503 while the disk was full: {not_503[:3]}"
        assert failures >= 1
        assert "wal write failed" in strata.log_path.read_text()
        assert_nothing_lost(check_remote(read_url, load.history), "disk full, after recovery")
        strata.kill9()
        strata.start()
        assert_nothing_lost(check_remote(read_url, load.history), "disk full, after kill -9")
        assert strata.starts == 2
    finally:
        strata.stop()


def test_a_cut_whose_checkpoint_cannot_be_logged_keeps_every_tenant_in_the_head(
    tmp_path: Path,
) -> None:
    submits = 0

    with in_process_gateway(tmp_path) as gateway:
        real_submit = gateway.wal.submit

        def submit_failing_once(generation: int, data: bytes) -> Future[None]:
            # As WAL.submit answers when the writer thread's failed write moved the WAL
            # on between encoding and submitting: the second tenant's checkpoint meets it.
            nonlocal submits
            submits += 1
            if submits == 2:
                raise Unavailable("WAL moved to a new segment while the request was encoded")
            return real_submit(generation, data)

        async def scenario() -> None:
            await gateway.write_each_tenant()
            gateway.wal.submit = submit_failing_once  # type: ignore[method-assign]
            await gateway.shipper.cut_due()

        asyncio.run(scenario())
    assert submits == 2, "the checkpoint never reached the failing submit"
    kept = {tenant: gateway.head.tenant(tenant).sample_count for tenant in TENANTS}
    assert kept == dict.fromkeys(TENANTS, KEPT_PER_TENANT)
    shipper = gateway.shipper
    assert shipper.pending == [], "a cut that failed its checkpoint must not hold back truncation"
    assert shipper.queue_size() == len(TENANTS)  # the 1970 samples, one block a tenant
