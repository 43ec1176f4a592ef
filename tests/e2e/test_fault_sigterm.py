"""SIGTERM under load: readiness goes false, in-flight requests finish, exit within 30 s.

Under load, with a cut every second (so the stop meets cuts and uploads), one request is
held half sent: its headers and half its body are in when `strata serve` gets SIGTERM,
the rest follows half a second later. Meanwhile /-/ready is probed every 10 ms. The
held request must be answered 204, no probe started after the signal may answer 200,
the process must exit cleanly within 30 s, and after a restart remote read must hold
every acknowledged sample (the held request's among them).

A second test stops a gateway while it uploads a backlog (queued while the bucket was
down) to a slow bucket: it must exit without uploading the whole backlog first (it used
to finish every upload round), and the next start must upload it and serve everything.

Long form (`STRATA_FAULT_LONG=1`): 20 SIGTERMs, 10 s of load before each.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.ackload import (
    FEW_BLOCK_SHAPES,
    HEADERS,
    AckLoad,
    Attempt,
    LoadConfig,
    Outcome,
    Worker,
    assert_nothing_lost,
    check_remote,
    classify,
    long_form,
    wait_for_new_ack,
)
from tests.e2e.conftest import attach_log
from tests.e2e.servers import StrataServer, parse_metrics_text
from tests.e2e.test_corpus_s3_outage import metric, wait_for
from tests.support.faulty_s3_proxy import NO_FAULTS, Faults, FaultyS3Proxy
from tests.support.seaweedfs import ACCESS_KEY, REGION, SECRET_KEY, SeaweedFS

EXIT_LIMIT_S = 30.0
# The signal handler runs on the event loop's thread between two callbacks, so a probe
# sent in the first few milliseconds may still be answered as before.
SIGNAL_DELIVERY_S = 0.02
HELD_BACK_S = 0.5
PROBE_INTERVAL_S = 0.01
ACK_TIMEOUT_S = 10.0
STOP_LOAD_TIMEOUT_S = 20.0
HELD_WORKER = 9  # a worker number of its own: its own series
# Every bucket call this late: an upload (about six calls) takes about 2 s.
SLOW_BUCKET = Faults(delay_share=1.0, delay_s=(0.3, 0.3))
BACKLOG_BLOCKS = 8
# The block being uploaded when the signal comes is finished (six slow calls, 2 s), not
# the rest of the backlog (it was: the rest of the upload round, 2 s a block).
MAX_UPLOADS_AFTER_SIGNAL = 1


@pytest.fixture
def strata_args() -> tuple[str, ...]:
    """Cuts every second, so a stop meets cuts and uploads in progress."""
    return ("--cut-interval-s", "1", "--cut-grace-ms", "0")


@dataclass
class HeldRequest:
    """A write whose body is held half sent until the signal has gone out."""

    load: AckLoad
    url: str
    worker: Worker  # one for all held requests: each continues its series
    half_sent: threading.Event = field(default_factory=threading.Event)
    signalled: threading.Event = field(default_factory=threading.Event)
    status: int | None = None
    error: str = ""

    def run(self) -> None:
        """Send it (in a thread); the outcome goes into the load's history."""
        request = self.worker.next_request(self.load.next_id())
        self.load.history.add_request(request)

        def body() -> Iterator[bytes]:
            half = len(request.body) // 2
            yield request.body[:half]
            self.half_sent.set()
            self.signalled.wait(ACK_TIMEOUT_S)
            time.sleep(HELD_BACK_S)
            yield request.body[half:]

        start = time.monotonic()
        outcome, detail = Outcome.UNKNOWN, ""
        try:
            answer = httpx.post(self.url, content=body(), headers=HEADERS, timeout=EXIT_LIMIT_S)
        except httpx.TransportError as exc:
            self.error = detail = repr(exc)
        else:
            self.status = answer.status_code
            outcome, detail = classify(answer.status_code), answer.text.strip()
        self.load.history.add_attempt(
            Attempt(request.request_id, 0, outcome, self.status, detail, start, time.monotonic())
        )


