"""The history checker of ackload finds each kind of violation (no server needed).

If the checker missed a lost or altered sample, the kill -9 test would pass vacuously.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tests.e2e.ackload import (
    AWKWARD_BITS,
    Attempt,
    History,
    Outcome,
    Request,
    Worker,
    check_history,
    value_bits,
)
from tests.e2e.samples import STALE_NAN_BITS, Stored

NOW_MS = 1_795_586_000_000


def history_of(*outcomes: Outcome) -> History:
    """Requests 1..n of one worker, request i answered with outcomes[i-1]."""
    worker = Worker(0, None, NOW_MS, samples_per_series=3)
    history = History()
    for request_id, outcome in enumerate(outcomes, start=1):
        history.add_request(worker.next_request(request_id))
        history.add_attempt(Attempt(request_id, 0, outcome, None, "", 0.0, 0.0))
    return history


def stored_from(*requests: Request) -> dict[str, Stored]:
    """What a perfect server holds after storing exactly these requests."""
    parts: dict[str, dict[tuple[tuple[str, str], ...], list[tuple[int, int]]]] = {}
    for request in requests:
        for s in request.samples:
            tenant, labels = s.series
            points = parts.setdefault(tenant, {}).setdefault(labels, [])
            points.extend(zip(s.timestamps.tolist(), s.bits.tolist(), strict=True))
    return {
        tenant: {
            labels: (
                np.array([t for t, _ in sorted(p)], dtype=np.int64),
                np.array([b for _, b in sorted(p)], dtype=np.uint64),
            )
            for labels, p in series.items()
        }
        for tenant, series in parts.items()
    }


def first_series(stored: dict[str, Stored]) -> tuple[str, tuple[tuple[str, str], ...]]:
    tenant = next(iter(stored))
    return tenant, next(iter(stored[tenant]))


def drop_first(stored: dict[str, Stored]) -> None:
    tenant, labels = first_series(stored)
    ts, bits = stored[tenant][labels]
    stored[tenant][labels] = (ts[1:], bits[1:])


def flip_a_bit(stored: dict[str, Stored]) -> None:
    tenant, labels = first_series(stored)
    ts, bits = stored[tenant][labels]
    stored[tenant][labels] = (ts, bits ^ np.uint64(1))


def duplicate_first(stored: dict[str, Stored]) -> None:
    tenant, labels = first_series(stored)
    ts, bits = stored[tenant][labels]
    stored[tenant][labels] = (np.concatenate([ts[:1], ts]), np.concatenate([bits[:1], bits]))


def invent_sample(stored: dict[str, Stored]) -> None:
    tenant, labels = first_series(stored)
    ts, bits = stored[tenant][labels]
    stored[tenant][labels] = (np.append(ts, ts[-1] + 123_456), np.append(bits, np.uint64(7)))


def invent_series(stored: dict[str, Stored]) -> None:
    stored["default"][(("__name__", "never_sent"),)] = (
        np.array([1], dtype=np.int64),
        np.array([0], dtype=np.uint64),
    )


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        (drop_first, "acknowledged samples missing"),
        (flip_a_bit, "values changed"),
        (duplicate_first, "not strictly ascending"),
        (invent_sample, "never sent"),
        (invent_series, "series never sent"),
    ],
)
def test_checker_reports_damage(damage: Callable[[dict[str, Stored]], None], problem: str) -> None:
    history = history_of(Outcome.ACKNOWLEDGED, Outcome.ACKNOWLEDGED)
    stored = stored_from(*history.requests.values())
    damage(stored)
    problems = check_history(history, stored).problems
    assert any(problem in p for p in problems), problems


def test_checker_accepts_unknown_requests_present_or_absent() -> None:
    history = history_of(Outcome.ACKNOWLEDGED, Outcome.UNKNOWN, Outcome.UNKNOWN)
    acked, unknown_kept, _unknown_lost = history.requests.values()
    result = check_history(history, stored_from(acked, unknown_kept))
    assert result.problems == []
    assert result.unknown_samples_stored == unknown_kept.sample_count
    assert result.requests[Outcome.UNKNOWN] == 2


def test_checker_counts_a_retried_request_acknowledged_once_any_attempt_is() -> None:
    history = history_of(Outcome.UNKNOWN)
    history.add_attempt(Attempt(1, 1, Outcome.ACKNOWLEDGED, 204, "", 0.0, 0.0))
    (request,) = history.requests.values()
    assert check_history(history, stored_from()).problems != []
    assert check_history(history, stored_from(request)).problems == []


def test_values_include_every_awkward_pattern_and_stay_fixed_for_retries() -> None:
    values = {value_bits(7, ts) for ts in range(-5_000, 5_000)}
    assert set(AWKWARD_BITS) <= values
    assert STALE_NAN_BITS in values
    assert value_bits(7, 123) == value_bits(7, 123)
