"""Start (created) timestamps of float samples, end to end through the real processes
(issue 8): remote write 2.0 carrying them in both placements -> `strata serve` (a flush,
a kill -9 and a restart on the way) -> blocks -> `strata compact` passes -> every event
read back exactly, by the reader API and by `strata inspect starts`.

Three series over 13 hours of old data, a sample a minute, 60 a request: one with the
per-sample `start_timestamp`, one with the older TimeSeries field 6 (a created timestamp
per request), one with none. Starts change at chosen samples; two changes fall right
after the flush, and none right after the restart, where a gateway that forgot the last
start it had kept would record one.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence

import httpx
import pytest
import snappy

from blocks.index import decode_index
from blocks.meta import INDEX_FILENAME, Resolution
from blocks.objstore.local import LocalStore
from blocks.start_store import StartPart
from compactor.levels import HOUR_MS
from querier.start_times import read_starts
from tests.compactor.bucket_data import live_blocks
from tests.compactor.test_compact_command import compact
from tests.e2e.servers import StrataServer, strata_command
from tests.gateway.test_remote_write_v2 import V2_HEADERS
from tests.gateway.test_start_timestamps import (
    ERRORS,
    GAUGE,
    REQUESTS,
    Events,
    LabelSet,
    Sample,
    model_events,
    v2_body,
)

pytestmark = pytest.mark.e2e

TENANT = "default"
STEP_MS = 60_000
PER_REQUEST = 60
SAMPLES = 13 * PER_REQUEST  # 13 hours
FLUSH_AT, KILL_AT = 300, 540  # sample indexes where the parts end
# Where the per-sample starts change: right after the flush, not after the restart.
REQUESTS_RESETS = (0, 120, FLUSH_AT, 450, 700)
# Requests whose created timestamp (field 6) is a new one: not the first after the
# flush (request 5) nor after the restart (request 9).
ERRORS_NEW_CREATED = (0, 4, 10)
MAX_PASSES = 5
INSPECT_TIMEOUT_S = 60


def day_start() -> int:
    """A 12 h boundary three days back: the data is old enough for every compaction."""
    now_ms = int(time.time() * 1000)
    return (now_ms - 3 * 24 * HOUR_MS) // (12 * HOUR_MS) * (12 * HOUR_MS)


class Load:
    """The three series' samples and the created timestamp of each ERRORS request."""

    def __init__(self, t0: int) -> None:
        self.ts = [t0 + i * STEP_MS for i in range(SAMPLES)]
        start = 0
        self.requests: list[Sample] = []
        for i, t in enumerate(self.ts):
            start = t - 500 if i in REQUESTS_RESETS else start
            self.requests.append((t, float(i), start))
        self.created: list[int] = []
        for number in range(SAMPLES // PER_REQUEST):
            fresh = number in ERRORS_NEW_CREATED
            self.created.append(
                self.ts[number * PER_REQUEST] - 2_000 if fresh else self.created[-1]
            )

    def body(self, number: int) -> bytes:
        lo, hi = number * PER_REQUEST, (number + 1) * PER_REQUEST
        plain = [(t, float(i), 0) for i, t in enumerate(self.ts[lo:hi], start=lo)]
        return v2_body(
            [
                (REQUESTS, self.requests[lo:hi], 0),
                (ERRORS, plain, self.created[number]),
                (GAUGE, plain, 0),
            ]
        )

    def expected(self) -> dict[LabelSet, Events]:
        errors = [(t, self.created[i // PER_REQUEST]) for i, t in enumerate(self.ts)]
        return {
            ERRORS: model_events(errors),
            REQUESTS: model_events([(t, s) for t, _, s in self.requests]),
        }


def send(strata: StrataServer, load: Load, numbers: Sequence[int]) -> None:
    with httpx.Client(timeout=30) as client:
        for number in numbers:
            answer = client.post(
                strata.write_url, content=snappy.compress(load.body(number)), headers=V2_HEADERS
            )
            assert answer.status_code == 204, answer.text


def flush(strata: StrataServer) -> None:
    answer = httpx.post(f"{strata.url}/api/v1/admin/flush", timeout=60)
    assert answer.status_code == 200, answer.text


def as_events(found: dict[LabelSet, StartPart]) -> dict[LabelSet, Events]:
    return {k: list(zip(ts.tolist(), s.tolist(), strict=True)) for k, (ts, s) in found.items()}


def test_start_timestamps_survive_flush_kill_and_compaction(strata: StrataServer) -> None:
    t0 = day_start()
    load = Load(t0)
    expected = load.expected()
    assert len(expected[REQUESTS]) == len(REQUESTS_RESETS)
    assert len(expected[ERRORS]) == len(ERRORS_NEW_CREATED)

    send(strata, load, range(FLUSH_AT // PER_REQUEST))
    flush(strata)
    send(strata, load, range(FLUSH_AT // PER_REQUEST, KILL_AT // PER_REQUEST))
    strata.kill9()
    strata.start()
    send(strata, load, range(KILL_AT // PER_REQUEST, SAMPLES // PER_REQUEST))
    flush(strata)

    data_dir = strata.data_dir
    for _ in range(MAX_PASSES):  # an overlap merge, the 12 h merge, its 5 m copy
        result = compact(data_dir)
        assert result.returncode == 0, result.stderr
        with LocalStore(data_dir / "bucket") as store:
            live = live_blocks(store, TENANT, unmarked=True)
        if any(m.resolution == Resolution.FIVE_MINUTES for m in live):
            break
    shape = sorted((int(m.resolution), m.mint, m.maxt, m.level) for m in live)
    assert shape == [
        (0, t0, t0 + 12 * HOUR_MS, 2),
        (0, t0 + 12 * HOUR_MS, t0 + 14 * HOUR_MS, 1),
        (300_000, t0, t0 + 12 * HOUR_MS, 2),
    ]

    with LocalStore(data_dir / "bucket") as store:
        assert as_events(read_starts(store, TENANT, [], -(2**63), 2**63 - 1)) == expected
        # The merged block and its 5 m copy each hold exactly the events of their range.
        day = {k: [e for e in v if e[0] < t0 + 12 * HOUR_MS] for k, v in expected.items()}
        for meta in live:
            if meta.mint != t0:
                continue
            index = decode_index(store.get(f"{TENANT}/{meta.block_id}/{INDEX_FILENAME}"))
            assert index.starts is not None
            held = {
                tuple(index.labels(i)): index.starts.part(i, -(2**63), 2**63 - 1)
                for i in index.starts.series_with_events().tolist()
            }
            assert as_events(held) == day, meta.resolution

    printed = subprocess.run(
        [
            *strata_command(),
            "inspect",
            "starts",
            "--tenant",
            TENANT,
            "--data-dir",
            str(data_dir),
            "--match",
            '{job="api"}',
        ],
        capture_output=True,
        text=True,
        timeout=INSPECT_TIMEOUT_S,
        check=False,
    )
    assert printed.returncode == 0, printed.stderr
    lines = printed.stdout.splitlines()
    assert lines[0] == f'# {{__name__="errors_total", job="api"}} events={len(expected[ERRORS])}'
    rows = [line.split() for line in lines if not line.startswith("#")]
    listed = [(int(r[0]), int(r[2])) for r in rows]
    assert listed == expected[ERRORS] + expected[REQUESTS]