@dataclass
class Stop:
    """What one SIGTERM led to."""

    exit_code: int
    exit_s: float
    probes_200: int
    probes_503: int
    probes_refused: int
    held_status: int | None


def probe_until_exit(strata: StrataServer, signalled_at: float) -> tuple[float, list[str]]:
    """Probe /-/ready until the process exits; (exit time, answers of probes sent late
    enough after the signal)."""
    answers = []
    deadline = signalled_at + EXIT_LIMIT_S + 5
    with httpx.Client(timeout=1.0) as client:
        while strata.process.popen.poll() is None:
            if time.monotonic() > deadline:
                pytest.fail(f"strata serve still running {EXIT_LIMIT_S + 5:.0f} s after SIGTERM")
            sent = time.monotonic()
            try:
                answer: str = str(client.get(f"{strata.url}/-/ready").status_code)
            except httpx.TransportError:
                answer = "refused"
            if sent - signalled_at >= SIGNAL_DELIVERY_S:
                answers.append(answer)
            time.sleep(PROBE_INTERVAL_S)
    return time.monotonic(), answers


def sigterm_once(strata: StrataServer, load: AckLoad, held_worker: Worker) -> Stop:
    """SIGTERM with a request in flight; wait for the exit; start again."""
    held = HeldRequest(load, strata.write_url, held_worker)
    thread = threading.Thread(target=held.run, name="held-request", daemon=True)
    thread.start()
    assert held.half_sent.wait(ACK_TIMEOUT_S), "the held request never started"
    time.sleep(0.2)  # its headers are in: the server is reading its body
    signalled_at = time.monotonic()
    os.kill(strata.pid, signal.SIGTERM)
    held.signalled.set()
    exited_at, answers = probe_until_exit(strata, signalled_at)
    exit_code = strata.terminate()  # reaps it; it has exited already
    thread.join(EXIT_LIMIT_S)
    strata.start()
    return Stop(
        exit_code,
        exited_at - signalled_at,
        answers.count("200"),
        answers.count("503"),
        answers.count("refused"),
        held.status,
    )


@pytest.mark.e2e
def test_sigterm_under_load_drains_and_loses_nothing(strata: StrataServer) -> None:
    rounds, between_s = (20, 10.0) if long_form() else (1, 1.5)
    load = AckLoad(LoadConfig(url=strata.write_url, shapes=FEW_BLOCK_SHAPES))
    held_worker = Worker(HELD_WORKER, None, int(time.time() * 1000), 5, FEW_BLOCK_SHAPES)
    load.start()
    stops = []
    try:
        for _ in range(rounds):
            wait_for_new_ack(load.history, ACK_TIMEOUT_S)
            time.sleep(between_s)
            stops.append(sigterm_once(strata, load, held_worker))
        wait_for_new_ack(load.history, ACK_TIMEOUT_S)
    finally:
        stopped = load.stop(STOP_LOAD_TIMEOUT_S)
    assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
    assert not load.errors, load.errors

    for stop in stops:
        print(
            f"SIGTERM: exit {stop.exit_code} after {stop.exit_s:.2f} s; held request "
            f"{stop.held_status}; /-/ready probes after the signal: {stop.probes_503} x 503, "
            f"{stop.probes_refused} refused, {stop.probes_200} x 200"
        )
    assert all(s.exit_code in (0, -signal.SIGTERM) for s in stops), stops
    assert max(s.exit_s for s in stops) < EXIT_LIMIT_S, stops
    assert all(s.held_status == 204 for s in stops), stops
    assert all(s.probes_200 == 0 and s.probes_503 + s.probes_refused > 0 for s in stops), stops
    assert strata.log_path.read_text().count("stop signal received") == rounds
    served = check_remote(f"{strata.url}/api/v1/read", load.history)
    assert_nothing_lost(served, f"SIGTERM x{rounds}, remote read after restart")


