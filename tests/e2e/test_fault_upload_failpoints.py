"""kill -9 at each named failpoint of the gateway's cut and upload path loses nothing.

`STRATA_FAILPOINTS=<point>` (blocks/failpoints.py, UPLOAD_POINTS) makes `strata serve`
SIGKILL itself when it reaches the point: after blocks are built into the upload queue,
after the checkpoint, after chunks, meta.json and the bucket index, after the block left
the queue, and between two WAL segment deletions. Per point, under load all along: a
first process is killed at a random moment (so the next one replays a WAL of several
segments and finds a queue), a second runs armed until it kills itself at the point, a
third runs unarmed and carries on. Remote read of the third, and of a fourth started
after one more kill -9, must hold every acknowledged sample bit for bit, and nothing
twice. Cuts come every second (`--cut-grace-ms 0`: every window before the newest
sample's is due), so every point is reached within seconds.

A test in process pins down a race the long disk-full run found: the upload loop can
upload a block, and take it out of the queue, while its cut is still building the other
tenants' blocks. The cut then waited for that block for ever, and no WAL segment was
deleted again until a restart (the WAL grew to 1.2 GB in 5 minutes). `in_process_gateway`
serves test_fault_wal_disk_full.py's in-process test as well.

Long form (`STRATA_FAULT_LONG=1`): ten armed kills per point instead of one.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import snappy
from prometheus_client import CollectorRegistry

from blocks.failpoints import ENV, UPLOAD_POINTS
from blocks.objstore.local import LocalStore
from gateway.config import GatewayConfig
from gateway.decode import decode_write_request
from gateway.head import Head, HeadSnapshot
from gateway.head_starts import StartColumns
from gateway.metrics import GatewayMetrics
from gateway.shipper import Built, Shipper, drop_queued_block
from gateway.wal import WAL
from gateway.write import Ingester
from tests.e2e.ackload import (
    FEW_BLOCK_SHAPES,
    AckLoad,
    LoadConfig,
    Worker,
    assert_nothing_lost,
    check_remote,
    long_form,
    wait_for_new_ack,
)
from tests.e2e.conftest import attach_log
from tests.e2e.servers import HOST, StrataServer, log_tail, strata_command

ARGS = ("--cut-interval-s", "1", "--cut-grace-ms", "0", "--upload-backoff-max-s", "1")
ACK_TIMEOUT_S = 10.0
# Long enough for the first process to cut and upload a few times.
WARM_UP_S = (0.5, 2.0)
FAILPOINT_TIMEOUT_S = 20.0
AFTER_S = 1.5
STOP_LOAD_TIMEOUT_S = 20.0


def start_armed(strata: StrataServer) -> None:
    """Start as `StrataServer.start` does, without waiting for ready: an armed process
    may reach its point during start-up (queued blocks are uploaded first)."""
    argv = [
        *strata_command(),
        "serve",
        "--data-dir",
        str(strata.data_dir),
        "--listen",
        f"{HOST}:{strata.port}",
        *strata.extra_args,
    ]
    strata.process.spawn(argv)


def wait_for_own_kill(strata: StrataServer, point: str) -> None:
    """Until the armed process has killed itself at `point`; fails if it does not."""
    deadline = time.monotonic() + FAILPOINT_TIMEOUT_S
    while (code := strata.process.exited_early()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{point} not reached within {FAILPOINT_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    assert code == -signal.SIGKILL, f"exited with {code}; log:\n{log_tail(strata.log_path)}"
    assert f"failpoint {point} reached" in strata.log_path.read_text()


def run_rounds(
    strata: StrataServer,
    load: AckLoad,
    point: str,
    rounds: int,
    monkeypatch: pytest.MonkeyPatch,
    rng: random.Random,
) -> None:
    """Kill twice unarmed, then `rounds` times let a process armed at `point` kill itself.

    The second kill comes right after the first acknowledgement, before that process has
    truncated its WAL: the armed process starts with several segments to replay and
    delete, and blocks in the queue.
    """
    strata.start()
    wait_for_new_ack(load.history, ACK_TIMEOUT_S)
    time.sleep(rng.uniform(*WARM_UP_S))
    strata.kill9()
    strata.start()
    wait_for_new_ack(load.history, ACK_TIMEOUT_S)
    strata.kill9()
    for round_ in range(rounds):
        monkeypatch.setenv(ENV, point)  # strata inherits the environment at each start
        start_armed(strata)
        wait_for_own_kill(strata, point)
        monkeypatch.delenv(ENV)
        strata.start()
        wait_for_new_ack(load.history, ACK_TIMEOUT_S)
        time.sleep(AFTER_S)
        if round_ + 1 < rounds:
            strata.kill9()


@pytest.mark.e2e
@pytest.mark.parametrize("point", UPLOAD_POINTS)
def test_kill_at_upload_failpoint_loses_nothing(
    point: str, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    strata = StrataServer(tmp_path / "strata-data", tmp_path / "strata.log", ARGS)
    attach_log(request.node, "strata", strata.log_path)
    rounds = 10 if long_form() else 1
    load = AckLoad(LoadConfig(url=strata.write_url, workers=3, shapes=FEW_BLOCK_SHAPES))
    read_url = f"{strata.url}/api/v1/read"
    try:
        load.start()
        try:
            run_rounds(strata, load, point, rounds, monkeypatch, random.Random(point))
        finally:
            stopped = load.stop(STOP_LOAD_TIMEOUT_S)
        assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
        assert not load.errors, load.errors
        assert_nothing_lost(check_remote(read_url, load.history), f"{point}: after recovery")
        strata.kill9()
        strata.start()
        assert_nothing_lost(check_remote(read_url, load.history), f"{point}: after kill -9")
    finally:
        strata.stop()


TENANTS = ("t0", "t1", "t2")
KEPT_PER_TENANT = 5  # the near-future samples of one request stay in the head


@dataclass
class InProcess:
    """A gateway's head, WAL, ingester and shipper over a local bucket, without HTTP."""

    registry: CollectorRegistry
    head: Head
    wal: WAL
    ingester: Ingester
    shipper: Shipper

    async def write_each_tenant(self) -> None:
        """One request per tenant: near-future samples (kept) and 1970 ones (cut)."""
        now_ms = int(time.time() * 1000)
        for number, tenant in enumerate(TENANTS):
            worker = Worker(number, tenant, now_ms, KEPT_PER_TENANT, ("near_future", "epoch"))
            request = decode_write_request(snappy.uncompress(worker.next_request(1).body))
            await self.ingester.write(tenant, request)


