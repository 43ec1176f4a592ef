"""Remote-write load that records every request and its fate, and a checker for the history.

Workers send synthetic WriteRequests (awkward float64 bit patterns, negative and recent
timestamps, several tenants) over their own HTTP connections. Every attempt is recorded as
acknowledged (2xx), rejected (4xx) or unknown (5xx, 429, timeout, connection error),
together with exactly the samples its request carried. An unknown request is retried
with the same body, as Prometheus does. `check_history` then compares what the server
holds (read back through remote read with `check_remote`, or from a stopped server's
data directory) against the history: every acknowledged sample, bit for bit; nothing
that was never sent; no duplicates. A request that is not acknowledged may be present or
absent, but in each series all of its samples or none. Docs: docs/durability.md.
"""

from __future__ import annotations

import enum
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import numpy.typing as npt
import pytest
import snappy

from proto import remote_pb2
from tests.e2e.samples import (
    EQ,
    NRE,
    RE,
    STALE_NAN_BITS,
    LabelSet,
    Matcher,
    RemoteReadFailed,
    Stored,
    bits_float,
    float_bits,
    read_remote,
)

DEFAULT_TENANT = "default"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_MASK64 = (1 << 64) - 1
LONG_ENV = "STRATA_FAULT_LONG"
READ_TIMEOUT_S = 120.0

# Bit patterns a float64 store is most likely to get wrong; the rest of the values are
# arbitrary 64-bit patterns, which include NaNs with random payloads.
AWKWARD_BITS = (
    STALE_NAN_BITS,
    0x7FF8000000000000,  # the usual quiet NaN
    0x7FF8000000000001,  # Go's math.NaN()
    0xFFF8000000000000,  # negative quiet NaN
    0x7FF8DEAD0000BEEF,  # quiet NaN with a payload
    0x7FF4000000000001,  # signalling NaN: quieting it on the way would change bit 51
    0x7FF0000000000001,  # smallest signalling NaN
    0x7FF0000000000000,  # +Inf
    0xFFF0000000000000,  # -Inf
    0x8000000000000000,  # -0.0
    0x0000000000000000,  # +0.0
    0x0000000000000001,  # smallest subnormal
    0x800FFFFFFFFFFFFF,  # largest negative subnormal
    0x0010000000000000,  # smallest normal
    0x7FEFFFFFFFFFFFFF,  # largest finite
    float_bits(0.1),
    float_bits(-1.0),
    float_bits(2.0**53 + 2),
)

# Timestamp shapes, one per series of a worker: (name, first timestamp, step in ms). Each
# leaves room for far more samples than a minute of load sends (~25,000 a series) before
# it would pass Strata's limit of 10 minutes ahead of the clock.
_HOUR_MS = 3_600_000
ALL_SHAPES = ("recent", "near_future", "epoch", "negative", "sparse", "hourly")
# Shapes whose old samples fall into a handful of 2-hour windows: "sparse" and "hourly"
# cross a window every few requests, and every window crossed becomes a block of its own.
# Tests that upload through a slow bucket, or run for minutes, use these.
FEW_BLOCK_SHAPES = ("recent", "near_future", "epoch", "negative")


def series_shapes(now_ms: int) -> tuple[tuple[str, int, int], ...]:
    """(shape name, first timestamp, step) of each series a worker writes, as ALL_SHAPES."""
    return (
        ("recent", now_ms - _HOUR_MS, 1),
        ("near_future", now_ms + 60_000, 1),
        ("epoch", 0, 1),
        ("negative", -(1 << 41), 7),  # about 1900
        ("sparse", now_ms - 30 * 24 * _HOUR_MS, 15_000),
        ("hourly", 315_532_800_000, _HOUR_MS),  # from 1980
    )


def long_form() -> bool:
    """Whether the fault tests run their long form (STRATA_FAULT_LONG=1, by hand)."""
    return os.environ.get(LONG_ENV, "") not in ("", "0")


class Outcome(enum.Enum):
    """What the client learnt from one attempt."""

    ACKNOWLEDGED = "acknowledged"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


