"""The fault tests' checker finds what it must: through remote read, and half-stored requests.

If `check_remote` read back less than the server holds, or `check_history` let a request
that was never acknowledged be half stored, every fault test would pass vacuously.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest

from tests.e2e.ackload import (
    HEADERS,
    Attempt,
    History,
    Outcome,
    Request,
    Worker,
    check_history,
    check_remote,
)
from tests.e2e.samples import Stored
from tests.e2e.servers import StrataServer

NOW_MS = 1_795_586_000_000


def record(history: History, request: Request, outcome: Outcome) -> None:
    """Note a request and the answer it got."""
    history.add_request(request)
    history.add_attempt(Attempt(request.request_id, 0, outcome, None, "", 0.0, 0.0))


def stored_of(*requests: Request) -> dict[str, Stored]:
    """What a server that stored exactly these requests (of different series) holds."""
    out: dict[str, Stored] = {}
    for request in requests:
        for s in request.samples:
            tenant, labels = s.series
            out.setdefault(tenant, {})[labels] = (s.timestamps, s.bits)
    return out


def test_checker_reports_an_unacknowledged_request_half_stored_in_a_series() -> None:
    worker = Worker(0, None, NOW_MS, samples_per_series=4)
    history = History()
    unknown = worker.next_request(1)
    record(history, unknown, Outcome.UNKNOWN)
    whole = stored_of(unknown)
    assert check_history(history, whole).problems == []
    half = stored_of(unknown)
    tenant, labels = unknown.samples[0].series
    ts, bits = half[tenant][labels]
    half[tenant][labels] = (ts[:2], bits[:2])
    result = check_history(history, half)
    assert result.half_present == 1
    assert any("half stored" in p for p in result.problems), result.problems
    assert "half-present 1" in result.figures()


def test_figures_count_lost_changed_and_invented_samples() -> None:
    worker = Worker(0, None, NOW_MS, samples_per_series=3)
    history = History()
    acked = worker.next_request(1)
    record(history, acked, Outcome.ACKNOWLEDGED)
    stored = stored_of(acked)
    tenant, labels = acked.samples[0].series
    ts, bits = stored[tenant][labels]
    # one sample lost, one changed, one invented
    stored[tenant][labels] = (
        np.array([ts[1], ts[2], ts[2] + 1]),
        np.array([bits[1], bits[2] ^ np.uint64(1), 0], dtype=np.uint64),
    )
    result = check_history(history, stored)
    assert (result.lost_samples, result.changed_samples, result.invented_samples) == (1, 1, 1)
    assert "lost 1, invented 1, duplicated 0, changed 1" in result.figures()


def post(client: httpx.Client, strata: StrataServer, request: Request) -> None:
    headers = dict(HEADERS)
    if request.tenant_header is not None:
        headers["X-Scope-OrgID"] = request.tenant_header
    answer = client.post(strata.write_url, content=request.body, headers=headers)
    assert answer.status_code == 204, answer.text


@pytest.mark.e2e
def test_remote_read_check_finds_missing_and_unsent_samples(strata: StrataServer) -> None:
    now_ms = int(time.time() * 1000)
    ours = Worker(0, None, now_ms, samples_per_series=5)
    other_tenant = Worker(1, "tenant-1", now_ms, samples_per_series=5)
    stranger = Worker(5, None, now_ms, samples_per_series=5)  # a worker the history lacks
    history = History()
    read_url = f"{strata.url}/api/v1/read"
    with httpx.Client(timeout=10.0) as client:
        for request_id in range(1, 4):
            for worker in (ours, other_tenant):
                request = worker.next_request(request_id * 10 + worker.worker)
                post(client, strata, request)
                record(history, request, Outcome.ACKNOWLEDGED)
        exact = check_remote(read_url, history)
        assert exact.problems == []
        assert exact.verified_samples == exact.acknowledged_samples == 6 * 6 * 5

        never_sent = ours.next_request(100)
        record(history, never_sent, Outcome.ACKNOWLEDGED)
        lost = check_remote(read_url, history)
        assert lost.lost_samples == never_sent.sample_count

        post(client, strata, ours.next_request(101))  # stored, not in the history
        post(client, strata, stranger.next_request(102))
        invented = check_remote(read_url, history)
        assert invented.invented_samples == 2 * 6 * 5, invented.figures()
        assert any("series never sent" in p for p in invented.problems), invented.problems
