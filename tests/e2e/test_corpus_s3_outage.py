"""The real corpus in over HTTP, out as blocks in SeaweedFS, across an S3 outage (issue 3).

Every body of ../shared/corpus/node-1s.rwlog goes to `strata serve`, in order, at full
speed. The whole corpus lies in one 2-hour window, so one sample of another series, the
grace past that window's end, goes first: the window is due from the start, as it is for
a gateway that receives data late, and each cut interval the shipper cuts what has
arrived into a block (late data goes into later, overlapping blocks) and uploads it to a
SeaweedFS of this test's own. After a third of the corpus, with blocks in the bucket,
SeaweedFS is stopped: uploads fail and blocks wait in the queue while every write still
gets 204. It is started again on the same ports and data, the queue drains, the last
third follows. Finally the blocks are read from the bucket alone — no WAL, no queue — and
must hold exactly the corpus's samples, bit for bit, each once; the early sample stays in
the head, since its own window is not due.

Long form (`STRATA_FAULT_LONG=1`, docs/durability.md): the middle third is paced over a
3-minute outage instead of sent at full speed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import httpx
import numpy as np
import pytest
import snappy

from blocks.bucket_index import read_bucket_index
from blocks.objstore.base import ObjectStore
from blocks.objstore.factory import open_store
from blocks.reader import BlockReader
from blocks.upload import list_blocks
from gateway.head_cut import BLOCK_DURATION_MS, window_start
from gateway.shipper import queued_blocks
from proto import remote_pb2, types_pb2
from tests.conftest import read_corpus
from tests.e2e.ackload import DEFAULT_TENANT, HEADERS, long_form
from tests.e2e.conftest import attach_log
from tests.e2e.samples import LabelSet, Stored, count_samples
from tests.e2e.servers import StrataServer, metric_value, parse_metrics_text
from tests.e2e.test_corpus_replay import (
    CORPUS_REQUESTS,
    CORPUS_SAMPLES,
    CORPUS_SERIES,
    decode_corpus,
    flatten,
)
from tests.support.seaweedfs import ACCESS_KEY, SECRET_KEY, SeaweedFS

# A block per second of replay while the bucket is up (fewer while uploads fail): about
# ten blocks for the corpus, 0.2-0.3 million samples each (measured).
CUT_INTERVAL_S = 1.0
CUT_GRACE_MS = 60_000
# After the restart the queue is retried within a second, not after a long backoff.
UPLOAD_BACKOFF_MAX_S = 1.0
# An upload attempt against a stopped server fails only after boto3's retries (3-6 s).
WAIT_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
EARLY_METRIC = "strata_e2e_next_window"
LONG_OUTAGE_S = 180.0

Metrics = Mapping[str, float]


def post_all(
    client: httpx.Client, url: str, bodies: list[bytes], over_s: float = 0.0
) -> Counter[int]:
    """POST each body in order on one connection, spread over `over_s` (0: at full
    speed); answers counted by status code."""
    answers: Counter[int] = Counter()
    started = time.monotonic()
    for i, body in enumerate(bodies):
        time.sleep(max(0.0, started + over_s * i / len(bodies) - time.monotonic()))
        answers[client.post(url, content=body, headers=HEADERS).status_code] += 1
    return answers


def next_window_sample(corpus_maxt: int) -> bytes:
    """A request with one sample of a new series, `CUT_GRACE_MS` past the corpus's window.

    A window is cut once the tenant's newest sample is the grace past its end; after
    this sample, every corpus sample is in a due window.
    """
    ts = window_start(corpus_maxt) + BLOCK_DURATION_MS + CUT_GRACE_MS
    request = remote_pb2.WriteRequest()
    series = request.timeseries.add(labels=[types_pb2.Label(name="__name__", value=EARLY_METRIC)])
    series.samples.add(value=1.0, timestamp=ts)
    body: bytes = snappy.compress(request.SerializeToString())
    return body


def metric(metrics: Metrics, name: str, **labels: str) -> float:
    """One metric's value; 0 for a counter not yet incremented (it has no sample yet)."""
    value = metric_value(metrics, name, **labels)
    return 0.0 if np.isnan(value) else value


def wait_for(
    server: StrataServer, what: str, holds: Callable[[Metrics], bool], timeout_s: float
) -> Metrics:
    """Poll /metrics until `holds`; the metrics that satisfied it. Fails after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = parse_metrics_text(server.metrics())
        if holds(metrics):
            return metrics
        if time.monotonic() > deadline:
            shipping = {k: v for k, v in metrics.items() if "block" in k or "upload" in k}
            pytest.fail(f"not {what} after {timeout_s:.0f} s; shipping metrics: {shipping}")
        time.sleep(0.25)


def read_bucket(store: ObjectStore, tenant: str, block_ids: list[str]) -> Stored:
    """Every sample of the tenant's blocks per series, time-sorted; repeats are kept."""
    parts: dict[LabelSet, list[tuple[np.ndarray, np.ndarray]]] = {}
    for block_id in block_ids:
        reader = BlockReader(store, f"{tenant}/{block_id}")
        count = reader.index.series_count
        data = reader.read_series(range(count), -(2**63), 2**63 - 1)
        for series in range(count):
            parts.setdefault(tuple(reader.index.labels(series)), []).append(data[series])
    stored: Stored = {}
    for labels, pieces in parts.items():
        ts = np.concatenate([ts for ts, _ in pieces])
        bits = np.concatenate([values for _, values in pieces]).view(np.uint64)
        order = np.argsort(ts, kind="stable")
        stored[labels] = (ts[order], bits[order])
    return stored