SeriesId = tuple[str, LabelSet]
"""(tenant as stored, labels)."""


@dataclass(frozen=True, slots=True)
class SeriesSamples:
    """The samples of one series in one request."""

    series: SeriesId
    timestamps: npt.NDArray[np.int64]
    bits: npt.NDArray[np.uint64]


@dataclass(frozen=True, slots=True)
class Request:
    """One logical request: its body is sent once, and again on each retry."""

    request_id: int
    worker: int
    tenant_header: str | None
    samples: tuple[SeriesSamples, ...]
    body: bytes = field(repr=False)

    @property
    def sample_count(self) -> int:
        """Samples it carries."""
        return sum(len(s.timestamps) for s in self.samples)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One send of a request and its result."""

    request_id: int
    attempt: int
    outcome: Outcome
    status: int | None
    detail: str
    start_s: float
    end_s: float


class History:
    """Every request and every attempt, appended from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: dict[int, Request] = {}
        self.attempts: list[Attempt] = []

    def add_request(self, request: Request) -> None:
        """Record a request before its first send."""
        with self._lock:
            self.requests[request.request_id] = request

    def add_attempt(self, attempt: Attempt) -> None:
        """Record the result of one send."""
        with self._lock:
            self.attempts.append(attempt)

    def outcomes(self) -> dict[int, set[Outcome]]:
        """request id -> the outcomes of all its attempts."""
        with self._lock:
            out: dict[int, set[Outcome]] = defaultdict(set)
            for a in self.attempts:
                out[a.request_id].add(a.outcome)
            return out

    def count(self, outcome: Outcome) -> int:
        """Attempts with this outcome."""
        with self._lock:
            return sum(1 for a in self.attempts if a.outcome is outcome)

    def attempts_between(self, start_s: float, end_s: float) -> list[Attempt]:
        """Attempts sent at or after `start_s` and answered by `end_s` (monotonic clock)."""
        with self._lock:
            return [a for a in self.attempts if a.start_s >= start_s and a.end_s <= end_s]


def wait_for_new_ack(history: History, timeout_s: float) -> None:
    """Until one more request is acknowledged than now; fails the test after `timeout_s`."""
    before = history.count(Outcome.ACKNOWLEDGED)
    deadline = time.monotonic() + timeout_s
    while history.count(Outcome.ACKNOWLEDGED) <= before:
        if time.monotonic() > deadline:
            pytest.fail(f"no request acknowledged within {timeout_s:.0f} s")
        time.sleep(0.01)