def uploads_after_stop_signal(log_text: str) -> int:
    """Blocks the last stopped process uploaded after its stop signal."""
    after = log_text.rpartition("stop signal received")[2].partition("==== start")[0]
    return after.count("uploaded block")


def build_backlog(strata: StrataServer, proxy: FaultyS3Proxy) -> None:
    """Queue blocks while the bucket is down, then let a slow bucket take them: returns
    once the first is uploaded, so an upload round over the whole backlog is under way."""
    proxy.outage = True
    wait_for(
        strata,
        f"{BACKLOG_BLOCKS} blocks queued while the bucket is down",
        lambda m: metric(m, "strata_upload_queue_blocks") >= BACKLOG_BLOCKS,
        ACK_TIMEOUT_S * 3,
    )
    before = metric(parse_metrics_text(strata.metrics()), "strata_blocks_uploaded_total")
    proxy.faults = SLOW_BUCKET
    proxy.outage = False
    wait_for(
        strata,
        "an upload round under way",
        lambda m: metric(m, "strata_blocks_uploaded_total") > before,
        ACK_TIMEOUT_S * 3,
    )


@pytest.mark.e2e
def test_sigterm_does_not_wait_for_the_upload_backlog(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    with FaultyS3Proxy(seaweedfs.endpoint) as proxy:
        bucket_url = (
            f"s3://{seaweedfs.bucket}/sigterm-{tmp_path.name}"
            f"?endpoint={proxy.endpoint}&region={REGION}&path_style=true"
        )
        args = ("--bucket-url", bucket_url, "--cut-interval-s", "1", "--cut-grace-ms", "0")
        strata = StrataServer(
            tmp_path / "strata-data",
            tmp_path / "strata.log",
            (*args, "--upload-backoff-max-s", "1"),
        )
        attach_log(request.node, "strata", strata.log_path)
        load = AckLoad(LoadConfig(url=strata.write_url, workers=2, shapes=FEW_BLOCK_SHAPES))
        try:
            strata.start()
            load.start()
            try:
                wait_for_new_ack(load.history, ACK_TIMEOUT_S)
                build_backlog(strata, proxy)
                signalled_at = time.monotonic()
                os.kill(strata.pid, signal.SIGTERM)
                exited_at, _ = probe_until_exit(strata, signalled_at)
                exit_code = strata.terminate()
                proxy.faults = NO_FAULTS
                strata.start()
                backlog = metric(parse_metrics_text(strata.metrics()), "strata_upload_queue_blocks")
                wait_for_new_ack(load.history, ACK_TIMEOUT_S)
            finally:
                stopped = load.stop(STOP_LOAD_TIMEOUT_S)
            assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
            exit_s = exited_at - signalled_at
            log_text = strata.log_path.read_text()
            uploads = uploads_after_stop_signal(log_text.rpartition("==== start")[0])
            print(
                f"SIGTERM with a slow bucket: exit {exit_code} after {exit_s:.2f} s, "
                f"{uploads} blocks uploaded after the signal, {backlog:.0f} left queued for "
                "the next start"
            )
            assert exit_code in (0, -signal.SIGTERM)
            assert exit_s < EXIT_LIMIT_S
            assert uploads <= MAX_UPLOADS_AFTER_SIGNAL
            assert backlog >= 1, "the backlog should be left for the next start"
            wait_for(
                strata,
                "the backlog uploaded by the next start",
                lambda m: metric(m, "strata_upload_queue_blocks") == 0,
                ACK_TIMEOUT_S * 3,
            )
            served = check_remote(f"{strata.url}/api/v1/read", load.history)
            assert_nothing_lost(served, "SIGTERM with a backlog, after restart")
        finally:
            strata.stop()