@contextmanager
def in_process_gateway(tmp_path: Path) -> Iterator[InProcess]:
    """The parts, with every window before the newest sample's due for cutting."""
    config = GatewayConfig(data_dir=tmp_path, cut_grace_ms=0, wal_fsync=False)
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    head = Head(max_bytes=config.head_max_bytes, freeze_samples=config.head_freeze_samples)
    wal = WAL(config.wal_dir, segment_bytes=config.wal_segment_bytes, fsync=False, metrics=metrics)
    ingester = Ingester(config, head, wal, metrics)
    store = LocalStore(tmp_path / "bucket")
    wal.start()
    try:
        yield InProcess(
            registry, head, wal, ingester, Shipper(config, head, wal, ingester, store, metrics)
        )
    finally:
        wal.close()
        store.close()


def test_a_block_uploaded_while_its_cut_builds_does_not_stop_wal_truncation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with in_process_gateway(tmp_path) as gateway:
        shipper = gateway.shipper
        build = shipper._build

        def build_while_the_first_block_is_uploaded(
            snapshots: dict[str, HeadSnapshot],
            labels: dict[str, list[bytes]],
            boundaries: dict[str, int],
            starts: dict[str, StartColumns],
        ) -> dict[str, Built]:
            built = build(snapshots, labels, boundaries, starts)
            # The upload loop, running beside the build, takes the first tenant's block
            # before the build returns: uploaded, indexed, out of the queue.
            tenant = TENANTS[0]
            (block_dir,) = built[tenant][1]
            shipper._upload_and_index(block_dir, tenant)
            drop_queued_block(block_dir)
            return built

        monkeypatch.setattr(shipper, "_build", build_while_the_first_block_is_uploaded)

        async def scenario() -> None:
            await gateway.write_each_tenant()
            await shipper.cut_due()
            await shipper.upload_queued()

        asyncio.run(scenario())
        removed = gateway.registry.get_sample_value("strata_wal_segments_removed_total")
    assert shipper.queue_size() == 0
    assert shipper.pending == [], "the cut still waits for a block that left the queue"
    assert removed == 1