def _mix64(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def value_bits(series_number: int, ts: int) -> int:
    """The value of a series at a timestamp: fixed, so a retry carries the same bits."""
    h = _mix64((series_number << 48) ^ (ts & _MASK64))
    if h % 3 == 0:
        return _mix64(h)
    return AWKWARD_BITS[(h >> 8) % len(AWKWARD_BITS)]


@dataclass
class _SeriesPlan:
    number: int
    series: SeriesId
    labels: LabelSet
    next_ts: int
    step: int


def encode_request(samples: Sequence[SeriesSamples], labels: Mapping[SeriesId, LabelSet]) -> bytes:
    """A remote-write 1.0 body (snappy block format of a WriteRequest)."""
    write = remote_pb2.WriteRequest()
    for s in samples:
        ts = write.timeseries.add()
        for name, value in labels[s.series]:
            ts.labels.add(name=name, value=value)
        for t, b in zip(s.timestamps.tolist(), s.bits.tolist(), strict=True):
            ts.samples.add(timestamp=t, value=bits_float(b))
    compressed: bytes = snappy.compress(write.SerializeToString())
    return compressed


class Worker:
    """Makes the requests of one worker: its own series, each a strictly rising timeline."""

    def __init__(
        self,
        worker: int,
        tenant_header: str | None,
        now_ms: int,
        samples_per_series: int,
        shapes: tuple[str, ...] = ALL_SHAPES,
    ) -> None:
        self.worker = worker
        self.tenant_header = tenant_header
        self.samples_per_series = samples_per_series
        tenant = tenant_header or DEFAULT_TENANT
        self.plans: list[_SeriesPlan] = []
        for k, (shape, first_ts, step) in enumerate(series_shapes(now_ms)):
            if shape not in shapes:
                continue
            labels = (
                ("__name__", "ackload_value"),
                ("k", str(k)),
                ("shape", shape),
                ("worker", str(worker)),
            )
            number = worker * 64 + k
            self.plans.append(_SeriesPlan(number, (tenant, labels), labels, first_ts, step))
        self.labels = {p.series: p.labels for p in self.plans}

    def next_request(self, request_id: int) -> Request:
        """A request with the next samples of every series of this worker."""
        parts = []
        n = self.samples_per_series
        for plan in self.plans:
            ts = plan.next_ts + plan.step * np.arange(n, dtype=np.int64)
            plan.next_ts += plan.step * n
            bits = np.array([value_bits(plan.number, t) for t in ts.tolist()], dtype=np.uint64)
            parts.append(SeriesSamples(plan.series, ts, bits))
        samples = tuple(parts)
        body = encode_request(samples, self.labels)
        return Request(request_id, self.worker, self.tenant_header, samples, body)


def classify(status: int) -> Outcome:
    """2xx acknowledged; 429 and 5xx unknown (retried); other 4xx rejected."""
    if 200 <= status < 300:
        return Outcome.ACKNOWLEDGED
    if status == 429 or status >= 500:
        return Outcome.UNKNOWN
    return Outcome.REJECTED


@dataclass
class LoadConfig:
    """How hard and how long the load pushes."""

    url: str
    workers: int = 4
    samples_per_series: int = 5
    request_timeout_s: float = 5.0
    max_attempts: int = 200
    no_retry_workers: int = 1
    """The last workers send each request once, so some requests stay unknown for good."""
    retry_backoff_s: tuple[float, float] = (0.02, 0.5)
    shapes: tuple[str, ...] = ALL_SHAPES
    rate_samples_per_s: float = 0.0
    """Samples a second across all workers (new requests only, retries not paced); 0: as
    fast as the server answers."""


class AckLoad:
    """Worker threads sending requests until stopped; everything goes into `history`."""

    def __init__(self, config: LoadConfig) -> None:
        self.config = config
        self.history = History()
        self._stop = threading.Event()
        self._give_up_at = float("inf")  # retries end here once stopping
        self._ids = iter(range(1, 1 << 62))
        self._ids_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []
        now_ms = int(time.time() * 1000)
        self.workers = [
            Worker(
                w,
                None if w % 2 == 0 else f"tenant-{w}",
                now_ms,
                config.samples_per_series,
                config.shapes,
            )
            for w in range(config.workers)
        ]

    def start(self) -> None:
        """Start the worker threads."""
        for worker in self.workers:
            thread = threading.Thread(
                target=self._run, args=(worker,), name=f"ackload-{worker.worker}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout_s: float) -> bool:
        """Ask the workers to finish their current request; True if all did in time.

        Unknown requests are still retried for half the time, so that most end known.
        """
        deadline = time.monotonic() + timeout_s
        self._give_up_at = time.monotonic() + timeout_s / 2
        self._stop.set()
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)

    def next_id(self) -> int:
        """A request id no other request of this load has."""
        with self._ids_lock:
            return next(self._ids)

    def _run(self, worker: Worker) -> None:
        try:
            with httpx.Client(
                timeout=self.config.request_timeout_s,
                limits=httpx.Limits(max_connections=1),
            ) as client:
                next_send = time.monotonic()
                while not self._stop.is_set():
                    request = worker.next_request(self.next_id())
                    self.history.add_request(request)
                    self._send_until_known(client, request, self._retries(worker))
                    next_send = self._pace(next_send, request.sample_count)
        except BaseException as exc:  # a bug in the generator must fail the test, not hide
            self.errors.append(exc)

    def _pace(self, last_send: float, samples: int) -> float:
        """Sleep until this worker's share of the rate allows the next request."""
        rate = self.config.rate_samples_per_s
        if rate <= 0:
            return last_send
        # After an outage, catch up for at most a second instead of bursting.
        next_send = max(last_send + samples * self.config.workers / rate, time.monotonic() - 1)
        self._stop.wait(max(0.0, next_send - time.monotonic()))
        return next_send

    def _retries(self, worker: Worker) -> bool:
        return worker.worker < self.config.workers - self.config.no_retry_workers

    def _send_until_known(self, client: httpx.Client, request: Request, retry: bool) -> None:
        """Send; on an unknown outcome send the same body again, with backoff, a bounded
        number of times (also after stop: the request should end known if it can)."""
        headers = dict(HEADERS)
        if request.tenant_header is not None:
            headers["X-Scope-OrgID"] = request.tenant_header
        backoff, max_backoff = self.config.retry_backoff_s
        for attempt in range(self.config.max_attempts):
            outcome = self._send_once(client, request, attempt, headers)
            if outcome is not Outcome.UNKNOWN:
                return
            time.sleep(backoff)  # also without retries: no busy loop while the server is down
            if not retry or time.monotonic() > self._give_up_at:
                return
            backoff = min(backoff * 2, max_backoff)

    def _send_once(
        self, client: httpx.Client, request: Request, attempt: int, headers: dict[str, str]
    ) -> Outcome:
        start = time.monotonic()
        status: int | None = None
        try:
            answer = client.post(self.config.url, content=request.body, headers=headers)
        except httpx.TransportError as exc:
            outcome, detail = Outcome.UNKNOWN, repr(exc)
        else:
            status = answer.status_code
            outcome = classify(status)
            detail = answer.text.strip().splitlines()[0] if answer.text.strip() else ""
        end = time.monotonic()
        self.history.add_attempt(
            Attempt(request.request_id, attempt, outcome, status, detail, start, end)
        )
        return outcome


@dataclass
class CheckResult:
    """What the stored data says about the history; `problems` empty means it holds."""

    problems: list[str] = field(default_factory=list)
    requests: dict[Outcome, int] = field(default_factory=dict)
    unknown_answers: int = 0
    acknowledged_samples: int = 0
    unknown_samples: int = 0
    unknown_samples_stored: int = 0
    stored_samples: int = 0
    verified_samples: int = 0
    series: int = 0
    lost_samples: int = 0
    invented_samples: int = 0
    duplicated_samples: int = 0
    changed_samples: int = 0
    half_present: int = 0
    """(request, series) pairs not acknowledged with some but not all samples stored."""

    def figures(self) -> str:
        """The checker's figures on one line, for test output and assertion messages."""
        r = self.requests
        return (
            f"requests acknowledged {r.get(Outcome.ACKNOWLEDGED, 0)}, "
            f"rejected {r.get(Outcome.REJECTED, 0)}, unknown {r.get(Outcome.UNKNOWN, 0)} "
            f"({self.unknown_answers} unknown answers); samples verified "
            f"{self.verified_samples} bit-exact in {self.series} series "
            f"({self.acknowledged_samples} acknowledged, {self.unknown_samples_stored} of "
            f"{self.unknown_samples} unknown present); lost {self.lost_samples}, "
            f"invented {self.invented_samples}, duplicated {self.duplicated_samples}, "
            f"changed {self.changed_samples}, half-present {self.half_present}"
        )


def assert_nothing_lost(result: CheckResult, label: str) -> None:
    """Print the figures (shown with -rP or -s) and fail with them on any problem."""
    line = f"{label}: {result.figures()}"
    print(line)
    assert result.problems == [], line + "\n" + "\n".join(result.problems)
    assert result.acknowledged_samples > 0, f"nothing was acknowledged; {line}"


def _fates(history: History) -> dict[int, Outcome]:
    """Per request: acknowledged if any attempt was, else rejected if any was, else unknown."""
    fates = {}
    for request_id, outcomes in history.outcomes().items():
        if Outcome.ACKNOWLEDGED in outcomes:
            fates[request_id] = Outcome.ACKNOWLEDGED
        elif Outcome.REJECTED in outcomes:
            fates[request_id] = Outcome.REJECTED
        else:
            fates[request_id] = Outcome.UNKNOWN
    return fates


@dataclass
class _SeriesHistory:
    ts: list[npt.NDArray[np.int64]] = field(default_factory=list)
    bits: list[npt.NDArray[np.uint64]] = field(default_factory=list)
    acked: list[npt.NDArray[np.bool_]] = field(default_factory=list)
    request: list[npt.NDArray[np.int64]] = field(default_factory=list)


def _by_series(history: History, fates: Mapping[int, Outcome]) -> dict[SeriesId, _SeriesHistory]:
    out: dict[SeriesId, _SeriesHistory] = defaultdict(_SeriesHistory)
    for request in history.requests.values():
        fate = fates.get(request.request_id, Outcome.UNKNOWN)
        for s in request.samples:
            h = out[s.series]
            h.ts.append(s.timestamps)
            h.bits.append(s.bits)
            h.acked.append(np.full(len(s.timestamps), fate is Outcome.ACKNOWLEDGED))
            h.request.append(np.full(len(s.timestamps), request.request_id, dtype=np.int64))
    return out


def _sorted_arrays(
    h: _SeriesHistory,
) -> tuple[
    npt.NDArray[np.int64], npt.NDArray[np.uint64], npt.NDArray[np.bool_], npt.NDArray[np.int64]
]:
    """The series' sent samples as parallel arrays, by timestamp."""
    ts = np.concatenate(h.ts)
    order = np.argsort(ts, kind="stable")
    return (
        ts[order],
        np.concatenate(h.bits)[order],
        np.concatenate(h.acked)[order],
        np.concatenate(h.request)[order],
    )


def check_history(history: History, stored: Mapping[str, Stored], limit: int = 20) -> CheckResult:
    """Compare the server's data (tenant -> series) with everything the load sent."""
    result = CheckResult()
    fates = _fates(history)
    for outcome in Outcome:
        result.requests[outcome] = sum(1 for f in fates.values() if f is outcome)
    result.unknown_answers = history.count(Outcome.UNKNOWN)
    sent = _by_series(history, fates)
    for tenant, series in stored.items():
        for labels, (got_ts, _) in series.items():
            result.series += 1
            if (tenant, labels) not in sent:
                result.invented_samples += len(got_ts)
                result.stored_samples += len(got_ts)
                result.problems.append(f"series never sent is stored: {(tenant, labels)}")
    for series_id, h in sent.items():
        ts, bits, acked, request_ids = _sorted_arrays(h)
        if np.any(np.diff(ts) == 0):
            result.problems.append(f"generator bug: {series_id} sent a timestamp twice")
            continue
        tenant, labels = series_id
        empty = (np.empty(0, np.int64), np.empty(0, np.uint64))
        got_ts, got_bits = stored.get(tenant, {}).get(labels, empty)
        result.acknowledged_samples += int(acked.sum())
        result.unknown_samples += int((~acked).sum())
        result.stored_samples += len(got_ts)
        _check_series(series_id, ts, bits, acked, got_ts, got_bits, result)
        present = np.isin(ts, got_ts)
        result.unknown_samples_stored += int((present & ~acked).sum())
        _check_whole_requests(series_id, request_ids[~acked], present[~acked], result)
    del result.problems[limit:]
    return result


def _check_series(
    series_id: SeriesId,
    ts: npt.NDArray[np.int64],
    bits: npt.NDArray[np.uint64],
    acked: npt.NDArray[np.bool_],
    got_ts: npt.NDArray[np.int64],
    got_bits: npt.NDArray[np.uint64],
    result: CheckResult,
) -> None:
    """One series: no duplicates, nothing unsent, no changed value, no lost acknowledgement."""
    problems = result.problems
    repeats = np.diff(got_ts) <= 0
    if np.any(repeats):
        result.duplicated_samples += int(repeats.sum())
        problems.append(
            f"{series_id}: stored timestamps not strictly ascending near "
            f"{got_ts[1:][repeats][:5].tolist()}"
        )
    where = np.clip(np.searchsorted(ts, got_ts), 0, max(len(ts) - 1, 0))
    known = (ts[where] == got_ts) if len(ts) else np.zeros(len(got_ts), bool)
    if not np.all(known):
        result.invented_samples += int((~known).sum())
        problems.append(f"{series_id}: stored but never sent at {got_ts[~known][:5].tolist()}")
    differ = known & (bits[where] != got_bits)
    result.verified_samples += int((known & ~differ).sum())
    if np.any(differ):
        result.changed_samples += int(differ.sum())
        i = int(np.flatnonzero(differ)[0])
        problems.append(
            f"{series_id}: {int(differ.sum())} values changed; first at ts {int(got_ts[i])}: "
            f"sent {int(bits[where[i]]):#018x}, stored {int(got_bits[i]):#018x}"
        )
    lost = acked & ~np.isin(ts, got_ts)
    if np.any(lost):
        result.lost_samples += int(lost.sum())
        problems.append(
            f"{series_id}: {int(lost.sum())} acknowledged samples missing, "
            f"first timestamps {ts[lost][:5].tolist()}"
        )


def _check_whole_requests(
    series_id: SeriesId,
    request_ids: npt.NDArray[np.int64],
    present: npt.NDArray[np.bool_],
    result: CheckResult,
) -> None:
    """Each request not acknowledged is in the series with all its samples or none."""
    if not len(request_ids):
        return
    ids, inverse = np.unique(request_ids, return_inverse=True)
    stored_n = np.bincount(inverse, weights=present, minlength=len(ids))
    sent_n = np.bincount(inverse, minlength=len(ids))
    half = (stored_n > 0) & (stored_n < sent_n)
    if np.any(half):
        result.half_present += int(half.sum())
        i = int(np.flatnonzero(half)[0])
        result.problems.append(
            f"{series_id}: {int(half.sum())} unacknowledged requests half stored; request "
            f"{int(ids[i])} has {int(stored_n[i])} of its {int(sent_n[i])} samples"
        )


def read_back(
    read_url: str, history: History, *, attempts: int = 1, retry_s: float = 1.0
) -> dict[str, Stored]:
    """Everything the server serves of the tenants the load wrote, through remote read.

    Per tenant one read per worker (bounded answers), and one for every series no worker
    of the load owns (which must be none). A read that fails is tried again, up to
    `attempts` times; a test that expects failures (a flaky bucket) asks for more.
    """
    workers: dict[str | None, set[int]] = defaultdict(set)
    for request in history.requests.values():
        workers[request.tenant_header].add(request.worker)
    stored: dict[str, Stored] = {}
    with httpx.Client(timeout=READ_TIMEOUT_S) as client:
        for tenant_header, numbers in sorted(workers.items(), key=lambda kv: kv[0] or ""):
            owned = "|".join(str(w) for w in sorted(numbers))
            reads: list[list[Matcher]] = [[(EQ, "worker", str(w))] for w in sorted(numbers)]
            reads.append([(RE, "__name__", ".+"), (NRE, "worker", owned)])
            tenant = stored.setdefault(tenant_header or DEFAULT_TENANT, {})
            for matchers in reads:
                tenant.update(
                    _read_with_retries(client, read_url, tenant_header, matchers, attempts, retry_s)
                )
    return stored


def _read_with_retries(
    client: httpx.Client,
    read_url: str,
    tenant_header: str | None,
    matchers: list[Matcher],
    attempts: int,
    retry_s: float,
) -> Stored:
    for attempt in range(attempts):
        try:
            return read_remote(client, read_url, tenant_header, [matchers])
        except RemoteReadFailed:
            if attempt + 1 == attempts:
                raise
            time.sleep(retry_s)
    raise AssertionError("unreachable: attempts must be positive")


def check_remote(read_url: str, history: History, *, attempts: int = 1) -> CheckResult:
    """`check_history` against what the server at `read_url` answers through remote read."""
    return check_history(history, read_back(read_url, history, attempts=attempts))