@pytest.fixture
def own_seaweedfs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SeaweedFS]:
    """A SeaweedFS for this test alone, since the test stops it; stopped by pid after."""
    server = SeaweedFS(tmp_path / "seaweedfs")
    attach_log(request.node, "seaweedfs", server.log_path)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.mark.e2e
def test_corpus_reaches_s3_across_an_outage_and_reads_back_bit_exact(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    own_seaweedfs: SeaweedFS,
    corpus_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    bucket_url = own_seaweedfs.store_url("corpus")
    data_dir = tmp_path / "strata-data"
    server = StrataServer(
        data_dir,
        tmp_path / "strata.log",
        (
            "--bucket-url",
            bucket_url,
            "--cut-interval-s",
            str(CUT_INTERVAL_S),
            "--cut-grace-ms",
            str(CUT_GRACE_MS),
            "--upload-backoff-max-s",
            str(UPLOAD_BACKOFF_MAX_S),
        ),
    )
    attach_log(request.node, "strata", server.log_path)
    bodies = list(read_corpus(corpus_path))
    assert len(bodies) == CORPUS_REQUESTS
    expected = decode_corpus(bodies)
    assert (len(expected), count_samples(expected)) == (CORPUS_SERIES, CORPUS_SAMPLES)
    # Prometheus retried nothing during the capture (../shared/corpus/README.md): no
    # (series, timestamp) repeats, so none may repeat in the bucket either.
    assert all(np.all(np.diff(ts) > 0) for ts, _ in expected.values())
    corpus_maxt = max(int(ts[-1]) for ts, _ in expected.values())
    outage_starts, outage_ends = len(bodies) // 3, 2 * len(bodies) // 3

    server.start()
    try:
        with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
            answers = post_all(client, server.write_url, [next_window_sample(corpus_maxt)])
            answers += post_all(client, server.write_url, bodies[:outage_starts])
            wait_for(
                server,
                "a block uploaded",
                lambda m: metric(m, "strata_blocks_uploaded_total") >= 1,
                WAIT_TIMEOUT_S,
            )

            own_seaweedfs.stop()
            outage_started = time.monotonic()
            down = parse_metrics_text(server.metrics())
            answers += post_all(
                client,
                server.write_url,
                bodies[outage_starts:outage_ends],
                LONG_OUTAGE_S if long_form() else 0.0,
            )
            # Blocks cut while the bucket is down fail to upload and wait in the queue.
            wait_for(
                server,
                "a block cut while S3 is down, its upload failed and queued",
                lambda m: (
                    metric(m, "strata_blocks_cut_total") > metric(down, "strata_blocks_cut_total")
                    and metric(m, "strata_block_upload_failures_total") >= 1
                    and metric(m, "strata_upload_queue_blocks") >= 1
                ),
                WAIT_TIMEOUT_S,
            )

            own_seaweedfs.start()
            outage_s = time.monotonic() - outage_started
            wait_for(
                server,
                "the queue drained after S3 came back",
                lambda m: metric(m, "strata_upload_queue_blocks") == 0,
                WAIT_TIMEOUT_S,
            )
            answers += post_all(client, server.write_url, bodies[outage_ends:])
        assert answers == {204: CORPUS_REQUESTS + 1}

        # Only the early sample stays in the head (during a cut the head shows none); every
        # block cut is uploaded and out of the queue.
        after = wait_for(
            server,
            "the whole corpus uploaded",
            lambda m: (
                metric(m, "strata_head_samples", tenant=DEFAULT_TENANT) == 1
                and metric(m, "strata_upload_queue_blocks") == 0
                and metric(m, "strata_blocks_uploaded_total")
                == metric(m, "strata_blocks_cut_total")
            ),
            WAIT_TIMEOUT_S,
        )
        server.stop_gracefully()
    finally:
        server.stop()

    assert queued_blocks(data_dir / "upload") == []
    with open_store(bucket_url, access_key=ACCESS_KEY, secret_key=SECRET_KEY) as store:
        assert {key.split("/", 1)[0] for key in store.list("")} == {DEFAULT_TENANT}
        block_ids = list_blocks(store, DEFAULT_TENANT)
        assert len(block_ids) == metric(after, "strata_blocks_cut_total")
        index = read_bucket_index(store, DEFAULT_TENANT)
        assert index is not None
        assert sorted(index.blocks) == block_ids
        stored = read_bucket(store, DEFAULT_TENANT, block_ids)

    lost = sum(
        int(np.count_nonzero(~np.isin(ts, stored.get(labels, (np.empty(0, np.int64),))[0])))
        for labels, (ts, _) in expected.items()
    )
    print(
        f"S3 outage of {outage_s:.0f} s: requests acknowledged {answers[204]}, other answers "
        f"{sum(answers.values()) - answers[204]}; upload failures "
        f"{metric(after, 'strata_block_upload_failures_total'):.0f}; read from the bucket "
        f"alone: {count_samples(stored)} samples in {len(stored)} series for "
        f"{CORPUS_SAMPLES} sent, lost {lost}"
    )
    assert set(stored) == set(expected)
    order = sorted(expected)
    want_ts, want_bits = flatten(expected, order)
    got_ts, got_bits = flatten(stored, order)
    assert len(got_ts) == CORPUS_SAMPLES  # no sample in two blocks
    assert np.array_equal(got_ts, want_ts)
    differ = np.flatnonzero(got_bits != want_bits)
    assert len(differ) == 0, (
        f"{len(differ)} values differ; first at ts {got_ts[differ[0]]}: "
        f"sent {want_bits[differ[0]]:#018x}, stored {got_bits[differ[0]]:#018x}"
    )
