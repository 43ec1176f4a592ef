"""SIGKILL at random moments under load loses no acknowledged sample and invents none.

Issue "Durable remote-write ingest": a 2xx means every sample of the request is fsynced
to the WAL. Concurrent clients write awkward values while `strata serve` is killed with
SIGKILL again and again and restarted on the same data directory; afterwards the data
directory must hold every acknowledged sample bit for bit, nothing that was never sent,
and no sample twice. Requests whose answer was lost may be present or absent.
"""

from __future__ import annotations

import random
import time

import pytest

from tests.e2e.ackload import AckLoad, History, LoadConfig, Outcome, check_history
from tests.e2e.samples import read_stored
from tests.e2e.servers import StrataServer

SEED = 20261125
KILLS = 15
# Each kill comes this long after the first acknowledgement since the last restart.
KILL_DELAY_S = (0.05, 1.0)
FIRST_ACK_TIMEOUT_S = 10.0
BUDGET_S = 60.0  # load, kills and restarts together
STOP_LOAD_TIMEOUT_S = 30.0


def wait_for_new_ack(history: History, acks_before: int, timeout_s: float) -> None:
    """Until one more request is acknowledged than before (bounded)."""
    deadline = time.monotonic() + timeout_s
    while history.count(Outcome.ACKNOWLEDGED) <= acks_before:
        if time.monotonic() > deadline:
            pytest.fail(f"no request acknowledged within {timeout_s:.0f} s of a restart")
        time.sleep(0.01)


def kill_repeatedly(strata: StrataServer, load: AckLoad, rng: random.Random) -> None:
    """KILLS times: let load be acknowledged, SIGKILL at a random moment, restart, wait ready."""
    deadline = time.monotonic() + BUDGET_S
    for kill in range(KILLS):
        wait_for_new_ack(
            load.history, load.history.count(Outcome.ACKNOWLEDGED), FIRST_ACK_TIMEOUT_S
        )
        time.sleep(rng.uniform(*KILL_DELAY_S))
        strata.kill9()
        strata.start()
        if time.monotonic() > deadline:
            pytest.fail(f"only {kill + 1} of {KILLS} kills within {BUDGET_S:.0f} s")
    wait_for_new_ack(load.history, load.history.count(Outcome.ACKNOWLEDGED), FIRST_ACK_TIMEOUT_S)


@pytest.mark.e2e
def test_kill9_under_load_keeps_every_acknowledged_sample(strata: StrataServer) -> None:
    rng = random.Random(SEED)
    load = AckLoad(LoadConfig(url=strata.write_url))
    load.start()
    try:
        kill_repeatedly(strata, load, rng)
    finally:
        stopped = load.stop(STOP_LOAD_TIMEOUT_S)
    assert stopped, f"load workers did not finish within {STOP_LOAD_TIMEOUT_S:.0f} s"
    assert not load.errors, load.errors
    strata.kill9()  # the last stop is a kill as well

    result = check_history(load.history, read_stored(strata.data_dir))
    rejected = [a for a in load.history.attempts if a.outcome is Outcome.REJECTED]
    unknown_attempts = load.history.count(Outcome.UNKNOWN)
    print(
        f"kill -9 x{KILLS + 1}: requests {result.requests}, "
        f"unknown answers {unknown_attempts}, "
        f"samples acknowledged {result.acknowledged_samples}, "
        f"unknown {result.unknown_samples} (stored {result.unknown_samples_stored}, "
        f"requests partially stored {result.partially_stored_requests}), "
        f"stored {result.stored_samples}; ready after restart: "
        f"{[round(s, 2) for s in strata.ready_s]} s"
    )
    assert result.problems == []
    assert rejected == [], f"valid requests were refused: {rejected[:3]}"
    assert result.acknowledged_samples > 0
    assert strata.starts == KILLS + 1
