"""Remote-write load that records every request and its fate, and a checker for the history.

Workers send synthetic WriteRequests (awkward float64 bit patterns, negative and recent
timestamps, two tenants) over their own HTTP connections. Every attempt is recorded as
acknowledged (2xx), rejected (4xx) or unknown (5xx, 429, timeout, connection error),
together with exactly the samples its request carried. An unknown request is retried
with the same body, as Prometheus does. `check_history` then compares what a stopped
server holds against the history: every acknowledged sample, bit for bit; nothing that
was never sent; no duplicates. Unknown requests may be present or absent.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import httpx
import numpy as np
import numpy.typing as npt
import snappy

from proto import remote_pb2
from tests.e2e.samples import STALE_NAN_BITS, LabelSet, Stored, bits_float, float_bits

DEFAULT_TENANT = "default"
HEADERS = {
    "Content-Encoding": "snappy",
    "Content-Type": "application/x-protobuf",
    "X-Prometheus-Remote-Write-Version": "0.1.0",
}
_MASK64 = (1 << 64) - 1

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


def series_shapes(now_ms: int) -> tuple[tuple[str, int, int], ...]:
    """(shape name, first timestamp, step) of each series a worker writes."""
    return (
        ("recent", now_ms - _HOUR_MS, 1),
        ("near_future", now_ms + 60_000, 1),
        ("epoch", 0, 1),
        ("negative", -(1 << 41), 7),  # about 1900
        ("sparse", now_ms - 30 * 24 * _HOUR_MS, 15_000),
        ("hourly", 315_532_800_000, _HOUR_MS),  # from 1980
    )


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
        self, worker: int, tenant_header: str | None, now_ms: int, samples_per_series: int
    ) -> None:
        self.worker = worker
        self.tenant_header = tenant_header
        self.samples_per_series = samples_per_series
        tenant = tenant_header or DEFAULT_TENANT
        self.plans: list[_SeriesPlan] = []
        for k, (shape, first_ts, step) in enumerate(series_shapes(now_ms)):
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
            Worker(w, None if w % 2 == 0 else f"tenant-{w}", now_ms, config.samples_per_series)
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

    def _next_id(self) -> int:
        with self._ids_lock:
            return next(self._ids)

    def _run(self, worker: Worker) -> None:
        try:
            with httpx.Client(
                timeout=self.config.request_timeout_s,
                limits=httpx.Limits(max_connections=1),
            ) as client:
                while not self._stop.is_set():
                    request = worker.next_request(self._next_id())
                    self.history.add_request(request)
                    self._send_until_known(client, request, self._retries(worker))
        except BaseException as exc:  # a bug in the generator must fail the test, not hide
            self.errors.append(exc)

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
    acknowledged_samples: int = 0
    unknown_samples: int = 0
    unknown_samples_stored: int = 0
    stored_samples: int = 0
    requests: dict[Outcome, int] = field(default_factory=dict)
    partially_stored_requests: int = 0


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
    """Compare a stopped server's data (tenant -> series) with everything the load sent."""
    result = CheckResult()
    fates = _fates(history)
    for outcome in Outcome:
        result.requests[outcome] = sum(1 for f in fates.values() if f is outcome)
    sent = _by_series(history, fates)
    stored_ids = {(tenant, labels) for tenant, series in stored.items() for labels in series}
    for series in sorted(stored_ids - set(sent)):
        result.problems.append(f"series never sent is stored: {series}")
    # request id -> [samples stored, samples sent], for requests not acknowledged
    unknown_presence: dict[int, list[int]] = defaultdict(lambda: [0, 0])
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
        for rid, p in zip(request_ids[~acked].tolist(), present[~acked].tolist(), strict=True):
            counts = unknown_presence[rid]
            counts[0] += p
            counts[1] += 1
    result.partially_stored_requests = sum(
        1 for stored_n, sent_n in unknown_presence.values() if 0 < stored_n < sent_n
    )
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
    if np.any(np.diff(got_ts) <= 0):
        dup = got_ts[1:][np.diff(got_ts) <= 0][:5].tolist()
        problems.append(f"{series_id}: stored timestamps not strictly ascending near {dup}")
    where = np.clip(np.searchsorted(ts, got_ts), 0, max(len(ts) - 1, 0))
    known = (ts[where] == got_ts) if len(ts) else np.zeros(len(got_ts), bool)
    if not np.all(known):
        problems.append(f"{series_id}: stored but never sent at {got_ts[~known][:5].tolist()}")
    differ = known & (bits[where] != got_bits)
    if np.any(differ):
        i = int(np.flatnonzero(differ)[0])
        problems.append(
            f"{series_id}: {int(differ.sum())} values changed; first at ts {int(got_ts[i])}: "
            f"sent {int(bits[where[i]]):#018x}, stored {int(got_bits[i]):#018x}"
        )
    lost = acked & ~np.isin(ts, got_ts)
    if np.any(lost):
        problems.append(
            f"{series_id}: {int(lost.sum())} acknowledged samples missing, "
            f"first timestamps {ts[lost][:5].tolist()}"
        )
