"""S3 slow or failing on some calls: writes keep getting 204, uploads get through, no loss.

`strata serve` talks to SeaweedFS through a fault-injecting proxy (tests/support/
faulty_s3_proxy.py). Under load, with a cut every 2 s, the proxy delays 20 % of the
calls by 0.05-0.5 s, answers 5 % with 503 SlowDown unforwarded, forwards 3 % and then
answers 500 (the call took effect, its answer is lost) and drops the connection of 2 %;
in the middle it refuses the next 4 calls outright, as many as boto3 tries one call,
so that an upload fails as a whole and waits in the queue. Every write must be
acknowledged; with the faults still on, the queue must drain, and remote read (tried
again while the bucket refuses) must hold every acknowledged sample. With the faults
off, everything is flushed to the bucket, the gateway killed and restarted, and read
back once more.

Long form (`STRATA_FAULT_LONG=1`): 10 minutes at 5,000 samples/s, a 20 s outage every
2 minutes, a cut every 10 s.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.ackload import (
    AckLoad,
    LoadConfig,
    Outcome,
    assert_nothing_lost,
    check_remote,
    long_form,
    wait_for_new_ack,
)
from tests.e2e.conftest import attach_log
from tests.e2e.servers import StrataServer, parse_metrics_text
from tests.e2e.test_corpus_s3_outage import metric, wait_for
from tests.support.faulty_s3_proxy import NO_FAULTS, Faults, FaultyS3Proxy
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS

FAULTS = Faults(
    delay_share=0.2,
    delay_s=(0.05, 0.5),
    refuse_share=0.05,
    lose_answer_share=0.03,
    drop_share=0.02,
)
SEED = 7
# A block a tenant and cut, or two: each upload is about six calls, and each refused
# call costs boto3 a backoff of about a second.
SHAPES = ("recent", "near_future", "epoch")
# blocks/objstore/s3.py passes retries={"max_attempts": 3} to botocore, which counts
# retries after the first try there: four tries a call (measured through this proxy).
BOTO3_TRIES = 4
LONG_RATE_SAMPLES_PER_S = 5_000.0
ACK_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 60.0
# Ten minutes of cuts every 2 s, each two blocks a tenant, is more than uploads through
# these faults keep up with (about 1 s a block); the long form cuts every 10 s.
LONG_CUT_INTERVAL_S = 10
LONG_DRAIN_TIMEOUT_S = 300.0
STOP_LOAD_TIMEOUT_S = 20.0
READ_ATTEMPTS = 20  # a read the bucket refuses is tried again, a second apart


@pytest.fixture
def proxy(seaweedfs: SeaweedFS) -> Iterator[FaultyS3Proxy]:
    """The fault-injecting proxy in front of the session's SeaweedFS, faults off."""
    with FaultyS3Proxy(seaweedfs.endpoint, seed=SEED) as started:
        yield started


def run_with_outages(proxy: FaultyS3Proxy, cycles: int, run_s: float, outage_s: float) -> None:
    """Faults on all along; `cycles` times: `run_s` of faults, then an outage of
    `outage_s`, or of the next calls boto3 makes for one (outage_s 0)."""
    for _ in range(cycles):
        time.sleep(run_s)
        if outage_s:
            proxy.outage = True
            time.sleep(outage_s)
            proxy.outage = False
        else:
            proxy.refuse_next(BOTO3_TRIES)
    time.sleep(run_s)


@pytest.mark.e2e
def test_slow_and_failing_s3_delays_uploads_but_loses_nothing(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    proxy: FaultyS3Proxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket_url = (
        f"s3://{seaweedfs.bucket}/faults-{tmp_path.name}"
        f"?endpoint={proxy.endpoint}&region={REGION}&path_style=true"
    )
    cut_interval_s = LONG_CUT_INTERVAL_S if long_form() else 2
    args: tuple[str, ...] = ("--bucket-url", bucket_url, "--cut-interval-s", str(cut_interval_s))
    args += ("--cut-grace-ms", "0")
    strata = StrataServer(
        tmp_path / "strata-data", tmp_path / "strata.log", (*args, "--upload-backoff-max-s", "1")
    )
    attach_log(request.node, "strata", strata.log_path)
    cycles, run_s, outage_s = (5, 100.0, 20.0) if long_form() else (1, 4.0, 0.0)
    # For ten minutes the load is paced: at full speed the near-future series would run
    # more than 10 minutes ahead of the clock, and Strata refuses that.
    rate = LONG_RATE_SAMPLES_PER_S if long_form() else 0.0
    load = AckLoad(
        LoadConfig(url=strata.write_url, workers=2, shapes=SHAPES, rate_samples_per_s=rate)
    )
    read_url = f"{strata.url}/api/v1/read"
    try:
        strata.start()  # faults off: a bucket that fails its start-up check stops the start
        proxy.faults = FAULTS
        load.start()
        try:
            wait_for_new_ack(load.history, ACK_TIMEOUT_S)
            run_with_outages(proxy, cycles, run_s, outage_s)
        finally:
            stopped = load.stop(STOP_LOAD_TIMEOUT_S)
        assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
        assert not load.errors, load.errors
        not_acked = [a for a in load.history.attempts if a.outcome is not Outcome.ACKNOWLEDGED]
        assert not_acked == [], f"writes not acknowledged: {not_acked[:3]}"

        drained = wait_for(
            strata,
            "the queue drained through the faults",
            lambda m: (
                metric(m, "strata_upload_queue_blocks") == 0
                and metric(m, "strata_blocks_uploaded_total")
                == metric(m, "strata_blocks_cut_total")
            ),
            LONG_DRAIN_TIMEOUT_S if long_form() else DRAIN_TIMEOUT_S,
        )
        print(
            f"S3 faults: proxy {dict(proxy.counts)}; blocks cut "
            f"{metric(drained, 'strata_blocks_cut_total'):.0f}, upload failures "
            f"{metric(drained, 'strata_block_upload_failures_total'):.0f}"
        )
        faults_met = ("delayed", "refused", "answer_lost", "dropped", "outage")
        assert all(proxy.counts[k] > 0 for k in faults_met), proxy.counts
        assert metric(drained, "strata_block_upload_failures_total") >= 1
        served = check_remote(read_url, load.history, attempts=READ_ATTEMPTS)
        assert_nothing_lost(served, "S3 faults, remote read with the faults on")

        proxy.faults = NO_FAULTS
        flushed = httpx.post(f"{strata.url}/api/v1/admin/flush", timeout=60.0)
        assert flushed.status_code == 200, flushed.text
        strata.kill9()
        strata.start()
        head = metric(parse_metrics_text(strata.metrics()), "strata_head_samples")
        assert head == 0, "after a flush the WAL holds nothing: the restart reads the bucket"
        served = check_remote(read_url, load.history)
        assert_nothing_lost(served, "S3 faults, after flush, kill -9 and restart")
    finally:
        strata.stop()
